"""Large cities (issue 13): the environment's cost per agent-step from ~25 to ~1,000 agents.

For every scenario, a raw-SUMO run and an environment run (and, with ``--baseline DIR``, the
environment of another checkout, e.g. the code before an optimisation) each run ONE episode in a
fresh subprocess, and each records its clock twice: when the simulation reaches ``--split``
seconds (600: the light-traffic start of the hour) and at the end of the episode. So the
"first 600 s" and "full episode" numbers come from the same runs.

* ``raw``: ``libsumo.start`` with exactly the env's SUMO command and one ``simulationStep()``
  per simulated second; the lights run their own programs. What SUMO costs by itself.
* ``env``: ``LeedTrafficEnv`` (``make_env``'s environment), default observation and reward,
  the scenario's delta_time, a random action for every agent at every decision.

Reported per window: env / raw (raw wall / env wall; also with CPU time, which another job on the
machine disturbs less), microseconds per agent-step of the env (wall / (decisions x agents)) and
its own overhead per agent-step ((env wall - raw wall) / agent-steps). Scenarios: bundled cities
by name, ``grid:NxM`` synthetic grids (netgenerate, ``cities.grid_spec``); ``CITY@SECONDS`` runs a
shorter episode for that city (``--seconds`` for all).

    python benchmarks/bench_large.py --cities grid:5x5,helsinki,grid:10x10,grid:20x20,washington-dc,grid:32x32 \\
        --out docs/

Writes ``docs/bench_large.csv`` and the "Large cities" section of ``docs/benchmarks.md``. Exits
non-zero only when a run fails, never because a goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    command_line, machine_info, markdown_table, median, print_result, run_result, write_section,
)

SECTION = "Large cities"
DEFAULT_CITIES = "grid:5x5,helsinki,grid:10x10,grid:20x20,washington-dc,grid:32x32"
GOALS = {"ratio_full": 0.5, "ratio_split": 0.3, "growth": 1.5}
"""Issue 13: env >= 0.5x raw libsumo at ~1,000 agents over a full episode, >= 0.3x in the first
600 s; cost per agent-step grows <= 1.5x from 35 to 1,000 agents."""


def spec_for(city: str, seed: int, seconds: int | None) -> dict:
    import types

    from leed_traffic.env import EnvConfig, LeedTrafficEnv
    from leed_traffic.scenario import build_scenario

    from leed_traffic.scenario import Scenario

    t0 = time.perf_counter()
    # a folder with a scenario.json (e.g. a partial build) is used as it is
    scen = Scenario.load(city) if (Path(city) / "scenario.json").is_file() else build_scenario(city)
    build_s = time.perf_counter() - t0
    end = scen.end if not seconds else min(scen.begin + seconds, scen.end)
    cfg = EnvConfig(seconds=end - scen.begin, seed=seed)
    fake = types.SimpleNamespace(scenario=scen, begin=scen.begin, end=end, config=cfg)
    return {"city": city, "name": scen.city, "dir": str(scen.dir), "begin": scen.begin, "end": end,
            "seconds": end - scen.begin, "seed": seed, "agents": scen.n_agents,
            "sumo_cmd": LeedTrafficEnv.sumo_command(fake, seed), "build_or_load_s": build_s}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def worker_raw(spec: dict, split: int) -> dict:
    import libsumo

    libsumo.start(spec["sumo_cmd"])
    out: dict = {}
    w0, c0 = _clock()
    for k in range(1, int(spec["seconds"]) + 1):
        libsumo.simulationStep()
        if k == split:
            w, c = _clock()
            out["split"] = {"wall_s": w - w0, "cpu_s": c - c0, "vehicles": libsumo.vehicle.getIDCount()}
    w, c = _clock()
    out["full"] = {"wall_s": w - w0, "cpu_s": c - c0, "vehicles": libsumo.vehicle.getIDCount()}
    out["inserted"] = float(libsumo.simulation.getParameter("", "stats.vehicles.inserted"))
    libsumo.close()
    return out


def worker_env(spec: dict, split: int) -> dict:
    import numpy as np

    from leed_traffic.env import EnvConfig, LeedTrafficEnv
    from leed_traffic.scenario import Scenario

    scen = Scenario.load(spec["dir"])
    env = LeedTrafficEnv(scen, EnvConfig(seconds=spec["seconds"], seed=spec["seed"]))
    assert env.sumo_command(spec["seed"]) == spec["sumo_cmd"], "raw and env SUMO commands differ"
    env.reset(seed=spec["seed"])
    # time spent inside SUMO (simulationStep) during the run, to tell the env's own cost apart
    # from the simulation's without relying on the separate raw run (whose traffic differs:
    # fixed-time programs instead of random actions)
    inside = [0.0, 0.0]
    step = env.sim.simulationStep

    def timed_step(*a):
        w, c = _clock()
        step(*a)
        w2, c2 = _clock()
        inside[0] += w2 - w
        inside[1] += c2 - c

    env.sim.simulationStep = timed_step
    agents = list(env.agents)
    nvec = np.array([env.action_space(a).n for a in agents])
    rng = np.random.default_rng(spec["seed"])
    out: dict = {"n_agents": len(agents)}
    decisions = 0
    w0, c0 = _clock()
    while env.agents:
        env.step(dict(zip(agents, rng.integers(0, nvec).tolist())))
        decisions += 1
        if "split" not in out and env.sim_time - spec["begin"] >= split:
            w, c = _clock()
            out["split"] = {"wall_s": w - w0, "cpu_s": c - c0, "decisions": decisions,
                            "vehicles": env.sim.vehicle.getIDCount(), "sumo_wall_s": inside[0], "sumo_cpu_s": inside[1]}
    w, c = _clock()
    out["full"] = {"wall_s": w - w0, "cpu_s": c - c0, "decisions": decisions,
                   "vehicles": env.sim.vehicle.getIDCount(), "sumo_wall_s": inside[0], "sumo_cpu_s": inside[1]}
    env.sim.simulationStep = step
    env.close()
    return out


WORKERS = {"raw": worker_raw, "env": worker_env, "baseline": worker_env}


def run_worker(mode: str, spec: dict, split: int, timeout: float, baseline: str | None) -> dict:
    env = dict(os.environ)
    env.pop("LIBSUMO_AS_TRACI", None)
    if mode == "baseline":  # another checkout's leed_traffic package first on the path
        env["PYTHONPATH"] = os.pathsep.join([baseline, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--split", str(split),
           "--spec", json.dumps(spec)]
    return run_result(cmd, timeout, env)


def rows_of(spec: dict, runs: dict[str, list[dict]], split: int) -> list[dict]:
    rows = []
    for window in ("split", "full"):
        if window == "split" and split >= spec["seconds"]:
            continue
        for mode in [m for m in ("env", "baseline") if m in runs]:
            pairs = [(r, e) for r, e in zip(runs["raw"], runs[mode])
                     if r.get("status") == "ok" and e.get("status") == "ok" and window in r and window in e]
            if not pairs:
                rows.append({"city": spec["name"], "mode": mode, "window": window, "status": "failed"})
                continue
            n = spec["agents"]
            steps = [e[window]["decisions"] * n for _, e in pairs]
            rows.append({
                "city": spec["name"], "mode": mode, "agents": n,
                "window": f"first {split} s" if window == "split" else f"full {spec['seconds']} s",
                "raw_wall_s": round(median([r[window]["wall_s"] for r, _ in pairs]), 2),
                "env_wall_s": round(median([e[window]["wall_s"] for _, e in pairs]), 2),
                "ratio": round(median([r[window]["wall_s"] / e[window]["wall_s"] for r, e in pairs]), 3),
                "ratio_cpu": round(median([r[window]["cpu_s"] / e[window]["cpu_s"] for r, e in pairs]), 3),
                "us_per_agent_step": round(median([1e6 * e[window]["wall_s"] / s for (_, e), s in zip(pairs, steps)]), 1),
                "cpu_us_per_agent_step": round(median([1e6 * e[window]["cpu_s"] / s for (_, e), s in zip(pairs, steps)]), 1),
                "overhead_us_per_agent_step": round(median(
                    [1e6 * (e[window]["wall_s"] - r[window]["wall_s"]) / s for (r, e), s in zip(pairs, steps)]), 1),
                "own_us_per_agent_step": round(median(
                    [1e6 * (e[window]["wall_s"] - e[window]["sumo_wall_s"]) / s for (_, e), s in zip(pairs, steps)]), 2),
                "own_cpu_us_per_agent_step": round(median(
                    [1e6 * (e[window]["cpu_s"] - e[window]["sumo_cpu_s"]) / s for (_, e), s in zip(pairs, steps)]), 2),
                "sumo_share_in_env_cpu": round(median([e[window]["sumo_cpu_s"] / e[window]["cpu_s"] for _, e in pairs]), 3),
                "overhead_cpu_us_per_agent_step": round(median(
                    [1e6 * (e[window]["cpu_s"] - r[window]["cpu_s"]) / s for (r, e), s in zip(pairs, steps)]), 1),
                "vehicles_running": pairs[0][1][window]["vehicles"],
                "repeats": len(pairs), "status": "ok",
            })
    return rows


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """This run's rows, after the rows already in ``path`` that it does not replace (same city,
    code, window and run), so cities and windows can be measured in several runs (e.g. a city's
    first 1,200 s against a baseline, another day its full hour) and each row keeps the run
    (date, cpu) that measured it; numbers read back are converted back."""
    if not path.exists():
        return rows
    key = lambda r: (r.get("city"), r.get("mode"), r.get("window"), r.get("run"))  # noqa: E731
    mine = {key(r) for r in rows}
    kept = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if key(r) in mine:
                continue
            for k, v in list(r.items()):
                try:
                    r[k] = int(v) if k in ("agents", "vehicles_running", "repeats") else float(v) if k not in (
                        "city", "mode", "window", "status", "run") else v
                except (TypeError, ValueError):
                    pass
            kept.append(r)
    order = {c: k for k, c in enumerate(dict.fromkeys([r["city"] for r in kept] + [r["city"] for r in rows]))}
    return sorted(kept + rows, key=lambda r: (int(r.get("agents") or 0), order[r["city"]]))


def render(rows: list[dict], info: dict, cmd: str, total_s: float, builds: dict[str, float], split: int) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    header = ["city", "agents", "run", "code", "window", "raw s (wall)", "env s (wall)", "env / raw (wall)",
              "env / raw (CPU)", "µs / agent-step (wall)", "µs / agent-step (CPU)",
              "env's own µs / agent-step (CPU)", "SUMO share of env CPU", "vehicles running"]
    table = markdown_table(header, [[
        r["city"], str(r["agents"]), r.get("run", ""), "before" if r["mode"] == "baseline" else "this", r["window"],
        f"{r['raw_wall_s']:.1f}", f"{r['env_wall_s']:.1f}", f"{r['ratio']:.2f}", f"{r['ratio_cpu']:.2f}",
        f"{r['us_per_agent_step']:.1f}", f"{r['cpu_us_per_agent_step']:.1f}", f"{r['own_cpu_us_per_agent_step']:.2f}",
        f"{r['sumo_share_in_env_cpu']:.2f}", str(r["vehicles_running"]),
    ] for r in ok], align="lrlllrrrrrrrrr")
    lines = [
        "Generated by `benchmarks/bench_large.py`; do not edit by hand (re-run the command).", "",
        f"Command (total {total_s / 60:.1f} min):", "", "```", cmd, "```", "",
        "Machine and versions (of the last run or re-render; each row's *run* says where it was measured):", "",
        *[f"- {k}: {v}" for k, v in info.items()], "",
        f"Each scenario: one raw-SUMO run and one env run (random actions, default observation and reward), "
        "each a whole episode in a fresh subprocess, clocks read at the end of the early window (--split: "
        f"{split} s unless the window says otherwise) and at the end of the episode (a run's two windows come from "
        "the same runs). *env's own µs / agent-step*: the env run's CPU time outside "
        "SUMO's `simulationStep` per agent and decision (what the environment itself costs; it does not depend on "
        "the raw run, whose traffic differs: fixed-time programs instead of random actions). On a shared "
        "machine wall times are not comparable between runs; CPU times are the steadier measure. *run*: the day "
        "and cpu of the run that measured the row; ratios and growth below pair rows of the same day and cpu only.", "", table, "",
    ]
    if builds:
        lines += ["Scenario build or load time in this run (s; a cached build loads in about a second): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in builds.items()), ""]
    big = [r for r in ok if r["mode"] == "env" and r["agents"] >= 900]
    small = [r for r in ok if r["mode"] == "env" and 30 <= r["agents"] <= 40]
    if big:
        for r in big:
            if r["window"] == f"first {split} s":
                goal = GOALS["ratio_split"]
            elif r["window"].startswith("full"):
                goal = GOALS["ratio_full"]
            else:  # another early window (a run with another --split): shown in the table only
                continue
            lines.append(f"- {r['city']} ({r['agents']} agents), {r['window']} ({r.get('run', '')}): env / raw {r['ratio']:.2f} wall, "
                         f"{r['ratio_cpu']:.2f} CPU; goal ≥ {goal}: wall {'met' if r['ratio'] >= goal else 'missed'}, "
                         f"CPU {'met' if r['ratio_cpu'] >= goal else 'missed'}.")
    if big and small:
        for s in small:  # the same window of the same run at both sizes, or no comparison
            window = s["window"]
            b = next((r for r in big if r["window"] == window and r.get("run") == s.get("run")), None)
            if b:
                for key, what in (("us_per_agent_step", "wall"), ("cpu_us_per_agent_step", "CPU"),
                                  ("own_cpu_us_per_agent_step", "env's own, CPU")):
                    g = b[key] / s[key]
                    lines.append(f"- µs per agent-step ({what}), {window} window ({s.get('run', '')}): {s[key]:.1f} at {s['agents']} "
                                 f"agents ({s['city']}) → {b[key]:.1f} at {b['agents']} ({b['city']}): ×{g:.2f}; "
                                 f"goal ≤ ×{GOALS['growth']}: {'met' if g <= GOALS['growth'] else 'missed'}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cities", default=DEFAULT_CITIES)
    p.add_argument("--seconds", type=int, default=None, help="episode length (default: the scenario's hour)")
    p.add_argument("--split", type=int, default=600, help="the early window, simulated seconds")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    p.add_argument("--baseline", default=None, help="folder holding another leed_traffic package to compare")
    p.add_argument("--baseline-cities", default=None, help="run the baseline only on these cities (default: all)")
    p.add_argument("--out", default=None, help="folder for bench_large.csv (and benchmarks.md's section)")
    p.add_argument("--notes", default=None, help="a markdown file appended to the section (hand-written reading)")
    p.add_argument("--render-only", action="store_true", help="rewrite the section from --out's CSV, run nothing")
    p.add_argument("--as-command", default=None, help="with --render-only: the command lines that measured the CSV")
    p.add_argument("--total-min", type=float, default=0.0, help="with --render-only: their total minutes")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = WORKERS[args.worker](json.loads(args.spec), args.split)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print_result(res)
        return 0

    t_start = time.time()
    info = machine_info()
    if args.render_only and args.out:
        write_out(Path(args.out), [], info, args.total_min * 60, {}, args.split, args.notes, args.as_command)
        return 0
    run_label = f"{info['date'][:10]}, {info['cpu']}"
    modes = ["raw", "env"] + (["baseline"] if args.baseline else [])
    rows, builds, failed = [], {}, False
    only_baseline = {c.strip() for c in (args.baseline_cities or "").split(",") if c.strip()}
    for item in [c.strip() for c in args.cities.split(",") if c.strip()]:
        city, _, secs = item.partition("@")  # "grid:32x32@1200": a shorter episode for that city
        spec = spec_for(city, args.seed, int(secs) if secs else args.seconds)
        builds[spec["name"]] = spec["build_or_load_s"]
        city_modes = [m for m in modes if m != "baseline" or not only_baseline or city in only_baseline]
        runs: dict[str, list[dict]] = {m: [] for m in city_modes}
        for rep in range(args.repeats):
            for mode in city_modes:
                r = run_worker(mode, spec, args.split, args.timeout, args.baseline)
                runs[mode].append(r)
                if r.get("status") != "ok":
                    failed = True
                shown = {w: {k: round(v, 2) for k, v in r[w].items()} for w in ("split", "full") if w in r}
                print(f"{spec['name']} ({spec['agents']} agents) {mode} #{rep}: {r.get('status')} {shown}", flush=True)
        new = [{**r, "run": run_label} for r in rows_of(spec, runs, args.split)]
        rows += new
        for r in new:
            if r.get("status") == "ok":
                print(f"  {r['mode']:8s} {r['window']:14s} env/raw {r['ratio']:.3f} (cpu {r['ratio_cpu']:.3f}) "
                      f"{r['us_per_agent_step']:.1f} us/agent-step, overhead {r['overhead_us_per_agent_step']:.1f}",
                      flush=True)
        if args.out:  # after every city: a long run interrupted keeps what it measured
            write_out(Path(args.out), rows, info, time.time() - t_start, builds, args.split, args.notes)
    return 1 if failed else 0


def write_out(out: Path, rows: list[dict], info: dict, total_s: float, builds: dict, split: int,
              notes: str | None = None, as_command: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = merge_rows(out / "bench_large.csv", rows)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "bench_large.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    body = render(rows, info, as_command or command_line(), total_s, builds, split)
    if notes:
        body += "\n\n" + Path(notes).read_text().strip()
    write_section(out / "benchmarks.md", SECTION, body)


if __name__ == "__main__":
    sys.exit(main())
