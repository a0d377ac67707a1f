"""Which city a ``--city`` argument means, and that city's scenario definition.

``--city`` accepts, in this order:

1. a bundled city (``scenarios/<name>.toml``: helsinki, paris, melbourne, oslo, luxembourg, heidelberg),
2. a RESCO benchmark scenario shipped inside the installed sumo-rl package (cologne8, ...),
3. a path to an OSM file: OSM XML, PBF, or gzip/bz2-compressed OSM XML, recognised by its content
   whatever its name (``osm_format``),
4. ``place:<name>`` or a name with a comma ("Heidelberg, Germany"): downloaded with osmnx (online),
5. ``grid:NxM`` (or ``grid:N``, ``grid-NxM``): a synthetic N x M grid built with SUMO's netgenerate,
   a traffic light on every junction (``GRID_OPTIONS``), random trips scaled to the grid
   (``grid_spec``). ``grid4x4`` without the colon stays RESCO's map.

Plain unknown names are errors that list the bundled cities, never silent downloads: a typo
should not turn into a network request.

Bundled cities carry a hand-calibrated demand volume; cities 3 and 4 have none
(``FITTED_DEMAND``), so the scenario build fits one to the network (``calibrate.fit_demand``).
"""

from __future__ import annotations

import bz2
import re
import tomllib
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from leed_traffic import paths
from leed_traffic.errors import UserError

OSM_SUFFIXES = (".osm", ".osm.xml", ".osm.gz", ".osm.bz2", ".osm.pbf")
"""Names stripped from a file to name its city (the format itself is read from the content)."""

OsmFormat = Literal["xml", "pbf", "xml.gz", "xml.bz2"]

# RESCO (Ault & Sharon 2021) scenarios as shipped by sumo-rl, with RESCO's episode windows.
RESCO_SCENARIOS: dict[str, dict[str, Any]] = {
    "cologne1": {"begin": 25200, "end": 28800},
    "cologne3": {"begin": 25200, "end": 28800},
    "cologne8": {"begin": 25200, "end": 28800},
    "ingolstadt1": {"begin": 57600, "end": 61200},
    "ingolstadt7": {"begin": 57600, "end": 61200},
    "ingolstadt21": {"begin": 57600, "end": 61200},
    "grid4x4": {"begin": 0, "end": 3600},
    "arterial4x4": {"begin": 0, "end": 3600},
    # A labelled variant, not a RESCO map: cologne3's files with SUMO's junction-blocker timeout.
    # On cologne3 as shipped, vehicles can stop *inside* a junction (internal lanes of the
    # signalised cluster and the unsignalised junction beside it) and, with teleports off as
    # RESCO has them, never leave: every controller, classical or learned, deadlocks some
    # episodes (docs/learning.md). With --ignore-junction-blocker 60 a vehicle that has waited
    # 60 s for a blocker ignores it, which dissolves those deadlocks; everything else is the map.
    # Its numbers are not comparable with RESCO's or ANCHORS.md's cologne3.
    "cologne3-unblocked": {"begin": 25200, "end": 28800, "map": "cologne3",
                           "sumo_args": ("--ignore-junction-blocker", "60")},
}


GRID_MAX = 32
"""Largest grid side ``grid:NxM`` accepts (32 x 32 = 1,024 agents)."""
GRID_OPTIONS: tuple[str, ...] = (
    "--grid", "--grid.length", "100", "--grid.attach-length", "100",
    "--tls.guess", "true", "--tls.guess.threshold", "0",
)
"""netgenerate options of ``grid:`` cities (as benchmarks/bench_env.py's grids): 100 m blocks, one
lane each way, 100 m fringe edges attached to the border junctions so that every junction is a
four-arm crossing, and a traffic light on every junction (``--tls.guess.threshold 0``: the default
threshold skips 50 km/h single-lane crossings)."""
GRID_VEH_PER_HOUR_PER_SIDE = 1000.0
"""Peak demand of a grid = this x (N + M) / 2 veh/h. Trips cross the grid (fringe factor 10), so a
trip passes about N junctions and the load per junction stays about constant as the grid grows
(~3 vehicles per junction after 900 s, as helsinki and luxembourg have per agent)."""


