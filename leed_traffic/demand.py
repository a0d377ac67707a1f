"""Reproducible demand: SUMO's randomTrips with a time-of-day profile, validated by duarouter.

Why randomTrips rather than hand-written flows: it works for any OSM network without knowing its
origins and destinations. The fringe factor makes most trips cross the area (as traffic does in
a city-centre cut-out), the minimum distance removes one-block trips, and ``--validate`` drops
trips without a route so every vehicle in the file can actually drive. The rate is piecewise
constant over equal slices of the episode (randomTrips applies a list of insertion rates to equal
intervals): a ramp up to the peak, then a shoulder. Departures are binomially randomised
(Poisson-like arrivals), seeded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from leed_traffic.cities import DemandSpec
from leed_traffic.errors import ScenarioError
from leed_traffic.sumo_env import sumo_tool


def randomtrips_command(
    net_file: Path, out_routes: Path, demand: DemandSpec, seed: int, begin: int, end: int
) -> list[str]:
    rates = [max(demand.veh_per_hour * f, 1e-3) for f in demand.profile]
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
        "--binomial", "4",
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


def count_vehicles(route_file: Path) -> int:
    import sumolib

    # <vehicle> (routed) and <trip> (RESCO's maps) both insert one vehicle each
    return sum(1 for _ in sumolib.xml.parse_fast(str(route_file), "vehicle", ["id"])) + sum(
        1 for _ in sumolib.xml.parse_fast(str(route_file), "trip", ["id"])
    )
