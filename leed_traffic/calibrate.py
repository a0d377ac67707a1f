"""Demand fitted to the network: how many vehicles a city without calibrated demand gets.

A fixed 2,000 veh/h leaves a large extract nearly empty and gridlocks a dense one. ``fit_demand``
instead searches the peak volume (``DemandSpec.veh_per_hour``) the network itself can carry:

1. **First guess** from the network's size: ``guess_per_agent`` (35) veh/h x the signalised
   junctions that become agents (the bundled cities' hand-calibrated volumes are 22-57 veh/h per
   agent, 35 in the middle; lane-km spreads 4-58 veh/h per km across them, so it predicts worse).
2. **Bracket, then bisect** (geometric, on veh/h): each trial draws ONE demand seed's random trips
   at the trial volume (``demand.generate_routes``) and runs one episode of SUMO's own fixed-time
   programs (``evaluate.run_episode(..., FixedTime(), ...)``). A trial passes when fewer than
   ``max_teleport_fraction`` (1 %) of the inserted vehicles teleport and nothing is left waiting to
   enter: no vehicle due before the last ``late_window_s`` (30 s) is still outside the network at
   the end, and at most ``max_late_never_inserted`` (5) due in those last seconds are (the
   bundled calibration, docs/calibration.csv, had 0-3 such at its volumes). The volume grows by
   ``growth`` (x1.5) while trials pass and shrinks by it while they fail, then bisects between the
   highest pass and the lowest fail until they are within ``tolerance`` (10 %).
3. **Congestion target**: the scenario gets ``target`` (85 %) of the highest passing volume.
   Why 85 %: the highest passing level is the edge of breakdown for one seed, and teleports are
   noisy there (the bundled calibration has Oslo teleporting 1.8 % at 3,000 veh/h and 0.6 % at
   4,000): other demand and evaluation seeds at that level would gridlock now and then. 85 % is
   the traffic engineer's "practical capacity" (volume/capacity about 0.85, the HCM level-of-
   service D/E boundary), far enough below breakdown that every seed stays gridlock-free, close
   enough that queues form and signal control matters (a nearly empty network says nothing about
   a controller).

The search is deterministic for a seed (same route files, same SUMO seed) and cached under
``paths.cache_dir()/demand-fits/`` by the network hash, the demand definition other than the
volume, the episode, the search settings and the seed; the scenario built from it records the
fit in its scenario.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leed_traffic import paths
from leed_traffic.cities import CitySpec
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.fileio import atomic_write_json

log = logging.getLogger(__name__)

FIT_VERSION = "2"
"""Bump to invalidate every cached fit after changing how a trial is run or judged."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FitSettings:
    """How the volume is searched and judged (all part of the cache key)."""

    target: float = 0.85
    """Share of the highest gridlock-free volume the scenario gets (see the module docstring)."""
    guess_per_agent: float = 35.0
    """First guess, veh/h per agent (signalised junction with two distinct greens)."""
    tolerance: float = 0.10
    """Stop bisecting when the lowest failing volume is within this ratio of the highest passing."""
    max_teleport_fraction: float = 0.01
    """A trial passes below this share of inserted vehicles teleported."""
    late_window_s: int = 30
    """Vehicles due in the episode's last seconds may still be waiting to enter at the end..."""
    max_late_never_inserted: int = 5
    """... at most this many of them; none due earlier may be."""
    growth: float = 1.5
    """Factor between bracketing trials."""
    max_trials: int = 12
    min_veh_per_hour: float = 50.0
    max_veh_per_hour: float = 200_000.0
    resolution: float = 10.0
    """Volumes are multiples of this (veh/h): readable numbers, stable cache keys."""

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise UserError(f"The congestion target must be in (0, 1] (got {self.target}).")
        if not 0 < self.tolerance < 1:
            raise UserError(f"The search tolerance must be in (0, 1) (got {self.tolerance}).")
        if self.max_trials < 1:
            raise UserError(f"The demand search needs at least one trial (got max_trials={self.max_trials}).")
        if self.growth <= 1 + self.tolerance:
            raise UserError(f"The bracketing growth must exceed 1 + tolerance (got {self.growth}).")


@dataclass(frozen=True)
class Trial:
    veh_per_hour: float
    vehicles: int
    teleports: int
    teleport_fraction: float
    never_inserted: int
    never_inserted_early: int
    """Never inserted although due before the last ``late_window_s`` seconds."""
    mean_delay: float
    passed: bool
    wall_s: float

    def describe(self) -> str:
        verdict = "ok" if self.passed else "gridlock"
        return (f"{self.veh_per_hour:,.0f} veh/h: {self.vehicles} vehicles, teleports "
                f"{100 * self.teleport_fraction:.2f} %, never inserted {self.never_inserted} "
                f"({self.never_inserted_early} before the last seconds), mean delay {self.mean_delay:.0f} s -> {verdict}")


