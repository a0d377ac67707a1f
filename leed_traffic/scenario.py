"""A scenario: network + demand + episode window + agents, described by ``scenario.json``.

``build_scenario`` is the single entry from a ``--city`` argument to files SUMO can run. Like the
network, a scenario is cached under ``paths.scenarios_build_dir()/<city>-<hash>/`` (hash of the
network and the demand definition) and built in a temporary directory renamed when complete.
``scenario.json`` stores its files relative to its own folder (the network as
``../../networks/<city>-<net hash>/<city>.net.xml``), so the whole cache directory can be moved.

Where the demand comes from (``Scenario.demand_source``): ``given`` (the volume of a bundled
city's calibrated definition, or ``--demand``), ``fitted`` (a city without a calibrated definition:
``calibrate.fit_demand`` searches the volume its network carries; the fit is recorded in
scenario.json under ``demand_fit``), ``counts`` (``--counts``: measured edge counts sampled into
routes by routeSampler; the file's content enters the hash) or ``resco`` (RESCO's own routes).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from leed_traffic import paths
from leed_traffic.cities import CitySpec, _city_name_of_file, resco_map_dir, resolve_city
from leed_traffic.demand import (
    BINOMIAL_N, binomial_n, candidate_routes, check_count_edges, count_match, count_vehicles, counts_digest, generate_all_routes,
    read_counts, routes_from_counts, run_parallel,
)
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.fileio import atomic_dir, atomic_write_json
from leed_traffic.network import build_network, controllable_lights

log = logging.getLogger(__name__)

SCENARIO_VERSION = "1"


@dataclass(frozen=True)
class Scenario:
    city: str
    kind: str
    dir: Path
    net_file: Path
    route_files: tuple[Path, ...]
    agents: tuple[str, ...]
    begin: int
    end: int
    hash: str
    time_to_teleport: int = 300
    eval_seeds: tuple[int, ...] = (100, 101, 102)
    n_traffic_lights: int = 0
    vehicles_per_route_file: tuple[int, ...] = ()
    delta_time: int = 5
    yellow_time: int = 3
    sumo_args: tuple[str, ...] = ()
    net_hash: str = ""
    """Hash of the network build (checkpoint fingerprints); "" for scenario.json files older
    than this field. Not part of ``hash`` (which already covers it)."""
    veh_per_hour: float | None = None
    """Peak demand of the random trips, veh/h (None: counts, RESCO, or an older scenario.json)."""
    demand_source: str = ""
    """"given", "fitted", "counts" or "resco" (see the module docstring); "" for older files."""

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    def route_file(self, seed: int) -> Path:
        """Demand for an episode seed: route file ``seed mod n`` (held-out seeds reuse files with a
        different SUMO seed; RESCO maps have a single route file)."""
        return self.route_files[seed % len(self.route_files)]

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The scenario as JSON; with ``relative_to`` (the folder scenario.json is written in),
        files inside the cache directory are stored relative to it so the cache can be moved
        (files elsewhere, such as RESCO's in the sumo-rl package, stay absolute)."""
        def rel(p: Path) -> str:
            return _relative(Path(p), relative_to) if relative_to is not None else str(p)

        d = dataclasses.asdict(self)
        d["dir"] = "." if relative_to is not None else str(self.dir)
        d["net_file"] = rel(self.net_file)
        d["route_files"] = [rel(p) for p in self.route_files]
        d["n_agents"] = self.n_agents
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Scenario":
        """Read ``directory/scenario.json``; relative paths are resolved against ``directory``."""
        directory = Path(directory).resolve()
        d = json.loads((directory / "scenario.json").read_text())
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["dir"] = directory
        kw["net_file"] = (directory / kw["net_file"]).resolve()  # an absolute path stays as is
        kw["route_files"] = tuple((directory / p).resolve() for p in kw["route_files"])
        for k in ("agents", "eval_seeds", "vehicles_per_route_file", "sumo_args"):
            kw[k] = tuple(kw.get(k, ()))
        kw["net_hash"] = str(kw.get("net_hash") or "")
        return cls(**kw)

    def is_complete(self) -> bool:
        """Whether every file the scenario runs on is still there (a cache may be pruned)."""
        return self.net_file.is_file() and all(p.is_file() for p in self.route_files)


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when both are inside the cache directory, else absolute."""
    root = paths.cache_dir().resolve()
    path, base = Path(path).resolve(), Path(base).resolve()
    if path.is_relative_to(root) and base.is_relative_to(root):
        return Path(os.path.relpath(path, base)).as_posix()
    return str(path)


def scenario_dir(city: str, scenario_hash: str) -> Path:
    """The cache folder of one built scenario (may not exist yet)."""
    return paths.scenarios_build_dir() / f"{city}-{scenario_hash}"


def find_built(city: str, scenario_hash: str) -> Scenario | None:
    """The cached build of exactly this scenario hash if it is still complete, else None.

    ``city`` is a ``--city`` argument or a city name (as recorded in a run); nothing is built, so
    a run or an export can insist on the scenario it was made for.
    """
    if not city or not scenario_hash:
        return None
    try:
        name = resolve_city(city).name
    except UserError:  # e.g. the OSM file a run was trained on is gone: its build may remain
        name = _city_name_of_file(Path(city))
    folder = scenario_dir(name, scenario_hash)
    if not (folder / "scenario.json").is_file():
        return None
    try:
        sc = Scenario.load(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable cached scenario %s (%s)", folder, exc)
        return None
    return sc if sc.hash == scenario_hash and sc.is_complete() else None


def scenario_with_hash(city: str, scenario_hash: str, what: str = "This was made for") -> Scenario:
    """The scenario a run or an exported plan was made for: its cached build if still there, else
    the city's current build, refused with one sentence when that has another hash (the network
    or the demand changed since). ``what`` starts that sentence ("RUN was trained on")."""
    found = find_built(city, scenario_hash)
    if found is not None:
        return found
    sc = build_scenario(city)
    if scenario_hash and sc.hash != scenario_hash:
        raise UserError(
            f"{what} scenario {scenario_hash} of {city}, but {city} now builds scenario {sc.hash} "
            "(network or demand changed); retrain or re-export on the current scenario.")
    return sc


def _scenario_hash(spec: CitySpec, net_hash: str, counts: str | None = None) -> str:
    payload: dict[str, Any] = {
        "v": SCENARIO_VERSION,
        "net": net_hash,
        "demand": dataclasses.asdict(spec.demand),
        "begin": spec.begin,
        "end": spec.end,
        "ttt": spec.time_to_teleport,
        "control": [spec.delta_time, spec.yellow_time],
        "sumo_args": list(spec.sumo_args),
    }
    if counts:  # only when given: the hashes of scenarios without counts stay what they were
        payload["counts"] = counts
    elif spec.demand.veh_per_hour is not None:
        n = binomial_n(max(spec.demand.veh_per_hour * f for f in spec.demand.profile))
        if n != BINOMIAL_N:  # above 7,200 veh/h: the routes of older builds were capped at 14,400 veh/h
            payload["binomial"] = n
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_scenario(
    city: str | CitySpec, force: bool = False, *, progress: Callable[[str], None] | bool | None = None,
    fit_settings: Any = None, **overrides: Any,
) -> Scenario:
    """Build (or reuse) the scenario for a ``--city`` argument.

    A city without a volume (``spec.demand.veh_per_hour is None``: OSM files and ``place:``
    cities) gets one fitted to its network first (``calibrate.fit_demand`` with ``fit_settings``,
    cached; ``progress`` receives its lines, printed on stderr by default); a city with ``counts``
    gets routes sampled from them.
    """
    spec = city if isinstance(city, CitySpec) else resolve_city(city, **overrides)
    net = build_network(spec, force=force)
    counts, counts_hash, fit = None, None, None
    if spec.counts is not None:
        if spec.kind == "resco":
            raise UserError("RESCO scenarios come with their own routes; --counts applies to OSM cities.")
        counts = read_counts(Path(spec.counts), spec.begin, spec.end)
        check_count_edges(counts, net.net_file, Path(spec.counts), spec.name)
        counts_hash = counts_digest(Path(spec.counts))
    elif spec.kind != "resco" and spec.demand.veh_per_hour is None:
        from leed_traffic.calibrate import fit_demand

        fit = fit_demand(spec, settings=fit_settings, progress=progress, force=force, net=net)
        spec = dataclasses.replace(spec, demand=dataclasses.replace(spec.demand, veh_per_hour=fit.veh_per_hour))
    source = "resco" if spec.kind == "resco" else "counts" if counts else "fitted" if fit else "given"
    digest = _scenario_hash(spec, net.hash, counts_hash)
    final = scenario_dir(spec.name, digest)
    if force and final.exists():
        shutil.rmtree(final)
    if (final / "scenario.json").exists():
        cached = Scenario.load(final)
        # the network may have been pruned from the cache (and just rebuilt: same hash, same path)
        if cached.is_complete():
            return cached if cached.net_hash else dataclasses.replace(cached, net_hash=net.hash)
        shutil.rmtree(final, ignore_errors=True)

    agents = controllable_lights(net.net_file)
    if not agents:
        raise ScenarioError(
            f"{spec.name} has {net.n_traffic_lights} traffic light(s) but none with two distinct green "
            "phases to choose between; choose an extract with signalized crossings."
        )
    with atomic_dir(final, exists="keep") as tmp:
        extra: dict[str, Any] = {}
        if spec.kind == "resco":
            folder = resco_map_dir(spec.name)
            routes = tuple(sorted(folder.glob("*.rou.xml")))
        elif counts is not None:
            routes, extra["counts"] = _routes_from_counts(spec, net.net_file, counts, tmp)
            extra["counts"]["sha256"] = counts_hash
        else:
            # one randomTrips process per demand seed, as many at a time as there are cores
            routes = generate_all_routes(net.net_file, tmp, spec.demand, spec.begin, spec.end)
        counts = tuple(count_vehicles(r) for r in routes)
        if spec.kind != "resco" and min(counts) == 0:
            raise ScenarioError(
                f"No vehicle could be routed on {spec.name}; the road network is too fragmented: "
                "try a larger bbox or another extract."
            )
        final_routes = tuple(final / r.name if r.parent == tmp else r for r in routes)
        scenario = Scenario(
            city=spec.name, kind=spec.kind, dir=final, net_file=net.net_file, route_files=final_routes,
            agents=tuple(agents), begin=spec.begin, end=spec.end, hash=digest,
            time_to_teleport=spec.time_to_teleport, eval_seeds=spec.eval_seeds,
            n_traffic_lights=net.n_traffic_lights, vehicles_per_route_file=counts,
            delta_time=spec.delta_time, yellow_time=spec.yellow_time, sumo_args=spec.sumo_args,
            net_hash=net.hash, demand_source=source,
            veh_per_hour=spec.demand.veh_per_hour if source in ("given", "fitted") else None,
        )
        if fit is not None:
            extra["demand_fit"] = fit.to_json()
        meta = scenario.to_json(relative_to=final) | {
            "demand": dataclasses.asdict(spec.demand),
            **extra,
            "attribution": {"osm": "Map data © OpenStreetMap contributors (ODbL)",
                            "grid": "Synthetic grid (SUMO netgenerate)"}.get(
                spec.kind, "RESCO benchmark (from the sumo-rl package)"),
        }
        atomic_write_json(tmp / "scenario.json", meta, sort_keys=False)
    return Scenario.load(final)


def _routes_from_counts(spec: CitySpec, net_file: Path, counts: list, tmp: Path) -> tuple[tuple[Path, ...], dict]:
    """One routeSampler route file per demand seed, all drawn from one set of candidate routes;
    the counts file is kept next to them (``counts<suffix>``) and the match recorded."""
    src = Path(spec.counts)
    kept = tmp / ("counts" + (".xml" if src.read_bytes().lstrip()[:1] == b"<" else ".csv"))
    shutil.copyfile(src, kept)
    seeds = spec.demand.seeds
    cand = candidate_routes(net_file, tmp / "candidates.rou.xml", spec.demand, seeds[0], {c.edge for c in counts})
    try:
        routes = tuple(run_parallel([
            functools.partial(routes_from_counts, net_file, counts, tmp / f"routes_s{s}.rou.xml", s, cand)
            for s in seeds]))
    finally:
        cand.unlink(missing_ok=True)
    match = count_match(routes[0], counts)
    if match["short_edges"]:
        short = match["short_edges"]
        log.warning(
            "routes reproduce the counts of %d counted edge(s) of %s with a shortfall over 10 %% (%s%s): "
            "few plausible routes cross them", len(short), spec.name, ", ".join(short[:5]),
            ", ..." if len(short) > 5 else "")
    return routes, {"file": str(src.resolve()), "kept_as": kept.name, "edges": len({c.edge for c in counts}),
                    "intervals": len({(c.begin, c.end) for c in counts}), **match}


def scenario_from_files(
    net_file: str | Path, route_files: list[str | Path], *, begin: int = 0, end: int = 3600,
    name: str | None = None, time_to_teleport: int = -1,
) -> Scenario:
    """Wrap an existing SUMO network and route files (no build, no cache) as a Scenario."""
    net_file = Path(net_file).resolve()
    if not net_file.exists():
        raise ScenarioError(f"Network file {net_file} does not exist; check the path.")
    routes = tuple(Path(r).resolve() for r in route_files)
    digest = hashlib.sha256(
        b"".join(p.read_bytes() for p in (net_file, *routes)) + f"{begin}-{end}".encode()
    ).hexdigest()[:16]
    return Scenario(
        city=name or net_file.name.split(".")[0], kind="file", dir=net_file.parent, net_file=net_file,
        route_files=routes, agents=tuple(controllable_lights(net_file)), begin=begin, end=end,
        hash=digest, time_to_teleport=time_to_teleport,
    )