@dataclass(frozen=True)
class DemandSpec:
    """Random trips with a time-of-day profile (see ``leed_traffic.demand``)."""

    veh_per_hour: float | None = 2000.0
    """Peak insertion rate for the whole city, vehicles per hour. ``None`` (what a city without a
    calibrated definition gets: an OSM file, ``place:``): fitted to the network when the scenario
    is built (``calibrate.fit_demand``: the highest gridlock-free level under fixed time, stepped
    back to a congestion target). Bundled cities give their hand-calibrated volume. (The 2000
    default only keeps the hashes of scenarios defined before fitting existed, RESCO's included.)"""
    profile: tuple[float, ...] = (0.55, 0.7, 0.85, 1.0, 1.0, 0.9)
    """Relative rate over equal slices of the episode: a ramp to the peak, then a shoulder."""
    fringe_factor: float = 10.0
    """How much likelier trips start/end at the network's edge (through traffic) than inside."""
    min_distance: float = 300.0
    """Minimum straight-line trip length, metres (no one-block trips)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One route file per demand seed; episode seed k uses route file k mod len(seeds)."""


@dataclass(frozen=True)
class CitySpec:
    """Everything needed to build one city's scenario."""

    name: str
    kind: str
    """"osm" (bundled or file or downloaded extract), "resco" (files from the sumo-rl package) or
    "grid" (a synthetic grid built with netgenerate)."""
    source: Path | None = None
    """OSM extract (osm kinds)."""
    place: str | None = None
    """osmnx place query (downloaded kind)."""
    bbox: tuple[float, float, float, float] | None = None
    """Clip (min_lon, min_lat, max_lon, max_lat) applied by netconvert."""
    demand: DemandSpec = field(default_factory=DemandSpec)
    begin: int = 0
    end: int = 3600
    time_to_teleport: int = 300
    """SUMO's jam teleport threshold, s (-1 disables; RESCO's maps use -1 as in ANCHORS.md)."""
    eval_seeds: tuple[int, ...] = (100, 101, 102)
    """Held-out seeds for evaluation (never used for training)."""
    sumo_args: tuple[str, ...] = ()
    """Extra SUMO options for every run of this city (e.g. ``--ignore-junction-blocker 60`` where
    OSM geometry creates junction deadlocks); they apply to every controller alike."""
    delta_time: int = 5
    """Default decision interval, s (sumo-rl's 5 for OSM cities; RESCO's 10 for its maps)."""
    yellow_time: int = 3
    """Default yellow, s: 3 as in the cities' own netconvert programs and RESCO (sumo-rl uses 2,
    which real signal timing never does; pass ``yellow_time=2`` to reproduce sumo-rl)."""
    description: str = ""
    grid: tuple[int, int] | None = None
    """Columns and rows of a ``grid`` kind city (netgenerate)."""
    lefthand: bool = False
    """Left-hand traffic (netconvert ``--lefthand``: the UK, Japan, Australia, ...): turn lanes,
    junction geometry and the signal groups built from them mirror right-hand traffic's. OSM
    extracts rarely say which side a country drives on, so it is set per city (``[city] lefthand``
    in a scenario TOML, ``build --lefthand``, ``scenario.lefthand``)."""
    counts: Path | None = None
    """Measured edge counts (CSV ``edge_id,count[,begin,end]`` or SUMO edgeData XML): the demand is
    then sampled from them with SUMO's routeSampler (``demand.routes_from_counts``) instead of
    random trips at ``demand.veh_per_hour``; the file's content enters the scenario hash."""


FITTED_DEMAND = DemandSpec(veh_per_hour=None)
"""The demand of a city without a calibrated definition: random trips at a volume fitted to its
network when the scenario is first built (``calibrate.fit_demand``)."""


def bundled_cities() -> list[str]:
    return sorted(p.stem for p in paths.bundled_scenarios_dir().glob("*.toml"))


_SNIFF_BYTES = 4096


