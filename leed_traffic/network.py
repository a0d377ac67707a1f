"""OSM extract -> SUMO network (netconvert), cached by a hash of the input and the options.

The conversion follows the reference conversion the project's agent counts were measured with
(see README): OSM typemaps, guessed and joined signals, joined junctions, passenger roads only.
Builds go to a temporary directory that is renamed when complete, so an interrupted or failed
build never leaves a half-written network in the cache (``paths.networks_build_dir()``, in the user
cache directory: nothing is written under the source tree or the installed package).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from leed_traffic import paths
from leed_traffic.cities import GRID_OPTIONS, CitySpec, osm_format, resco_map_dir
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.fileio import atomic_dir, atomic_write, atomic_write_json, atomic_write_text
from leed_traffic.sumo_env import sumo_binary, sumo_home

log = logging.getLogger(__name__)

BUILD_VERSION = "1"  # bump to invalidate every cached network after changing the conversion code

NETCONVERT_FLAGS: tuple[str, ...] = (
    "--geometry.remove",
    "--roundabouts.guess",
    "--ramps.guess",
    "--junctions.join",
    "--tls.guess-signals",
    "--tls.discard-simple",
    "--tls.join",
    "--remove-edges.isolated",
    "--keep-edges.by-vclass", "passenger",
    "--output.street-names",
    "--tls.default-type", "static",
    "--no-warnings",
)


@dataclass(frozen=True)
class NetworkBuild:
    name: str
    net_file: Path
    hash: str
    n_traffic_lights: int


def typemaps() -> list[str]:
    base = sumo_home() / "data" / "typemap"
    return [str(base / "osmNetconvert.typ.xml"), str(base / "osmNetconvertUrbanDe.typ.xml")]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pbf_to_xml(src: Path, tmp: Path) -> None:
    import osmium

    # formats given explicitly: osmium would guess them from the names (``city.dat``, a temp name)
    with osmium.SimpleWriter(osmium.io.File(str(tmp), "osm"), overwrite=True) as writer:
        for obj in osmium.FileProcessor(osmium.io.File(str(src), "pbf")):
            writer.add(obj)


def _decompress(opener, src: Path, tmp: Path) -> None:
    with opener(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def to_osm_xml(src: Path, dst: Path) -> Path:
    """Write ``src`` as plain OSM XML to ``dst`` (netconvert reads neither PBF nor bz2).

    The format comes from the content (``osm_format``), not the name: PBF through pyosmium,
    gzip/bz2 by decompressing the XML unchanged, plain XML copied.
    """
    src, dst = Path(src), Path(dst)
    fmt = osm_format(src)
    try:
        if fmt == "pbf":
            atomic_write(dst, lambda tmp: _pbf_to_xml(src, tmp))
        elif fmt == "xml.gz":
            atomic_write(dst, lambda tmp: _decompress(gzip.open, src, tmp))
        elif fmt == "xml.bz2":
            atomic_write(dst, lambda tmp: _decompress(bz2.open, src, tmp))
        else:
            atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
    except (RuntimeError, OSError, EOFError) as exc:
        raise UserError(f"Could not read OSM file {src} ({exc}); is it a valid OSM extract?") from exc
    return dst


def download_place(place: str, dst: Path) -> Path:
    """Download the drivable streets of ``place`` through osmnx and save them as OSM XML.

    Traffic signals are node tags (``highway=traffic_signals``), kept by osmnx's default
    ``useful_tags_node``; ``all_oneway`` is required by ``save_graph_xml``.
    """
    import osmnx as ox

    ox.settings.all_oneway = True
    ox.settings.useful_tags_way = sorted(
        set(ox.settings.useful_tags_way) | {"name", "lanes", "maxspeed", "oneway", "highway", "junction"}
    )
    try:
        graph = ox.graph_from_place(place, network_type="drive", simplify=False, retain_all=False)
    except Exception as exc:  # noqa: BLE001 - osmnx raises many kinds (HTTP, geocoder, empty)
        raise UserError(
            f"Could not download {place!r} with osmnx ({type(exc).__name__}: {exc}); "
            "check the place name and your internet connection, or pass a local OSM file."
        ) from exc
    atomic_write(dst, lambda tmp: ox.io.save_graph_xml(graph, tmp))
    return dst


def osm_input(spec: CitySpec) -> Path:
    """The OSM file the city is built from, downloading it first for ``place:`` cities."""
    if spec.place is not None:
        dst = paths.downloads_dir() / f"{spec.name}.osm.xml"
        if not dst.exists():
            log.info("downloading %r with osmnx", spec.place)
            download_place(spec.place, dst)
        return dst
    if spec.source is None or not Path(spec.source).exists():
        raise UserError(f"OSM extract {spec.source} for {spec.name!r} is missing; check the path.")
    return Path(spec.source)


def network_dir(city: str, net_hash: str) -> Path:
    """The cache folder of one converted network (may not exist yet)."""
    return paths.networks_build_dir() / f"{city}-{net_hash}"


def _cached_network(city: str, digest: str, force: bool) -> tuple[Path, Path, NetworkBuild | None]:
    """The cache folder and net file for a build key, and the finished build if one is there
    (``force`` removes it first): the one cache rule of OSM and netgenerate networks."""
    final = network_dir(city, digest)
    net_file = final / f"{city}.net.xml"
    if force and final.exists():
        shutil.rmtree(final)
    if net_file.exists() and (final / "network.json").exists():
        meta = json.loads((final / "network.json").read_text())
        return final, net_file, NetworkBuild(city, net_file, digest, int(meta["n_traffic_lights"]))
    return final, net_file, None


def netconvert_options(spec: CitySpec) -> list[str]:
    opts = ["--type-files", ",".join(typemaps()), *NETCONVERT_FLAGS]
    if spec.bbox is not None:
        opts += ["--keep-edges.in-geo-boundary", ",".join(f"{v:.6f}" for v in spec.bbox)]
    if spec.lefthand:
        opts.append("--lefthand")
    return opts


def build_network(spec: CitySpec, force: bool = False) -> NetworkBuild:
    """Build (or reuse) the city's SUMO network; RESCO scenarios use sumo-rl's shipped net."""
    if spec.kind == "resco":
        folder = resco_map_dir(spec.name)
        net = folder / f"{folder.name}.net.xml"
        if not net.exists():
            raise UserError(f"RESCO scenario {spec.name} is missing from the sumo-rl package; run `make setup`.")
        return NetworkBuild(spec.name, net, _file_digest(net)[:16], count_traffic_lights(net))

    if spec.kind == "grid":
        return build_grid_network(spec, force=force)
    src = osm_input(spec)
    opts = netconvert_options(spec)
    key = hashlib.sha256()
    key.update(_file_digest(src).encode())
    key.update(json.dumps([BUILD_VERSION, [o.replace(str(sumo_home()), "$SUMO_HOME") for o in opts]]).encode())
    digest = key.hexdigest()[:16]
    final, net_file, cached = _cached_network(spec.name, digest, force)
    if cached is not None:
        return cached

    # netconvert reads plain OSM XML only; other formats are converted by content, not by name
    with atomic_dir(final, exists="keep") as tmp:
        osm = src if osm_format(src) == "xml" else to_osm_xml(src, tmp / f"{spec.name}.osm.xml")
        out = tmp / f"{spec.name}.net.xml"
        cmd = [sumo_binary("netconvert"), "--osm-files", str(osm), *opts, "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        atomic_write_text(tmp / "netconvert.log", " ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
        if "No edges loaded" in proc.stderr:
            where = f" inside the bbox {spec.bbox}" if spec.bbox else ""
            raise ScenarioError(f"{src.name} has no drivable roads{where}; choose a larger area or another bbox.")
        if proc.returncode != 0 or not out.exists():
            first = next((ln for ln in proc.stderr.splitlines() if "Error" in ln), proc.stderr.strip()[:300])
            raise UserError(f"netconvert could not build a network from {src} ({first.strip()}); is it a valid OSM extract?")
        if osm != src:
            osm.unlink()
        n_edges, n_tls = _count_edges_and_lights(out)
        if n_edges == 0:
            where = f" inside the bbox {spec.bbox}" if spec.bbox else ""
            raise ScenarioError(f"{src.name} has no drivable roads{where}; choose a larger area or another bbox.")
        if n_tls == 0:
            raise ScenarioError(
                f"{src.name} has no traffic light to control after conversion; "
                "choose an extract with signalized intersections (OSM highway=traffic_signals)."
            )
        atomic_write_json(tmp / "network.json", {
            "city": spec.name, "source": str(src), "hash": digest, "n_edges": n_edges,
            "n_traffic_lights": n_tls, "netconvert_options": opts,
        }, sort_keys=False)
    return NetworkBuild(spec.name, net_file, digest, n_tls)


def grid_options(spec: CitySpec) -> list[str]:
    cols, rows = spec.grid
    opts = [*GRID_OPTIONS, "--grid.x-number", str(cols), "--grid.y-number", str(rows), "--seed", "0"]
    return opts + ["--lefthand"] if spec.lefthand else opts


def build_grid_network(spec: CitySpec, force: bool = False) -> NetworkBuild:
    """A ``grid`` city's network: SUMO's netgenerate (``grid_options``), cached by a hash of the
    options and the SUMO version (netgenerate output may change between versions)."""
    import importlib.metadata

    opts = grid_options(spec)
    try:
        sumo_version = importlib.metadata.version("eclipse-sumo")
    except importlib.metadata.PackageNotFoundError:
        sumo_version = "unknown"
    digest = hashlib.sha256(json.dumps([BUILD_VERSION, "netgenerate", opts, sumo_version]).encode()).hexdigest()[:16]
    final, net_file, cached = _cached_network(spec.name, digest, force)
    if cached is not None:
        return cached
    with atomic_dir(final, exists="keep") as tmp:
        out = tmp / f"{spec.name}.net.xml"
        cmd = [sumo_binary("netgenerate"), *opts, "--no-warnings", "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        atomic_write_text(tmp / "netgenerate.log", " ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.exists():
            raise ScenarioError(f"netgenerate could not build {spec.name} ({proc.stderr.strip()[-300:]}).")
        n_edges, n_tls = _count_edges_and_lights(out)
        atomic_write_json(tmp / "network.json", {
            "city": spec.name, "source": "netgenerate", "hash": digest, "n_edges": n_edges,
            "n_traffic_lights": n_tls, "netgenerate_options": opts, "sumo": sumo_version,
        }, sort_keys=False)
    return NetworkBuild(spec.name, net_file, digest, n_tls)


def _count_edges_and_lights(net_file: Path) -> tuple[int, int]:
    from leed_traffic.netfile import read_net

    net = read_net(net_file)
    edges = [e for e in net.getEdges() if e.getFunction() != "internal"]
    return len(edges), len(net.getTrafficLights())


def count_traffic_lights(net_file: Path) -> int:
    return _count_edges_and_lights(net_file)[1]


def green_states(phase_states: list[str]) -> list[str]:
    """Distinct green phases of a program, in program order.

    A green phase has a G/g and no y (sumo-rl's rule: this drops yellow, all-red and mixed
    green/yellow transition phases). Duplicates are dropped so each action means something.
    """
    out: list[str] = []
    for s in phase_states:
        if "y" in s or "Y" in s:
            continue
        if s.count("r") + s.count("s") == len(s):
            continue
        if not any(c in "Gg" for c in s):
            continue
        if s not in out:
            out.append(s)
    return out


def controllable_lights(net_file: Path) -> list[str]:
    """Traffic lights that become agents: at least two distinct green phases."""
    from leed_traffic.netfile import tls_programs

    agents = [tls_id for tls_id, program in tls_programs(net_file)
              if len(green_states([p.state for p in program.getPhases()])) >= 2]
    return sorted(agents)