@dataclass(frozen=True)
class DemandFit:
    """The result of a search: the volume the scenario gets and how it was found."""

    city: str
    veh_per_hour: float
    """The fitted peak volume: ``target`` x ``max_ok_veh_per_hour``, rounded."""
    max_ok_veh_per_hour: float
    """Highest volume whose trial passed."""
    min_fail_veh_per_hour: float | None
    """Lowest volume whose trial failed (None: none failed within ``max_trials``)."""
    guess_veh_per_hour: float
    n_agents: int
    seed: int
    settings: FitSettings
    trials: tuple[Trial, ...]
    wall_s: float
    key: str
    net_hash: str
    cached: bool = False

    @property
    def steps(self) -> int:
        return len(self.trials)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("cached")
        d["steps"] = self.steps
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DemandFit:
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        d["settings"] = FitSettings(**d["settings"])
        d["trials"] = tuple(Trial(**t) for t in d["trials"])
        return cls(**d)

    def summary(self) -> str:
        upper = (f", gridlock from {self.min_fail_veh_per_hour:,.0f}" if self.min_fail_veh_per_hour
                 else ", no gridlock found up to the search limit")
        return (f"{self.veh_per_hour:,.0f} veh/h peak (fitted: {100 * self.settings.target:.0f} % of "
                f"{self.max_ok_veh_per_hour:,.0f}, the highest gridlock-free volume under fixed time{upper}; "
                f"{self.steps} trials, {self.wall_s:.0f} s{', cached' if self.cached else ''})")


def fits_dir() -> Path:
    return paths.cache_dir() / "demand-fits"


def fit_key(spec: CitySpec, net_hash: str, settings: FitSettings, seed: int) -> str:
    """Cache key: network, demand definition other than the volume, episode, search settings, seed."""
    demand = dataclasses.asdict(spec.demand)
    demand.pop("veh_per_hour")
    demand.pop("seeds")  # the search draws one seed's trips; the scenario's seed list does not matter
    payload = {
        "v": FIT_VERSION, "net": net_hash, "demand": demand,
        "episode": [spec.begin, spec.end, spec.time_to_teleport, list(spec.sumo_args)],
        "settings": dataclasses.asdict(settings), "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def first_guess(n_agents: int, settings: FitSettings) -> float:
    return _clip(settings.guess_per_agent * max(n_agents, 1), settings)


def _clip(v: float, s: FitSettings) -> float:
    v = min(max(v, s.min_veh_per_hour), s.max_veh_per_hour)
    return max(s.resolution, round(v / s.resolution) * s.resolution)


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)
    log.info("%s", text)


