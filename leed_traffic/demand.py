"""Reproducible demand: SUMO's randomTrips with a time-of-day profile, validated by duarouter.

Why randomTrips rather than hand-written flows: it works for any OSM network without knowing its
origins and destinations. The fringe factor makes most trips cross the area (as traffic does in
a city-centre cut-out), the minimum distance removes one-block trips, and ``--validate`` drops
trips without a route so every vehicle in the file can actually drive. The rate is piecewise
constant over equal slices of the episode (randomTrips applies a list of insertion rates to equal
intervals): a ramp up to the peak, then a shoulder. Departures are binomially randomised
(Poisson-like arrivals), seeded.

The volume comes from the city's definition, from ``--demand``, or, for a city without a
calibrated definition, from ``calibrate.fit_demand``. Measured traffic replaces all of this:
``routes_from_counts`` turns edge counts (CSV or SUMO edgeData) into routes with SUMO's own
routeSampler, sampling from candidate routes that randomTrips (and duarouter, for counted edges
the random candidates miss) draws over the network.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import logging
import math
import os
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from leed_traffic.cities import DemandSpec
from leed_traffic.errors import ScenarioError, UserError
from leed_traffic.fileio import atomic_write_text
from leed_traffic.sumo_env import sumo_binary, sumo_tool

log = logging.getLogger(__name__)

T = TypeVar("T")


BINOMIAL_N = 4
"""randomTrips' ``--binomial N``: each second, N Bernoulli draws with p = rate / N, so at most N
departures per second (14,400 veh/h at N = 4: above that randomTrips silently caps the volume)."""


def binomial_n(peak_veh_per_hour: float) -> int:
    """N for ``--binomial``: ``BINOMIAL_N`` (every volume up to 7,200 veh/h, hence every bundled city,
    keeps the route files it always had), more for a higher peak, so that p = rate / N <= 0.5 and
    the requested volume is what gets generated (a 32 x 32 grid, a whole city)."""
    return max(BINOMIAL_N, math.ceil(2.0 * peak_veh_per_hour / 3600.0))


def randomtrips_command(
    net_file: Path, out_routes: Path, demand: DemandSpec, seed: int, begin: int, end: int
) -> list[str]:
    if demand.veh_per_hour is None:
        raise ValueError("the demand has no volume yet: fit it first (calibrate.fit_demand)")
    rates = [max(demand.veh_per_hour * f, 1e-3) for f in demand.profile]
    binomial = binomial_n(max(rates))
    return [
        sys.executable,
        str(sumo_tool("randomTrips.py")),
        "-n", str(net_file),
        "-o", str(out_routes.with_suffix(".trips.xml")),
        "-r", str(out_routes),
        "--validate",
        "--seed", str(seed),
        "-b", str(begin),
        "-e", str(end),
        "--insertion-rate", *[f"{r:.3f}" for r in rates],
        "--binomial", str(binomial),
        "--fringe-factor", str(demand.fringe_factor),
        "--min-distance", str(demand.min_distance),
        "--vehicle-class", "passenger",
        "--vclass", "passenger",
        "--remove-loops",
        "--prefix", f"s{seed}_",
    ]


def generate_routes(
    net_file: Path, out_routes: Path, demand: DemandSpec, seed: int, begin: int, end: int
) -> Path:
    """Write a validated route file for one demand seed."""
    cmd = randomtrips_command(net_file, out_routes, demand, seed, begin, end)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out_routes.parent)
    trips = out_routes.with_suffix(".trips.xml")
    if trips.exists():
        trips.unlink()
    if proc.returncode != 0 or not out_routes.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScenarioError(
            f"Could not generate demand on {net_file.name} ({tail[0]}); "
            "the network may have no connected roads between its edges: try another extract or bbox."
        )
    return out_routes


def build_workers(n_jobs: int) -> int:
    """Parallel workers for ``n_jobs`` independent build jobs: at most the cores this process may
    run on (``os.sched_getaffinity``, which respects CPU pinning and containers), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(n_jobs, cores))