def _looks_like_osm_xml(head: bytes) -> bool:
    """Whether the first bytes of a text are an XML document whose root element is ``<osm``."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    # skip the XML declaration, comments, processing instructions and a DOCTYPE before the root
    while text.startswith(b"<?") or text.startswith(b"<!"):
        closer = b"-->" if text.startswith(b"<!--") else b">"
        end = text.find(closer)
        if end < 0:
            return False
        text = text[end + len(closer):].lstrip()
    return re.match(rb"<osm[\s>/]", text) is not None


def _is_pbf(head: bytes) -> bool:
    """An OSM PBF starts with a BlobHeader (4-byte big-endian size) whose ``type`` is OSMHeader."""
    if len(head) < 6:
        return False
    size = int.from_bytes(head[:4], "big")
    # field 1 (type, a string): tag 0x0A, then a one-byte varint length (9 for "OSMHeader")
    return 0 < size < 64 * 1024 and head[4] == 0x0A and head[5:6 + head[5]] == bytes([9]) + b"OSMHeader"


def _decompressed_head(path: Path, decompressor: Any, limit: int = 4 << 20) -> bytes:
    """The first KB of a compressed file (bz2 needs a whole block before it yields anything)."""
    out = b""
    with open(path, "rb") as f:
        read = 0
        while len(out) < 1024 and read < limit and not getattr(decompressor, "eof", False):
            chunk = f.read(64 * 1024)
            if not chunk:
                break
            read += len(chunk)
            try:
                out += decompressor.decompress(chunk)
            except (OSError, EOFError, zlib.error, ValueError):
                break
    return out


def osm_format(path: Path) -> OsmFormat:
    """What kind of OSM file ``path`` is, read from its content whatever its name.

    Names lie (``city.dat``, a PBF saved as ``.osm``), and netconvert and osmium only accept what
    they are told, so the converter is chosen from the bytes: an XML root ``<osm``, a PBF's first
    BlobHeader of type OSMHeader, or gzip/bz2 magic around OSM XML.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise UserError(f"Cannot read {path} ({exc.strerror}); check the path and its permissions.") from exc
    what = "give an OpenStreetMap extract: OSM XML (.osm), PBF (.osm.pbf) or gzip/bz2-compressed OSM XML"
    if head.startswith(b"\x1f\x8b"):
        if _looks_like_osm_xml(_decompressed_head(path, zlib.decompressobj(16 + zlib.MAX_WBITS))):
            return "xml.gz"
        raise UserError(f"{path.name} is gzip-compressed but is not OSM XML inside; {what}.")
    if head.startswith(b"BZh"):
        if _looks_like_osm_xml(_decompressed_head(path, bz2.BZ2Decompressor())):
            return "xml.bz2"
        raise UserError(f"{path.name} is bz2-compressed but is not OSM XML inside; {what}.")
    if _is_pbf(head):
        return "pbf"
    if _looks_like_osm_xml(head):
        return "xml"
    kind = "empty" if not head else "an XML file without an <osm> root" if head.lstrip().startswith(b"<") else (
        "neither OSM XML, nor OSM PBF, nor gzip/bz2-compressed OSM XML")
    raise UserError(f"{path.name} is not an OSM file ({kind}); {what}.")


def resco_map_dir(name: str) -> Path:
    """The sumo-rl folder holding a RESCO scenario's (or a labelled variant's) net and routes."""
    return resco_dir() / RESCO_SCENARIOS.get(name, {}).get("map", name)


def resco_dir() -> Path:
    from leed_traffic import sumo_env  # noqa: F401 - sumo-rl needs SUMO_HOME at import
    import importlib.util

    spec = importlib.util.find_spec("sumo_rl")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("sumo-rl is not installed; run `make setup`.")
    return Path(list(spec.submodule_search_locations)[0]) / "nets" / "RESCO"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "city"


def load_city_toml(path: Path) -> CitySpec:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Scenario file {path} is not valid TOML ({exc}); fix it.") from exc
    city = raw.get("city", {})
    dem = raw.get("demand", {})
    ep = raw.get("episode", {})
    ev = raw.get("evaluation", {})
    name = city.get("name", path.stem)
    source = city.get("source")
    if source:
        # "networks/osm/<file>" names a bundled extract (package data); anything else is relative
        # to the TOML file's folder
        rel = Path(source)
        if rel.is_absolute():
            source = rel
        elif rel.parts[:2] == ("networks", "osm"):
            source = paths.bundled_osm_dir().joinpath(*rel.parts[2:])
        else:
            source = path.parent / rel
    demand = DemandSpec(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in dem.items()
            if k in DemandSpec.__dataclass_fields__
        }
    )
    return CitySpec(
        name=name,
        kind="osm",
        source=source or None,
        bbox=tuple(city["bbox"]) if "bbox" in city else None,
        lefthand=bool(city.get("lefthand", False)),
        demand=demand,
        begin=int(ep.get("begin", 0)),
        end=int(ep.get("end", 3600)),
        time_to_teleport=int(ep.get("time_to_teleport", 300)),
        sumo_args=tuple(str(a) for a in ep.get("sumo_args", ())),
        eval_seeds=tuple(ev.get("seeds", (100, 101, 102))),
        delta_time=int(raw.get("control", {}).get("delta_time", 5)),
        yellow_time=int(raw.get("control", {}).get("yellow_time", 3)),
        description=city.get("description", ""),
    )


_GRID_RE = re.compile(r"grid(?::|-)(\d+)(?:x(\d+))?", re.IGNORECASE)


