"""City resolution, OSM conversion, netconvert builds, caching, and their bad inputs."""

from __future__ import annotations

import bz2
import json

import pytest

from conftest import OSM, copy_extract
from leed_traffic.cities import RESCO_SCENARIOS, bundled_cities, resolve_city
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.network import build_network, controllable_lights, green_states, to_osm_xml
from leed_traffic.paths import downloads_dir, networks_build_dir


def test_bundled_cities_have_extracts_and_attribution():
    assert set(bundled_cities()) == {"helsinki", "paris", "melbourne", "oslo", "luxembourg", "heidelberg", "london", "munich", "washington-dc"}
    for c in bundled_cities():
        spec = resolve_city(c)
        assert spec.source.exists(), spec.source
    from leed_traffic.paths import bundled_networks_readme

    readme = bundled_networks_readme().read_text()
    assert "© OpenStreetMap contributors" in readme and "ODbL" in readme
    assert resolve_city("heidelberg").bbox == (8.62, 49.37, 8.74, 49.43)


def test_lefthand_is_a_city_setting():
    """London drives on the left (its scenario says so); an OSM file is right-hand unless told."""
    assert resolve_city("london").lefthand and not resolve_city("helsinki").lefthand
    assert not resolve_city("london", lefthand=False).lefthand
    assert resolve_city("melbourne", lefthand=True).lefthand
    from leed_traffic.network import netconvert_options
    assert "--lefthand" in netconvert_options(resolve_city("london"))
    assert "--lefthand" not in netconvert_options(resolve_city("melbourne"))


def test_resolve_kinds(tmp_path):
    assert resolve_city("cologne8").kind == "resco"
    assert (resolve_city("cologne8").begin, resolve_city("cologne8").end) == (25200, 28800)
    assert set(RESCO_SCENARIOS) >= {"cologne1", "ingolstadt21", "grid4x4", "arterial4x4"}
    p = copy_extract("melbourne.osm.pbf", tmp_path)
    spec = resolve_city(str(p))
    assert spec.kind == "osm" and spec.name == "melbourne" and spec.source == p.resolve()
    assert resolve_city("place:Heidelberg, Germany").place == "Heidelberg, Germany"
    assert resolve_city("Heidelberg, Germany").place == "Heidelberg, Germany"


def test_cologne3_unblocked_is_cologne3_with_the_junction_blocker_timeout():
    """The labelled variant runs cologne3's own files, with the extra SUMO option in every env
    (classical and learned alike), as a scenario of its own (not a cache hit of cologne3's)."""
    from leed_traffic.env import EnvConfig, LeedTrafficEnv
    from leed_traffic.scenario import build_scenario

    spec = resolve_city("cologne3-unblocked")
    assert spec.kind == "resco" and spec.sumo_args == ("--ignore-junction-blocker", "60")
    assert resolve_city("cologne3").sumo_args == ()
    variant, plain = build_scenario(spec), build_scenario("cologne3")
    assert variant.net_file == plain.net_file and variant.route_files == plain.route_files
    assert variant.agents == plain.agents and variant.dir != plain.dir and variant.hash != plain.hash
    cmd = LeedTrafficEnv(variant, EnvConfig()).sumo_command(0)
    assert cmd[cmd.index("--ignore-junction-blocker") + 1] == "60"
    assert "--ignore-junction-blocker" not in LeedTrafficEnv(plain, EnvConfig()).sumo_command(0)


@pytest.mark.parametrize("bad, fragment", [
    ("atlantis", "Unknown city 'atlantis'"),
    ("/no/such/file.osm.pbf", "does not exist"),
    ("", "--city is empty"),
    ("place:", "needs a place name"),
])
def test_bad_city_names(bad, fragment):
    with pytest.raises(UserError, match=fragment) as exc:
        resolve_city(bad)
    if "Unknown" in fragment:
        assert "helsinki" in str(exc.value) and "cologne8" in str(exc.value)


def test_not_an_osm_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(UserError, match="not an OSM file"):
        resolve_city(str(p))


def test_melbourne_builds_with_reference_count_and_is_cached(isolated_build):
    spec = resolve_city("melbourne")
    first = build_network(spec)
    assert first.n_traffic_lights == 41  # the reference conversion's count (SUMO 1.28)
    meta = json.loads((first.net_file.parent / "network.json").read_text())
    assert "--tls.guess-signals" in meta["netconvert_options"]
    assert any("osmNetconvert.typ.xml" in o for o in meta["netconvert_options"])
    mtime = first.net_file.stat().st_mtime_ns
    again = build_network(spec)
    assert again.net_file == first.net_file and again.net_file.stat().st_mtime_ns == mtime
    # options change -> new hash, new build
    from dataclasses import replace
    clipped = build_network(replace(spec, bbox=(145.354, -37.634, 145.364, -37.626)))
    assert clipped.hash != first.hash
    # left-hand traffic: netconvert --lefthand, a network SUMO marks as such, its own cache entry
    left = build_network(replace(spec, bbox=(145.354, -37.634, 145.364, -37.626), lefthand=True))
    assert left.hash != clipped.hash
    assert 'lefthand="true"' in left.net_file.read_text()[:5000]
    assert 'lefthand="true"' not in clipped.net_file.read_text()[:5000]
    # street names are kept
    import sumolib
    net = sumolib.net.readNet(str(first.net_file))
    assert sum(1 for e in net.getEdges() if e.getName()) > 20
    assert first.net_file.is_relative_to(isolated_build)
    assert not list(networks_build_dir().glob(".*tmp*"))