def run_parallel(jobs: list[Callable[[], T]]) -> list[T]:
    """Run independent build jobs (each one spawns its own SUMO tool process: randomTrips and
    duarouter, routeSampler) at most ``build_workers`` at a time; results in job order.

    The jobs are threads that only wait on their child process, so the pool of child processes is
    what is bounded by the core count. Every job writes its own files (names carry the seed), so
    the output is byte for byte what running them one after another writes; the first failure is
    raised, after the running jobs finish."""
    workers = build_workers(len(jobs))
    if workers == 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leed-build") as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def generate_all_routes(
    net_file: Path, out_dir: Path, demand: DemandSpec, begin: int, end: int,
) -> tuple[Path, ...]:
    """One validated route file per demand seed (``routes_s<seed>.rou.xml`` in ``out_dir``),
    generated in parallel (``run_parallel``); identical to generating them one by one."""
    return tuple(run_parallel([
        functools.partial(generate_routes, net_file, out_dir / f"routes_s{s}.rou.xml", demand, s, begin, end)
        for s in demand.seeds
    ]))


def count_vehicles(route_file: Path) -> int:
    import sumolib

    # <vehicle> (routed) and <trip> (RESCO's maps) both insert one vehicle each
    return sum(1 for _ in sumolib.xml.parse_fast(str(route_file), "vehicle", ["id"])) + sum(
        1 for _ in sumolib.xml.parse_fast(str(route_file), "trip", ["id"])
    )



# ------------------------------------------------------------------------------- counts
@dataclass(frozen=True)
class EdgeCount:
    """Vehicles measured entering ``edge`` during [begin, end) (s of simulation time)."""

    edge: str
    count: float
    begin: float
    end: float


COUNT_TOLERANCE = 0.10
"""Relative shortfall on a counted edge above which the build warns (routeSampler fills counts
from below: it never overshoots a count, but an edge few candidate routes cross may stay short)."""


def counts_digest(path: Path) -> str:
    """What the scenario hash records of a counts file: its content (not its name or place)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _number(text: str | None, what: str, where: str) -> float:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} {text!r} is not a number; fix the counts file.") from None
    if value < 0 or math.isnan(value):
        raise UserError(f"{where}: {what} {text!r} is negative or not a number; fix the counts file.")
    return value


def read_counts(path: Path, begin: float, end: float) -> list[EdgeCount]:
    """Edge counts from a CSV file (``edge_id,count[,begin,end]``; a row without begin/end counts
    the whole episode [begin, end)) or a SUMO edgeData XML file (``<interval begin end><edge id
    entered=...>``, or ``count=`` where ``entered`` is missing). Read by content, not by name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read the counts file {path} ({exc.strerror}); check the path.") from exc
    text = raw.decode("utf-8-sig", errors="replace")
    if text.lstrip().startswith("<"):
        out = _read_edgedata(path, text)
    else:
        out = _read_counts_csv(path, text, begin, end)
    if not out:
        raise UserError(f"The counts file {path.name} has no counts; give rows edge_id,count[,begin,end] "
                        "or a SUMO edgeData file.")
    if sum(c.count for c in out) <= 0:
        raise UserError(f"Every count in {path.name} is zero; nothing to route.")
    intervals = sorted({(c.begin, c.end) for c in out})
    for (b1, e1), (b2, e2) in itertools.pairwise(intervals):
        if b2 < e1:
            raise UserError(
                f"The counts in {path.name} have overlapping intervals {b1:g}-{e1:g} s and {b2:g}-{e2:g} s; "
                "routeSampler matches each interval on its own, so give every count on one set of "
                "consecutive intervals (or none, for the whole episode).")
    if not any(c.begin < end and c.end > begin for c in out):
        lo, hi = min(c.begin for c in out), max(c.end for c in out)
        raise UserError(
            f"The counts in {path.name} cover {lo:g}-{hi:g} s but the episode runs {begin}-{end} s; give "
            "intervals inside the episode (or drop begin,end to spread each count over the whole episode).")
    return out


def _read_counts_csv(path: Path, text: str, begin: float, end: float) -> list[EdgeCount]:
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    fields = [f.strip().lower() for f in rows.fieldnames or []]
    if "edge_id" not in fields or "count" not in fields:
        raise UserError(f"The counts file {path.name} needs a header with columns edge_id,count[,begin,end] "
                        f"(found {','.join(fields) or 'nothing'}); or give a SUMO edgeData XML file.")
    out = []
    for i, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        where = f"{path.name} line {i}"
        if not row.get("edge_id"):
            raise UserError(f"{where} has no edge_id; fix the counts file.")
        b = _number(row["begin"], "begin", where) if row.get("begin") else float(begin)
        e = _number(row["end"], "end", where) if row.get("end") else float(end)
        if e <= b:
            raise UserError(f"{where}: end {e:g} is not after begin {b:g}; fix the counts file.")
        out.append(EdgeCount(row["edge_id"], _number(row.get("count"), "count", where), b, e))
    return out


