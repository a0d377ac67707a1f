"""Large cities end to end (issue 13): build, train and evaluate synthetic grids from 25 to 1,024
signalized intersections, and the learner's update time per agent as the city grows.

Each city runs the pipeline the CLI runs (``leed_traffic.pipeline.run_experiment``, as
``leed-traffic train``) in a fresh subprocess (its peak RSS its own): ``--episodes`` training
episodes of ``--seconds`` simulated seconds, then ``--eval-episodes`` held-out episodes of the final
policy and of fixed time. Demand: ``--veh-per-agent`` vehicles per hour per intersection at the
peak (the same load per junction at every size). The updates log (``updates.csv``) gives each
update's rollout and optimisation wall time (``collect_s``, ``optimize_s``); the learner's update
time per agent is ``optimize_s / agents``, and per agent-sample ``optimize_s / (agents x samples)``.

    python benchmarks/bench_large_train.py --cities grid-5x5,grid-10x10,grid-20x20,grid-32x32 --out docs

Issue 13 goal: a 1,000-intersection city trains 10 episodes end to end, with the learner's update
time per agent flat as agents grow. Exits non-zero only when a run fails, never because a goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CACHE_DIR,
    DOCS_DIR,
    benchmark_config,
    command_line,
    load_average,
    machine_info,
    markdown_table,
    print_result,
    run_result,
    write_section,
)

SECTION = "Large cities end to end"
FIELDS = ("city", "agents", "veh_per_hour", "algo", "episodes", "env_steps", "build_s", "train_s", "eval_s",
          "updates", "collect_s", "optimize_s", "optimize_ms_per_agent", "optimize_us_per_agent_sample",
          "policy_delay", "fixed_delay", "peak_rss_mb")


def worker(spec: dict) -> None:
    """Build, train and evaluate one city; print its measurements as the result line."""
    import pandas as pd

    from leed_traffic.pipeline import run_experiment, scenario_of

    cfg = benchmark_config(spec["city"], eval_episodes=spec["eval_episodes"], seconds=spec["seconds"],
                           enforce_max_green=True, seed=0)
    cfg.scenario.veh_per_hour = spec["veh_per_hour"]
    cfg.train.algo, cfg.train.episodes = spec["algo"], spec["episodes"]
    cfg.train.extra = {"benchmark": "bench_large_train"}
    cfg.eval.controllers = ("fixed",)
    cfg.eval.validation_episodes = 0  # the deployed mode is the default (sampled): no extra episodes
    t0 = time.time()
    scenario = scenario_of(cfg)
    build_s = time.time() - t0
    res = run_experiment(cfg, Path(spec["runs"]) / spec["city"], progress=False)
    upd = pd.read_csv(res.run.path / "updates.csv")
    agents = len(scenario.agents)
    delays = {}
    metrics = res.run.evaluation_dir / "metrics.csv"
    if metrics.exists():
        ev = pd.read_csv(metrics)
        delays = ev.groupby("controller")["mean_delay"].mean().to_dict()
    per_update_steps = upd["env_steps"].diff().fillna(upd["env_steps"].iloc[0])
    opt = upd["optimize_s"]
    print_result({
        "agents": agents, "env_steps": int(upd["env_steps"].iloc[-1]), "updates": len(upd), "build_s": build_s,
        "train_s": res.wall_s.get("train", float("nan")), "eval_s": res.wall_s.get("eval", float("nan")),
        "collect_s": float(upd["collect_s"].sum()), "optimize_s": float(opt.sum()),
        "optimize_ms_per_agent": float((opt / agents).mean() * 1e3),
        "optimize_us_per_agent_sample": float((opt / (agents * per_update_steps)).mean() * 1e6),
        "policy_delay": next((v for k, v in delays.items() if k != "fixed"), float("nan")),
        "fixed_delay": delays.get("fixed", float("nan")),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    })


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cities", default="grid-5x5,grid-10x10,grid-20x20,grid-32x32")
    p.add_argument("--veh-per-agent", type=float, default=31.25,
                   help="peak veh/h per signalized intersection (32,000 veh/h on the 32x32 grid)")
    p.add_argument("--algo", default="ippo")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seconds", type=int, default=900, help="episode length (simulated s)")
    p.add_argument("--eval-episodes", type=int, default=1)
    p.add_argument("--runs", type=Path, default=CACHE_DIR / "large-train")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--out", type=Path, default=DOCS_DIR)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    from leed_traffic.cities import resolve_city

    info = machine_info(("leed-traffic", "eclipse-sumo", "libsumo", "torch"))
    load0 = load_average()
    t_start = time.time()
    rows, failed = [], []
    for city in args.cities.split(","):
        cols, rows_ = resolve_city(city).grid
        agents = cols * rows_
        spec = {"city": city, "veh_per_hour": round(args.veh_per_agent * agents), "algo": args.algo,
                "episodes": args.episodes, "seconds": args.seconds, "eval_episodes": args.eval_episodes,
                "runs": str(args.runs)}
        res = run_result([sys.executable, __file__, "--worker", json.dumps(spec)], timeout=args.timeout)
        print(f"{city}: {res}", flush=True)
        if res["status"] != "ok":
            failed.append(f"{city}: {res['status']}")
            continue
        rows.append({"city": city, "veh_per_hour": spec["veh_per_hour"], "algo": args.algo,
                     "episodes": args.episodes, **{k: res[k] for k in FIELDS if k in res}})
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "bench_large_train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    load1 = load_average()
    write_section(args.out / "benchmarks.md", SECTION, section(args, rows, failed, info, load0, load1,
                                                               time.time() - t_start))
    print(f"wrote {args.out / 'bench_large_train.csv'} and the '{SECTION}' section of {args.out / 'benchmarks.md'}")
    return 1 if failed else 0


def section(args, rows: list[dict], failed: list[str], info: dict, load0: str, load1: str, wall: float) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    head = ["city", "agents", "veh/h", "env steps", "build (s)", "train (s)", "eval (s)", "updates",
            "rollout (s)", "optimise (s)", "optimise ms / agent / update", "optimise µs / agent-sample",
            f"{args.algo} delay (s)", "fixed delay (s)", "peak RSS (MB)"]
    table = [[r["city"], str(r["agents"]), str(r["veh_per_hour"]), str(r["env_steps"]), f"{r['build_s']:.0f}",
              f"{r['train_s']:.0f}", f"{r['eval_s']:.0f}", str(r["updates"]), f"{r['collect_s']:.0f}",
              f"{r['optimize_s']:.0f}", f"{r['optimize_ms_per_agent']:.2f}",
              f"{r['optimize_us_per_agent_sample']:.2f}", f"{r['policy_delay']:.1f}", f"{r['fixed_delay']:.1f}",
              f"{r['peak_rss_mb']:.0f}"] for r in rows]
    goals = []
    big = [r for r in rows if r["agents"] >= 1000]
    goals.append("a ≥ 1,000-intersection city trains {} episodes end to end: {}".format(
        args.episodes, "met" if big and all(r["episodes"] >= 10 for r in big) else "**not shown**"))
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        growth = large["optimize_us_per_agent_sample"] / small["optimize_us_per_agent_sample"]
        goals.append(f"optimisation time per agent-sample {small['agents']} → {large['agents']} agents "
                     f"{small['optimize_us_per_agent_sample']:.2f} → {large['optimize_us_per_agent_sample']:.2f} µs "
                     f"(×{growth:.2f}; flat read as ≤ ×1.5: {'met' if growth <= 1.5 else '**MISSED**'})")
    return f"""Generated by `{command_line()}` ({wall / 60:.0f} min). Machine: {machine}, load average at start {load0}, at the end {load1}.

Synthetic grids (netgenerate, 100 m blocks, a light on every junction) at {args.veh_per_agent:g} veh/h per
intersection; {args.algo}, shared phase policy, max green enforced, seed 0, {args.episodes} training episodes of
{args.seconds} s, then {args.eval_episodes} held-out episode(s) of the final policy (sampled) and of fixed time
(honest mean delay: never-inserted vehicles charged). Each city runs `leed_traffic.pipeline.run_experiment`
(what `leed-traffic train` runs) in a fresh process; build = the scenario's build or cache hit. Rollout and
optimise = the sums over the updates of `collect_s` and `optimize_s` in the run's updates.csv; "per agent"
divides each update's optimisation time by the agents, "per agent-sample" also by that update's env steps.
A single seed and a single held-out episode: the delays show that the runs finish and act, not how well
they control. Full rows: `docs/bench_large_train.csv`.

{markdown_table(head, table)}

Goals (issue 13): {'; '.join(goals)}.
{'' if not failed else chr(10) + 'Failed: ' + '; '.join(failed)}"""


if __name__ == "__main__":
    sys.exit(main())
