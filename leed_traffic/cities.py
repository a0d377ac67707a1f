"""Which city a ``--city`` argument means, and that city's scenario definition.

``--city`` accepts, in this order:

1. a bundled city (``scenarios/<name>.toml``: helsinki, paris, melbourne, oslo, luxembourg, heidelberg),
2. a RESCO benchmark scenario shipped inside the installed sumo-rl package (cologne8, ...),
3. a path to an OSM file (``.osm``, ``.osm.xml``, ``.osm.gz``, ``.osm.bz2``, ``.osm.pbf``),
4. ``place:<name>`` or a name with a comma ("Heidelberg, Germany"): downloaded with osmnx (online).

Plain unknown names are errors that list the bundled cities, never silent downloads: a typo
should not turn into a network request.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from leed_traffic.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_DIR = REPO_ROOT / "scenarios"
NETWORKS_DIR = REPO_ROOT / "networks"
OSM_SUFFIXES = (".osm", ".osm.xml", ".osm.gz", ".osm.bz2", ".osm.pbf")

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
}


@dataclass(frozen=True)
class DemandSpec:
    """Random trips with a time-of-day profile (see ``leed_traffic.demand``)."""

    veh_per_hour: float = 2000.0
    """Peak insertion rate for the whole city, vehicles per hour."""
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
    """"osm" (bundled or file or downloaded extract) or "resco" (files from the sumo-rl package)."""
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


def bundled_cities() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))


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
        source=(REPO_ROOT / source) if source else None,
        bbox=tuple(city["bbox"]) if "bbox" in city else None,
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


def _is_osm_path(city: str) -> bool:
    return city.lower().endswith(OSM_SUFFIXES) or "/" in city or Path(city).exists()


def resolve_city(city: str, **overrides: Any) -> CitySpec:
    """Turn a ``--city`` argument into a CitySpec, or raise a UserError that says what to do."""
    if not city or not city.strip():
        raise UserError(f"--city is empty; use one of: {', '.join(bundled_cities())}.")
    key = city.strip()
    toml = SCENARIOS_DIR / f"{key.lower()}.toml"
    if toml.exists() and "/" not in key:
        spec = load_city_toml(toml)
    elif key.lower() in RESCO_SCENARIOS:
        win = RESCO_SCENARIOS[key.lower()]
        spec = CitySpec(
            name=key.lower(), kind="resco", begin=win["begin"], end=win["end"], time_to_teleport=-1,
            eval_seeds=(100, 101, 102, 103, 104), delta_time=10, yellow_time=3,
        )
    elif key.lower().startswith("place:") or "," in key:
        place = key.split(":", 1)[1].strip() if key.lower().startswith("place:") else key
        if not place:
            raise UserError("`place:` needs a place name, e.g. --city 'place:Heidelberg, Germany'.")
        spec = CitySpec(name=_slug(place), kind="osm", place=place)
    elif _is_osm_path(key):
        path = Path(key).expanduser()
        if not path.exists():
            raise UserError(f"OSM file {path} does not exist; check the path.")
        if not path.name.lower().endswith(OSM_SUFFIXES):
            raise UserError(
                f"{path.name} is not an OSM file; give a file ending in {', '.join(OSM_SUFFIXES)}."
            )
        name = path.name
        for suf in OSM_SUFFIXES:
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
                break
        spec = CitySpec(name=_slug(name), kind="osm", source=path.resolve())
    else:
        raise UserError(
            f"Unknown city {key!r}: use a bundled city ({', '.join(bundled_cities())}), "
            f"a RESCO scenario ({', '.join(RESCO_SCENARIOS)}), a path to an OSM file, "
            "or 'place:<name>' to download one with osmnx (needs internet)."
        )
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None}) if overrides else spec