def test_bz2_and_xml_inputs_build_the_same_network(isolated_build, tmp_path):
    xml = to_osm_xml(OSM / "melbourne.osm.pbf", tmp_path / "melb.osm.xml")
    bz = tmp_path / "melb.osm.bz2"
    bz.write_bytes(bz2.compress(xml.read_bytes()))
    a = build_network(resolve_city(str(xml)))
    b = build_network(resolve_city(str(bz)))
    assert a.n_traffic_lights == b.n_traffic_lights == 41


def test_extract_without_traffic_lights_is_refused(isolated_build, osm_without_signals):
    with pytest.raises(ScenarioError, match="no traffic light to control"):
        build_network(resolve_city(str(osm_without_signals)))
    assert not any(networks_build_dir().glob("crossing*"))


def test_corrupt_extract_is_refused(isolated_build, tmp_path):
    bad = tmp_path / "broken.osm.pbf"
    bad.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(UserError, match="not an OSM file"):
        resolve_city(str(bad))
    truncated = tmp_path / "truncated.osm.pbf"  # a PBF header, then the file stops
    truncated.write_bytes((OSM / "melbourne.osm.pbf").read_bytes()[:3000])
    with pytest.raises(UserError, match="valid OSM"):
        build_network(resolve_city(str(truncated)))
    bad_xml = tmp_path / "broken.osm"
    bad_xml.write_text("<osm><node id='1' lat='x'")
    with pytest.raises(UserError):
        build_network(resolve_city(str(bad_xml)))
    assert not list(networks_build_dir().glob("broken*"))
    assert not list(networks_build_dir().glob("truncated*"))


def test_bbox_without_roads_is_refused(isolated_build):
    from dataclasses import replace

    spec = replace(resolve_city("melbourne"), bbox=(10.0, 10.0, 10.01, 10.01))
    with pytest.raises(ScenarioError, match="no drivable roads"):
        build_network(spec)


def test_green_phase_extraction_handles_real_programs():
    phases = [
        "GGgrrrGGgrrr",  # green
        "yyyrrryyyrrr",  # yellow
        "rrrrrrrrrrrr",  # all red
        "GGyrrrGGyrrr",  # green mixed with yellow: a transition, not a choice
        "rrrGGgrrrGGg",
        "rrrGGgrrrGGg",  # duplicate
    ]
    assert green_states(phases) == ["GGgrrrGGgrrr", "rrrGGgrrrGGg"]
    assert green_states(["GGGG", "yyyy"]) == ["GGGG"]  # one green: not an agent


def test_osmnx_place_download_boundary(isolated_build, monkeypatch, tmp_path):
    """The real download code, with only osmnx's downloader replaced (no network)."""
    import osmnx as ox

    import osmium

    # what osmnx would download: a self-contained extract (osmnx rejects ways with missing nodes)
    src = OSM / "melbourne.osm.pbf"
    have = {n.id for n in osmium.FileProcessor(str(src), osmium.osm.NODE)}
    xml = tmp_path / "melb.osm.xml"
    with osmium.SimpleWriter(str(xml)) as w:
        for o in osmium.FileProcessor(str(src), osmium.osm.NODE | osmium.osm.WAY):
            if o.is_node() or all(n.ref in have for n in o.nodes):
                w.add(o)
    calls = []

    def fake_graph_from_place(place, **kw):
        calls.append((place, kw))
        ox.settings.all_oneway = True
        return ox.graph_from_xml(xml, simplify=False, retain_all=False)

    monkeypatch.setattr(ox, "graph_from_place", fake_graph_from_place)
    b = build_network(resolve_city("place:Melbourne, Australia"))
    assert calls and calls[0][0] == "Melbourne, Australia" and calls[0][1]["network_type"] == "drive"
    assert b.n_traffic_lights >= 20  # signals survive the osmnx round trip
    assert (downloads_dir() / "melbourne-australia.osm.xml").exists()
    assert downloads_dir().is_relative_to(isolated_build)


def test_osmnx_failure_is_a_user_error(isolated_build, monkeypatch):
    import osmnx as ox

    def offline(place, **kw):
        raise ConnectionError("no internet")

    monkeypatch.setattr(ox, "graph_from_place", offline)
    with pytest.raises(UserError, match="internet"):
        build_network(resolve_city("place:Nowhere, Atlantis"))


def test_controllable_lights_need_two_greens(melbourne):
    assert len(controllable_lights(melbourne.net_file)) == melbourne.n_agents == 41
