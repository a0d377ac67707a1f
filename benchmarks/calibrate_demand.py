"""Calibrate each bundled city's demand: fixed time must run an hour without gridlock.

For each city and candidate peak volume, builds the scenario and runs SUMO's own fixed-time
programs on the first held-out seed, printing mean delay, teleports (share of inserted vehicles)
and vehicles never inserted. The target (issue #2): teleports < 1 %, nothing left waiting to
insert, and yet congestion that matters. Results go to docs/calibration.csv.

    python benchmarks/calibrate_demand.py --cities melbourne,paris --volumes 1000,1500,2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from leed_traffic.cities import resolve_city
from leed_traffic.controllers import FixedTime
from leed_traffic.evaluate import run_episode, write_csv_atomic
from leed_traffic.scenario import build_scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cities", default="helsinki,melbourne,paris,oslo,luxembourg,heidelberg")
    ap.add_argument("--volumes", default="", help="comma list of veh/h; default: the city's own")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/calibration.csv"))
    args = ap.parse_args()
    rows = []
    for city in args.cities.split(","):
        spec = resolve_city(city)
        volumes = [float(v) for v in args.volumes.split(",")] if args.volumes else [spec.demand.veh_per_hour]
        for vol in volumes:
            s = build_scenario(replace(spec, demand=replace(spec.demand, veh_per_hour=vol)))
            seed = s.eval_seeds[0] if args.seed is None else args.seed
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                r = run_episode(s, FixedTime(), seed, workdir=Path(tmp))
            inserted = max(r["vehicles"] - r["never_inserted"], 1)
            row = {"city": city, "veh_per_hour": vol, "agents": s.n_agents, "vehicles": r["vehicles"],
                   "mean_delay": round(r["mean_delay"], 1), "teleports": r["teleports"],
                   "teleport_pct": round(100 * r["teleports"] / inserted, 2),
                   "never_inserted": r["never_inserted"], "throughput": r["throughput"],
                   "wall_s": round(time.time() - t0, 1)}
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    if args.out.exists():
        old = pd.read_csv(args.out)
        df = pd.concat([old, df]).drop_duplicates(["city", "veh_per_hour"], keep="last")
    write_csv_atomic(df.sort_values(["city", "veh_per_hour"]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