def grid_spec(cols: int, rows: int | None = None) -> CitySpec:
    """A synthetic ``cols`` x ``rows`` grid city (``GRID_OPTIONS``), named ``grid-<cols>x<rows>``,
    with random trips at ``GRID_VEH_PER_HOUR_PER_SIDE`` x (cols + rows) / 2 veh/h at the peak."""
    rows = cols if rows is None else rows
    if not (2 <= cols <= GRID_MAX and 2 <= rows <= GRID_MAX):
        raise UserError(f"A grid needs 2 to {GRID_MAX} junctions per side (got {cols}x{rows}); "
                        f"e.g. --city grid:8x8.")
    return CitySpec(
        name=f"grid-{cols}x{rows}", kind="grid", grid=(cols, rows),
        demand=DemandSpec(veh_per_hour=GRID_VEH_PER_HOUR_PER_SIDE * (cols + rows) / 2),
        description=f"synthetic {cols} x {rows} grid (netgenerate), 100 m blocks, a traffic light on every junction",
    )


def _is_osm_path(city: str) -> bool:
    return city.lower().endswith(OSM_SUFFIXES) or "/" in city or Path(city).expanduser().is_file()


def _city_name_of_file(path: Path) -> str:
    name = path.name
    for suf in OSM_SUFFIXES:
        if name.lower().endswith(suf):
            return _slug(name[: -len(suf)])
    return _slug(name.split(".")[0] or name)


def resolve_city(city: str, **overrides: Any) -> CitySpec:
    """Turn a ``--city`` argument into a CitySpec, or raise a UserError that says what to do."""
    if not city or not city.strip():
        raise UserError(f"--city is empty; use one of: {', '.join(bundled_cities())}.")
    key = city.strip()
    toml = paths.bundled_scenarios_dir() / f"{key.lower()}.toml"
    if toml.exists() and "/" not in key:
        spec = load_city_toml(toml)
    elif key.lower() in RESCO_SCENARIOS:
        win = RESCO_SCENARIOS[key.lower()]
        spec = CitySpec(
            name=key.lower(), kind="resco", begin=win["begin"], end=win["end"], time_to_teleport=-1,
            eval_seeds=(100, 101, 102, 103, 104), delta_time=10, yellow_time=3,
            sumo_args=tuple(win.get("sumo_args", ())),
        )
    elif (m := _GRID_RE.fullmatch(key)) is not None:
        spec = grid_spec(int(m[1]), int(m[2]) if m[2] else None)
    elif key.lower().startswith("place:") or "," in key:
        place = key.split(":", 1)[1].strip() if key.lower().startswith("place:") else key
        if not place:
            raise UserError("`place:` needs a place name, e.g. --city 'place:Heidelberg, Germany'.")
        spec = CitySpec(name=_slug(place), kind="osm", place=place, demand=FITTED_DEMAND)
    elif _is_osm_path(key):
        path = Path(key).expanduser()
        if not path.exists():
            raise UserError(f"OSM file {path} does not exist; check the path.")
        if not path.is_file():
            raise UserError(f"{path} is a directory; give an OSM file (.osm, .osm.pbf, .osm.gz, .osm.bz2).")
        osm_format(path)  # refuses a file that is not OSM, with what to give instead
        spec = CitySpec(name=_city_name_of_file(path), kind="osm", source=path.resolve(), demand=FITTED_DEMAND)
    else:
        raise UserError(
            f"Unknown city {key!r}: use a bundled city ({', '.join(bundled_cities())}), "
            f"a RESCO scenario ({', '.join(RESCO_SCENARIOS)}), a path to an OSM file, "
            "'place:<name>' to download one with osmnx (needs internet), or 'grid:NxM' for a synthetic grid."
        )
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None}) if overrides else spec


def with_demand(spec: CitySpec, *, veh_per_hour: float | None = None, fit: bool = False,
                counts: str | Path | None = None) -> CitySpec:
    """The city with its demand chosen by the user: a volume, a fit to the network, or measured
    counts (one at most; RESCO maps bring their own routes). The one rule for ``build`` and
    experiments (``ExperimentConfig.scenario``)."""
    chosen = [flag for flag, on in (("--demand", veh_per_hour is not None), ("--fit-demand", fit),
                                    ("--counts", counts is not None)) if on]
    if chosen and spec.kind == "resco":
        raise UserError(f"RESCO scenarios come with their own routes; {chosen[0]} applies to OSM cities.")
    if len(chosen) > 1:
        raise UserError(f"Give one source of demand: {' and '.join(chosen)} exclude each other.")
    if veh_per_hour is not None:
        # float: --demand 32000 and a config's 32000 (int) are one scenario, one hash, one build
        return replace(spec, demand=replace(spec.demand, veh_per_hour=float(veh_per_hour)))
    if fit:
        return replace(spec, demand=replace(spec.demand, veh_per_hour=None))
    if counts is not None:
        path = Path(counts).expanduser()
        if not path.is_file():
            raise UserError(f"Counts file {counts} does not exist; check the path.")
        return replace(spec, counts=path.resolve())
    return spec