def _read_edgedata(path: Path, text: str) -> list[EdgeCount]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UserError(f"The counts file {path.name} is not valid XML ({exc}); give a SUMO edgeData file "
                        "or a CSV edge_id,count[,begin,end].") from None
    out = []
    for interval in root.iter("interval"):
        where = f"{path.name} interval {interval.get('id') or interval.get('begin')}"
        b = _number(interval.get("begin"), "begin", where)
        e = _number(interval.get("end"), "end", where)
        for edge in interval.iter("edge"):
            value = edge.get("entered", edge.get("count"))
            if value is None:
                raise UserError(f"{where}: edge {edge.get('id')} has neither an 'entered' nor a 'count' "
                                "attribute; give the measured vehicles in one of them.")
            out.append(EdgeCount(edge.get("id", ""), _number(value, "count", where), b, e))
    return out


def network_edges(net_file: Path) -> set[str]:
    """Ids of the network's normal edges (internal junction edges, ``:<junction>_<k>``, excluded)."""
    import sumolib

    return {e.id for e in sumolib.xml.parse_fast(str(net_file), "edge", ["id"]) if not e.id.startswith(":")}


def check_count_edges(counts: list[EdgeCount], net_file: Path, counts_file: Path, city: str) -> None:
    """One sentence naming the counted edges that are not in the network (the first few, and how many)."""
    known = network_edges(net_file)
    missing = sorted({c.edge for c in counts} - known)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        total = len({c.edge for c in counts})
        raise UserError(
            f"{len(missing)} of the {total} edges counted in {Path(counts_file).name} are not in the "
            f"network of {city} ({shown}); give counts on the SUMO edge ids of {Path(net_file).name}.")


def write_edgedata(counts: list[EdgeCount], dst: Path) -> Path:
    """The counts as SUMO edgeData (attribute ``entered``), one interval per (begin, end)."""
    by_interval: dict[tuple[float, float], Counter] = {}
    for c in counts:
        by_interval.setdefault((c.begin, c.end), Counter())[c.edge] += c.count
    lines = ["<meandata>"]
    for k, ((b, e), edges) in enumerate(sorted(by_interval.items())):
        lines.append(f'    <interval id="counts{k}" begin="{b:g}" end="{e:g}">')
        lines += [f'        <edge id="{_xml_attr(edge)}" entered="{n:g}"/>' for edge, n in sorted(edges.items())]
        lines.append("    </interval>")
    lines.append("</meandata>")
    return atomic_write_text(dst, "\n".join(lines) + "\n")


def _xml_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def route_edges(route_file: Path) -> list[tuple[str, float, list[str]]]:
    """``(vehicle id, depart, edges)`` of every routed vehicle in a route file."""
    out = []
    for _, el in ET.iterparse(str(route_file), events=("end",)):
        if el.tag == "vehicle":
            route = el.find("route")
            if route is not None:
                out.append((el.get("id"), float(el.get("depart", 0)), route.get("edges", "").split()))
            el.clear()
    return out


def counted_on_edges(route_file: Path, counts: list[EdgeCount]) -> dict[tuple[str, float, float], int]:
    """Vehicles in a route file crossing each counted edge, by the count's interval of departure
    (routeSampler assigns each sampled vehicle a departure inside the interval it counts for)."""
    want: dict[str, list[tuple[float, float]]] = {}
    for c in counts:
        want.setdefault(c.edge, []).append((c.begin, c.end))
    got = {(c.edge, c.begin, c.end): 0 for c in counts}
    for _, depart, edges in route_edges(route_file):
        for edge in set(edges) & want.keys():
            for b, e in want[edge]:
                if b <= depart < e:
                    got[(edge, b, e)] += 1
    return got


CANDIDATE_TRIPS = 3000
"""Random candidate routes drawn over the network for routeSampler to choose from."""
MIN_CANDIDATES_PER_EDGE = 5
"""Counted edges crossed by fewer random candidates get extra routes through them (duarouter)."""