def fit_demand(
    spec: CitySpec, *, seed: int | None = None, settings: FitSettings | None = None,
    progress: Progress | bool | None = None, force: bool = False, net: Any = None,
) -> DemandFit:
    """Search the highest gridlock-free peak volume of ``spec``'s network under fixed time and
    return ``settings.target`` of it (cached; ``force`` searches again).

    ``seed`` (default: the demand's first seed) is both the demand seed of the trials' random
    trips and SUMO's seed. ``progress`` receives one line per trial (default, or True: printed
    with rich on stderr, since a search takes minutes on a large network; False: the log only). ``net``
    is the ``network.build_network(spec)`` result when the caller already has it. The volume
    ``spec`` carries is ignored: a bundled city can be fitted to compare with its calibration.
    """
    from leed_traffic.network import build_network, controllable_lights

    if spec.kind == "resco":
        raise UserError("RESCO scenarios come with their own routes; demand fitting applies to OSM cities.")
    settings = settings or FitSettings()
    if progress is None or progress is True:
        progress = fit_progress_printer()
    elif progress is False:
        progress = None
    seed = int(spec.demand.seeds[0] if seed is None else seed)
    net = net or build_network(spec)
    key = fit_key(spec, net.hash, settings, seed)
    cache = fits_dir() / f"{spec.name}-{key}.json"
    if cache.is_file() and not force:
        try:
            return replace(DemandFit.from_json(json.loads(cache.read_text())), cached=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cached demand fit %s (%s)", cache, exc)

    agents = controllable_lights(net.net_file)
    if not agents:
        raise ScenarioError(
            f"{spec.name} has {net.n_traffic_lights} traffic light(s) but none with two distinct green "
            "phases to choose between; choose an extract with signalized crossings.")
    guess = first_guess(len(agents), settings)
    _say(progress, f"fitting the demand of {spec.name} ({len(agents)} agents) to its network: "
                   f"first guess {guess:,.0f} veh/h")
    t0 = time.time()
    trials: list[Trial] = []
    work = Path(tempfile.mkdtemp(prefix="leed-fit-"))

    def judge(volume: float) -> bool:
        t = _trial(spec, net, agents, volume, seed, settings, work / f"t{len(trials)}")
        trials.append(t)
        _say(progress, f"trial {len(trials)}: {t.describe()}")
        return t.passed

    lo: float | None = None  # highest passing
    hi: float | None = None  # lowest failing
    try:
        v = guess
        while len(trials) < settings.max_trials:
            if judge(v):
                lo = v
                if hi is not None or v >= settings.max_veh_per_hour:
                    break
                v = _clip(v * settings.growth, settings)
            else:
                hi = v
                if lo is not None:
                    break
                if v <= settings.min_veh_per_hour:
                    break
                v = _clip(v / settings.growth, settings)
        while lo is not None and hi is not None and hi / lo > 1 + settings.tolerance \
                and len(trials) < settings.max_trials:
            mid = _clip(math.sqrt(lo * hi), settings)
            if mid in (lo, hi):
                break
            if judge(mid):
                lo = mid
            else:
                hi = mid
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if lo is None:
        raise ScenarioError(
            f"{spec.name} gridlocks under its own fixed-time programs even at {hi:,.0f} veh/h; the "
            "extract's signals or geometry block traffic: try another bbox or extract, or give --demand.")
    fit = DemandFit(
        city=spec.name, veh_per_hour=_clip(settings.target * lo, settings), max_ok_veh_per_hour=lo,
        min_fail_veh_per_hour=hi, guess_veh_per_hour=guess, n_agents=len(agents), seed=seed,
        settings=settings, trials=tuple(trials), wall_s=round(time.time() - t0, 1), key=key, net_hash=net.hash,
    )
    atomic_write_json(cache, fit.to_json(), sort_keys=False)
    _say(progress, f"demand of {spec.name}: {fit.summary()}")
    return fit


def _trial(spec: CitySpec, net: Any, agents: list[str], volume: float, seed: int, settings: FitSettings,
           work: Path) -> Trial:
    """One fixed-time episode on one demand seed's random trips at ``volume``."""
    from leed_traffic.controllers import FixedTime
    from leed_traffic.demand import count_vehicles, generate_routes
    from leed_traffic.evaluate import run_episode
    from leed_traffic.metrics import intended_departures
    from leed_traffic.scenario import Scenario

    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    routes = generate_routes(net.net_file, work / f"routes_s{seed}.rou.xml",
                             replace(spec.demand, veh_per_hour=volume), seed, spec.begin, spec.end)
    scenario = Scenario(
        city=spec.name, kind=spec.kind, dir=work, net_file=net.net_file, route_files=(routes,),
        agents=tuple(agents), begin=spec.begin, end=spec.end, hash=f"fit-{volume:g}",
        time_to_teleport=spec.time_to_teleport, eval_seeds=spec.eval_seeds,
        n_traffic_lights=net.n_traffic_lights, vehicles_per_route_file=(count_vehicles(routes),),
        delta_time=spec.delta_time, yellow_time=spec.yellow_time, sumo_args=spec.sumo_args, net_hash=net.hash,
    )
    run_dir = work / "run"
    row = run_episode(scenario, FixedTime(), seed, workdir=run_dir)
    # which never-inserted vehicles were due early (run_episode counts them all together)
    departs, _ = intended_departures([routes], spec.begin, spec.end)
    seen = _tripinfo_ids(run_dir)
    early = sum(1 for vid, dep in departs.items() if vid not in seen and dep < spec.end - settings.late_window_s)
    never = int(row["never_inserted"])
    inserted = max(int(row["vehicles"]) - never, 1)
    tele = int(row["teleports"]) / inserted
    passed = (tele < settings.max_teleport_fraction and early == 0
              and never - early <= settings.max_late_never_inserted)
    return Trial(veh_per_hour=volume, vehicles=int(row["vehicles"]), teleports=int(row["teleports"]),
                 teleport_fraction=round(tele, 5), never_inserted=never, never_inserted_early=early,
                 mean_delay=round(float(row["mean_delay"]), 1), passed=passed, wall_s=round(time.time() - t0, 1))


def _tripinfo_ids(run_dir: Path) -> set[str]:
    import xml.etree.ElementTree as ET

    ids: set[str] = set()
    for f in run_dir.glob("*.tripinfo.xml"):
        for _, el in ET.iterparse(str(f), events=("end",)):
            if el.tag == "tripinfo":
                ids.add(el.get("id"))
                el.clear()
    return ids


def fit_progress_printer(console: Any = None) -> Progress:
    """A ``progress`` callback printing each line with rich (stderr by default)."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    return lambda text: console.print(f"[dim]demand fit:[/] {text}", highlight=False)


__all__ = ["DemandFit", "FitSettings", "Trial", "first_guess", "fit_demand", "fit_key", "fit_progress_printer",
           "fits_dir"]
