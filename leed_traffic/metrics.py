"""Episode metrics from SUMO's own outputs, with RESCO's definition of delay.

Delay of a vehicle = timeLoss + departDelay (tripinfo, unfinished trips included). SUMO 1.28
writes no tripinfo row for a vehicle it never managed to insert, so those are found from the
route file and charged ``end - intended depart`` (they waited the whole time): the honest number
(see ../shared/ANCHORS.md). RESCO's own script ignores them for ``<trip>`` files;
``resco_delay`` reproduces that rule for comparison with their table.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

METRIC_COLUMNS = (
    "mean_delay", "mean_travel_time", "mean_waiting_time", "mean_queue", "throughput", "teleports",
)


@dataclass
class EpisodeMetrics:
    mean_delay: float
    """s/vehicle over every vehicle due to depart before the end (never-inserted ones charged)."""
    mean_travel_time: float
    """s/vehicle, inserted vehicles (unfinished: time so far)."""
    mean_waiting_time: float
    """s/vehicle spent halted (speed < 0.1 m/s), inserted vehicles."""
    mean_queue: float
    """Halted vehicles in the network, averaged over simulation steps."""
    throughput: int
    """Vehicles that arrived."""
    teleports: int
    vehicles: int
    """Vehicles due to depart before the end."""
    never_inserted: int
    resco_delay: float
    """Delay by RESCO's rule (never-inserted vehicles ignored for <trip> route files)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def honest_mean_delay(inserted_delay_sum: float, inserted: int, never_inserted_waits: Iterable[float]) -> float:
    """The honest delay, s/vehicle, over every vehicle due to depart before the episode's end.

    ``inserted_delay_sum``: timeLoss + departDelay summed over the ``inserted`` vehicles that got
    into the network (finished or still running: for those, their time loss so far); each
    never-inserted vehicle adds its wait ``end - intended depart`` (``never_inserted_waits``). The
    one definition behind evaluation (``episode_metrics``, from tripinfo) and the training curve
    (``env.LeedTrafficEnv.honest_delay``, from the live simulation at the episode's end).
    """
    waits = list(never_inserted_waits)
    n = inserted + len(waits)
    return float((inserted_delay_sum + sum(waits)) / n) if n else 0.0


def _iter(path: Path, tags: tuple[str, ...]):
    for _, elem in ET.iterparse(str(path), events=("end",)):
        if elem.tag in tags:
            yield elem
            elem.clear()


def intended_departures(route_files: list[Path], begin: float, end: float) -> tuple[dict[str, float], set[str]]:
    """Vehicle id -> intended depart for every <vehicle>/<trip> due in [begin, end); and the trip ids.

    SUMO skips vehicles departing before ``--begin``, so they are not counted either."""
    departs: dict[str, float] = {}
    trips: set[str] = set()
    for rf in route_files:
        for el in _iter(Path(rf), ("vehicle", "trip")):
            try:
                dep = float(el.get("depart", "nan"))
            except ValueError:  # "triggered", "now", ...: not a timed departure
                continue
            if begin <= dep < end:
                departs[el.get("id")] = dep
                if el.tag == "trip":
                    trips.add(el.get("id"))
    return departs, trips


def read_teleports(statistics_file: Path | None) -> int:
    if statistics_file is None or not Path(statistics_file).exists():
        return 0
    for el in _iter(Path(statistics_file), ("teleports",)):
        return int(el.get("total", 0))
    return 0


def read_mean_queue(summary_file: Path | None) -> float:
    if summary_file is None or not Path(summary_file).exists():
        return 0.0
    vals = [float(el.get("halting", 0)) for el in _iter(Path(summary_file), ("step",))]
    return sum(vals) / len(vals) if vals else 0.0


def episode_metrics(
    tripinfo: Path, route_files: list[Path], begin: float, end: float,
    summary: Path | None = None, statistics: Path | None = None,
) -> EpisodeMetrics:
    departs, trip_ids = intended_departures(route_files, begin, end)
    delay: dict[str, float] = {}
    travel, waiting = [], []
    arrived = 0
    for el in _iter(Path(tripinfo), ("tripinfo",)):
        vid = el.get("id")
        d = float(el.get("timeLoss", 0)) + float(el.get("departDelay", 0))
        delay[vid] = d
        travel.append(float(el.get("duration", 0)))
        waiting.append(float(el.get("waitingTime", 0)))
        if float(el.get("arrival", -1)) >= 0:
            arrived += 1
    never = [v for v in departs if v not in delay]
    resco = list(delay.values()) + [end - departs[v] for v in never if v not in trip_ids]

    def mean(xs: list[float]) -> float:
        return float(sum(xs) / len(xs)) if xs else 0.0

    return EpisodeMetrics(
        mean_delay=honest_mean_delay(sum(delay.values()), len(delay), (end - departs[v] for v in never)),
        mean_travel_time=mean(travel), mean_waiting_time=mean(waiting),
        mean_queue=read_mean_queue(summary), throughput=arrived, teleports=read_teleports(statistics),
        vehicles=len(set(departs) | set(delay)), never_inserted=len(never), resco_delay=mean(resco),
    )
