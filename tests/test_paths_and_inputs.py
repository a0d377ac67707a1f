"""Where things live (leed_traffic.paths), OSM input recognised by content, and an installed wheel.

Nothing may be written under the source tree or site-packages; the bundled data must travel in a
regular (non-editable) install; an OSM file is whatever its bytes say, not its name.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import OSM, REPO, TINY_OSM_NO_SIGNALS
from leed_traffic import paths
from leed_traffic.cities import bundled_cities, osm_format, resolve_city
from leed_traffic.errors import UserError

MELBOURNE_NET_HASH = "0c7e12b10e6a7c57"  # must not change: hashes enter checkpoint fingerprints


# ---------------------------------------------------------------------------- paths
def test_cache_dir_follows_the_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    import platformdirs

    assert paths.cache_dir() == Path(platformdirs.user_cache_dir("leed-traffic", appauthor=False))
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c"
    for p in (paths.networks_build_dir(), paths.scenarios_build_dir(), paths.downloads_dir(),
              paths.answer_cache_path()):
        assert p.is_relative_to(tmp_path / "c"), p
    assert paths.answer_cache_path().name == "answers.sqlite"


def test_bundled_data_is_package_data():
    assert set(bundled_cities()) == {"helsinki", "paris", "melbourne", "oslo", "luxembourg", "heidelberg", "london", "munich", "washington-dc"}
    assert (paths.bundled_scenarios_dir() / "melbourne.toml").is_file()
    assert (paths.bundled_osm_dir() / "ATTRIBUTION.txt").is_file()
    for city in bundled_cities():
        src = resolve_city(city).source
        assert src.is_file() and src.parent == paths.bundled_osm_dir()


# ---------------------------------------------------------------------------- sniffing
@pytest.fixture()
def osm_files(tmp_path) -> dict[str, Path]:
    """The same tiny OSM XML as plain, gzip and bz2 files, and a real PBF, all misnamed."""
    xml = TINY_OSM_NO_SIGNALS.encode()
    files = {
        "xml": tmp_path / "city.txt",
        "xml.gz": tmp_path / "city.dat",
        "xml.bz2": tmp_path / "city.osm.pbf",  # a name that lies outright
        "pbf": tmp_path / "melb.dat",
    }
    files["xml"].write_bytes(xml)
    files["xml.gz"].write_bytes(gzip.compress(xml))
    files["xml.bz2"].write_bytes(bz2.compress(xml))
    shutil.copy(OSM / "melbourne.osm.pbf", files["pbf"])
    return files


def test_osm_format_reads_the_content(osm_files, tmp_path):
    for fmt, path in osm_files.items():
        assert osm_format(path) == fmt, path.name
    # declaration, BOM, comment and DOCTYPE before the root are fine
    odd = tmp_path / "odd"
    odd.write_bytes(b"\xef\xbb\xbf<?xml version='1.0'?>\n<!-- from JOSM -->\n<!DOCTYPE osm>\n<osm version='0.6'/>")
    assert osm_format(odd) == "xml"
    # a bz2 whose first block is large (bz2 yields nothing before a whole block is read)
    big = tmp_path / "big"
    big.write_bytes(bz2.compress(b"<osm version='0.6'>\n" + os.urandom(300_000).hex().encode()))
    assert osm_format(big) == "xml.bz2"
    for bundled in paths.bundled_osm_dir().glob("*.osm.*"):
        assert osm_format(bundled) in ("pbf", "xml.gz"), bundled


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"),
    (b"hello, this is a text file\n", "neither OSM XML"),
    (os.urandom(2000), "not an OSM file"),
    (b"<?xml version='1.0'?><gpx version='1.1'></gpx>", "without an <osm> root"),
    (b"<!-- an unterminated comment <osm version='0.6'>", "without an <osm> root"),
    (gzip.compress(b"just some text"), "gzip-compressed but is not OSM XML"),
    (bz2.compress(b"<gpx/>"), "bz2-compressed but is not OSM XML"),
])
def test_non_osm_files_are_one_sentence_user_errors(tmp_path, content, fragment):
    p = tmp_path / "city.osm"
    p.write_bytes(content)
    for call in (osm_format, lambda q: resolve_city(str(q))):
        with pytest.raises(UserError, match=fragment) as exc:
            call(p)
        msg = str(exc.value)
        assert "give an OpenStreetMap extract" in msg and msg.count(". ") == 0 and msg.endswith(".")


def test_misnamed_inputs_build(isolated_build, osm_files, tmp_path):
    """A PBF named .dat builds the same network as the bundled file (same hash: same bytes and
    options); gzip-compressed XML named .bin builds too."""
    from leed_traffic.network import build_network, to_osm_xml

    spec = resolve_city(str(osm_files["pbf"]))
    assert spec.name == "melb" and spec.source == osm_files["pbf"].resolve()
    net = build_network(spec)
    assert (net.n_traffic_lights, net.hash) == (41, MELBOURNE_NET_HASH)
    assert net.net_file.is_relative_to(isolated_build)
    xml = to_osm_xml(OSM / "melbourne.osm.pbf", tmp_path / "plain.xml")
    assert osm_format(xml) == "xml"
    gz = tmp_path / "melbourne.bin"
    gz.write_bytes(gzip.compress(xml.read_bytes()))
    assert build_network(resolve_city(str(gz))).n_traffic_lights == 41
    assert not list(paths.networks_build_dir().glob(".*tmp*"))


# ---------------------------------------------------------------------------- scenario.json
def test_scenario_json_is_relative_and_the_cache_can_move(isolated_build, monkeypatch, tmp_path):
    from leed_traffic.scenario import Scenario, build_scenario, find_built

    spec = resolve_city("melbourne")
    spec = replace(spec, end=300, demand=replace(spec.demand, seeds=(0, 1)))
    sc = build_scenario(spec)
    assert sc.net_hash == MELBOURNE_NET_HASH and sc.dir.is_relative_to(isolated_build)
    meta = json.loads((sc.dir / "scenario.json").read_text())
    assert meta["net_file"] == f"../../networks/melbourne-{MELBOURNE_NET_HASH}/melbourne.net.xml"
    assert meta["route_files"] == ["routes_s0.rou.xml", "routes_s1.rou.xml"]
    assert meta["net_hash"] == MELBOURNE_NET_HASH
    assert find_built("melbourne", sc.hash) == sc and find_built("melbourne", "0" * 16) is None

    moved = tmp_path / "moved-cache"
    shutil.move(isolated_build, moved)
    monkeypatch.setenv(paths.CACHE_ENV, str(moved))
    again = find_built("melbourne", sc.hash)
    assert again is not None and again.dir.is_relative_to(moved) and again.is_complete()
    assert again.net_file.is_relative_to(moved) and all(r.is_relative_to(moved) for r in again.route_files)
    assert replace(again, dir=sc.dir, net_file=sc.net_file, route_files=sc.route_files) == sc
    assert build_scenario(spec).dir == again.dir  # reused, not rebuilt
    # an incomplete build is not offered
    again.route_files[0].unlink()
    assert find_built("melbourne", sc.hash) is None
    # scenario.json files older than net_hash load with net_hash ""
    meta = json.loads((again.dir / "scenario.json").read_text())
    del meta["net_hash"]
    (again.dir / "scenario.json").write_text(json.dumps(meta))
    assert Scenario.load(again.dir).net_hash == ""


# ---------------------------------------------------------------------------- installed wheel
_INSTALLED_CHECK = r"""
import json, sys
from dataclasses import replace
from pathlib import Path
import leed_traffic
from leed_traffic import paths
from leed_traffic.cities import bundled_cities, osm_format, resolve_city
from leed_traffic.scenario import build_scenario

