"""OSM extract -> SUMO network (netconvert), cached by a hash of the input and the options.

The conversion follows the reference conversion the project's agent counts were measured with
(see README): OSM typemaps, guessed and joined signals, joined junctions, passenger roads only.
Builds go to a temporary directory that is renamed when complete, so an interrupted or failed
build never leaves a half-written network in ``networks/build/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from leed_traffic.cities import NETWORKS_DIR, CitySpec, resco_dir
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.sumo_env import sumo_binary, sumo_home

log = logging.getLogger(__name__)

BUILD_DIR = NETWORKS_DIR / "build"
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


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def _commit_dir(tmp: Path, final: Path) -> None:
    if final.exists():  # a concurrent build finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, final)


def to_osm_xml(src: Path, dst: Path) -> Path:
    """Convert a PBF/bz2 extract to plain OSM XML with pyosmium (netconvert reads neither)."""
    import osmium

    try:
        with osmium.SimpleWriter(str(dst)) as writer:
            for obj in osmium.FileProcessor(str(src)):
                writer.add(obj)
    except RuntimeError as exc:
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
    tmp = dst.with_name(dst.name + ".part")
    ox.io.save_graph_xml(graph, tmp)
    os.replace(tmp, dst)
    return dst


def osm_input(spec: CitySpec) -> Path:
    """The OSM file the city is built from, downloading it first for ``place:`` cities."""
    if spec.place is not None:
        dst = BUILD_DIR / "downloads" / f"{spec.name}.osm.xml"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %r with osmnx", spec.place)
            download_place(spec.place, dst)
        return dst
    if spec.source is None or not Path(spec.source).exists():
        raise UserError(f"OSM extract {spec.source} for {spec.name!r} is missing; check the path.")
    return Path(spec.source)


def netconvert_options(spec: CitySpec) -> list[str]:
    opts = ["--type-files", ",".join(typemaps()), *NETCONVERT_FLAGS]
    if spec.bbox is not None:
        opts += ["--keep-edges.in-geo-boundary", ",".join(f"{v:.6f}" for v in spec.bbox)]
    return opts


def build_network(spec: CitySpec, force: bool = False) -> NetworkBuild:
    """Build (or reuse) the city's SUMO network; RESCO scenarios use sumo-rl's shipped net."""
    if spec.kind == "resco":
        net = resco_dir() / spec.name / f"{spec.name}.net.xml"
        if not net.exists():
            raise UserError(f"RESCO scenario {spec.name} is missing from the sumo-rl package; run `make setup`.")
        return NetworkBuild(spec.name, net, _file_digest(net)[:16], count_traffic_lights(net))

    src = osm_input(spec)
    opts = netconvert_options(spec)
    key = hashlib.sha256()
    key.update(_file_digest(src).encode())
    key.update(json.dumps([BUILD_VERSION, [o.replace(str(sumo_home()), "$SUMO_HOME") for o in opts]]).encode())
    digest = key.hexdigest()[:16]
    final = BUILD_DIR / f"{spec.name}-{digest}"
    net_file = final / f"{spec.name}.net.xml"
    if force and final.exists():
        shutil.rmtree(final)
    if net_file.exists() and (final / "network.json").exists():
        meta = json.loads((final / "network.json").read_text())
        return NetworkBuild(spec.name, net_file, digest, int(meta["n_traffic_lights"]))

    tmp = _atomic_dir(final)
    try:
        osm = src
        lower = src.name.lower()
        if lower.endswith((".pbf", ".bz2")):
            osm = to_osm_xml(src, tmp / f"{spec.name}.osm.xml")
        out = tmp / f"{spec.name}.net.xml"
        cmd = [sumo_binary("netconvert"), "--osm-files", str(osm), *opts, "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (tmp / "netconvert.log").write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
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
        (tmp / "network.json").write_text(
            json.dumps({"city": spec.name, "source": str(src), "hash": digest, "n_edges": n_edges,
                        "n_traffic_lights": n_tls, "netconvert_options": opts}, indent=2)
        )
        _commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return NetworkBuild(spec.name, net_file, digest, n_tls)


def _count_edges_and_lights(net_file: Path) -> tuple[int, int]:
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True)
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
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    agents = []
    for tls in net.getTrafficLights():
        programs = tls.getPrograms()
        if not programs:
            continue
        program = programs[sorted(programs)[0]]
        if len(green_states([p.state for p in program.getPhases()])) >= 2:
            agents.append(tls.getID())
    return sorted(agents)