def candidate_routes(net_file: Path, out: Path, demand: DemandSpec, seed: int, counted: set[str]) -> Path:
    """Candidate routes for routeSampler: random trips over the whole network (randomTrips with
    ``--route-output``, the demand's fringe factor and minimum distance), plus routes through each
    counted edge that the random ones rarely cross, from and to random origins and destinations of
    the random routes (duarouter, ``via`` the edge)."""
    work = out.parent
    cmd = [
        sys.executable, str(sumo_tool("randomTrips.py")), "-n", str(net_file),
        "-o", str(work / "candidates.trips.xml"), "-r", str(out), "--validate", "--seed", str(seed),
        "-b", "0", "-e", str(CANDIDATE_TRIPS), "-p", "1",
        "--fringe-factor", str(demand.fringe_factor), "--min-distance", str(demand.min_distance),
        "--vehicle-class", "passenger", "--vclass", "passenger", "--remove-loops", "--prefix", "cand",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScenarioError(f"Could not draw candidate routes on {net_file.name} ({tail[0]}); "
                            "the network may have no connected roads: try another extract or bbox.")
    routes = route_edges(out)
    crossing = Counter(e for _, _, edges in routes for e in set(edges))
    rare = sorted(e for e in counted if crossing[e] < MIN_CANDIDATES_PER_EDGE)
    if not rare or not routes:
        return out
    rng = random.Random(seed)
    origins = sorted({edges[0] for _, _, edges in routes})
    ends = sorted({edges[-1] for _, _, edges in routes})
    trips = ["<routes>"]
    for edge in rare:
        for k in range(4 * MIN_CANDIDATES_PER_EDGE):
            trips.append(f'    <trip id="via{len(trips)}" depart="0" from="{_xml_attr(rng.choice(origins))}" '
                         f'to="{_xml_attr(rng.choice(ends))}" via="{_xml_attr(edge)}"/>')
    trips.append("</routes>")
    via_trips, via_routes = work / "via.trips.xml", work / "via.rou.xml"
    atomic_write_text(via_trips, "\n".join(trips) + "\n")
    subprocess.run([sumo_binary("duarouter"), "-n", str(net_file), "--route-files", str(via_trips),
                    "-o", str(via_routes), "--ignore-errors", "--no-warnings", "--no-step-log",
                    "--remove-loops", "--seed", str(seed)], capture_output=True, text=True, check=False)
    if via_routes.exists():
        # one file for routeSampler: the random routes, then the ones through rare edges
        extra = [f'    <vehicle id="{_xml_attr(vid)}" depart="0">\n        <route edges="{" ".join(edges)}"/>\n    </vehicle>'
                 for vid, _, edges in route_edges(via_routes) if edges]
        body = "\n".join(
            f'    <vehicle id="{_xml_attr(vid)}" depart="{dep:g}">\n        <route edges="{" ".join(edges)}"/>\n    </vehicle>'
            for vid, dep, edges in routes)
        atomic_write_text(out, "<routes>\n" + body + "\n" + "\n".join(extra) + "\n</routes>\n")
    for f in (via_trips, via_routes, via_routes.with_suffix(".alt.xml")):
        f.unlink(missing_ok=True)
    return out


def routes_from_counts(
    net_file: Path, counts: list[EdgeCount], out_routes: Path, seed: int, candidates: Path,
) -> Path:
    """Sample one demand seed's routes matching the counts (SUMO's routeSampler)."""
    edgedata = write_edgedata(counts, out_routes.with_name(f".{out_routes.stem}.counts.xml"))
    cmd = [sys.executable, str(sumo_tool("routeSampler.py")), "-r", str(candidates), "-d", str(edgedata),
           "-o", str(out_routes), "--seed", str(seed), "--prefix", f"s{seed}_"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out_routes.parent, check=False)
    edgedata.unlink(missing_ok=True)
    if proc.returncode != 0 or not out_routes.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScenarioError(f"routeSampler could not turn the counts into routes on {net_file.name} ({tail[0]}).")
    return out_routes


def count_match(route_file: Path, counts: list[EdgeCount]) -> dict[str, float | int | list[str]]:
    """How well a sampled route file reproduces the counts: totals, the worst relative shortfall,
    and the counted edges short by more than ``COUNT_TOLERANCE``."""
    got = counted_on_edges(route_file, counts)
    want = Counter()
    for c in counts:
        want[(c.edge, c.begin, c.end)] += c.count
    short = sorted({k[0] for k, n in want.items() if n > 0 and got.get(k, 0) < (1 - COUNT_TOLERANCE) * n})
    worst = max((abs(got.get(k, 0) - n) / n for k, n in want.items() if n > 0), default=0.0)
    return {"counted": float(sum(want.values())), "routed": int(sum(got.values())),
            "max_relative_error": round(worst, 4), "short_edges": short}