spec = resolve_city("melbourne")
spec = replace(spec, end=300, demand=replace(spec.demand, seeds=(0,)))
sc = build_scenario(spec)
print(json.dumps({
    "file": leed_traffic.__file__, "cities": bundled_cities(), "osm_dir": str(paths.bundled_osm_dir()),
    "formats": sorted(osm_format(p) for p in paths.bundled_osm_dir().iterdir() if p.suffix in (".pbf", ".gz")),
    "pretrained": __import__("leed_traffic.learn.pretrained", fromlist=["x"]).load_file("pretrained")["meta"]["features"],
    "readme": "ODbL" in paths.bundled_networks_readme().read_text(),
    "scenario": str(sc.dir), "net": str(sc.net_file), "net_hash": sc.net_hash, "agents": sc.n_agents,
}))
"""


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_regular_install_carries_the_data_and_writes_nothing_into_it(tmp_path):
    """``pip install .`` (not editable) of a copy of the source: the package reads its bundled
    data from site-packages and builds into the cache directory only."""
    src, site, cache, elsewhere = (tmp_path / d for d in ("src", "site", "cache", "elsewhere"))
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*")
    for d in ("leed_traffic", "networks", "scenarios"):
        shutil.copytree(REPO / d, src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    # every subpackage of the source is in the wheel (pyproject.toml lists packages explicitly)
    for init in (REPO / "leed_traffic").rglob("__init__.py"):
        assert (site / init.relative_to(REPO)).is_file(), f"{init.parent.name} missing from pyproject packages"
    before = _snapshot(site)
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), paths.CACHE_ENV: str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-P", "-c", _INSTALLED_CHECK], capture_output=True, text=True,
                          cwd=elsewhere, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).is_relative_to(site), out["file"]  # not the editable checkout
    assert Path(out["osm_dir"]) == site / "leed_traffic" / "data" / "networks" / "osm"
    assert set(out["cities"]) == {"helsinki", "paris", "melbourne", "oslo", "luxembourg", "heidelberg", "london", "munich", "washington-dc"}
    assert out["formats"] == ["pbf"] * 8 + ["xml.gz"] and out["readme"]
    assert out["pretrained"] == 10, "the shipped pretrained policy is package data"
    assert out["net_hash"] == MELBOURNE_NET_HASH and out["agents"] == 41
    assert Path(out["scenario"]).is_relative_to(cache) and Path(out["net"]).is_relative_to(cache)
    assert _snapshot(site) == before, "the installed package wrote into site-packages"
    assert not any(elsewhere.iterdir()), "the build wrote into the working directory"
