"""Training-loop throughput: IPPO and LEED training vs the env's own random-action stepping.

Issue goal: the training loop's simulated seconds per wall second >= 0.5x the environment's
random-action throughput on helsinki. Each repeat runs, back to back and each in a fresh
subprocess: the env with random actions (``bench_env``'s ``env`` worker: stepping loop only),
then ``leed_traffic.learn.train`` for every algorithm for ``--episodes`` full episodes with one
rollout worker. The training number is measured over the whole ``train()`` call (set-up, the
behaviour-cloning warm start, rollouts, PPO/LEED updates with DTW, resets, checkpoints) and, apart,
over the update loop only (``updates.csv``). The ratio is the median over repeats of the paired
ratio, as in bench_env. LEED uses max-pressure demonstrations (one round, cached in
``benchmarks/.cache``), so the embedded model's speed does not enter (see bench_demos for that).

    python benchmarks/bench_train.py --city helsinki --episodes 5 --repeats 2 --out docs/

Exits non-zero only when a run fails, never because the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_env  # noqa: E402
from common import (  # noqa: E402
    CACHE_DIR,
    DOCS_DIR,
    command_line,
    machine_info,
    markdown_table,
    print_result,
    run_result,
    write_section,
)

GOAL = 0.5
ALGOS = ("ippo", "leed")


def experiment(city: str, algo: str = "leed", episodes: int = 1, demos: str | None = None):
    """The benchmark's ExperimentConfig: sumo-rl's phase rule, no evaluation, no report."""
    from common import benchmark_config

    cfg = benchmark_config(city, eval_episodes=0, rounds=1,
                           settings={"train.algo": algo, "train.episodes": episodes, "demos.llm": "max-pressure"})
    if demos:
        cfg.demos.path = demos
    return cfg


def demos_for(city: str) -> Path:
    """Max-pressure demonstrations for ``city`` (one round), generated once into the cache."""
    from leed_traffic.pipeline import demonstrations, scenario_of

    cfg = experiment(city)
    out = CACHE_DIR / f"demos-{city}-max-pressure"
    demonstrations(cfg, scenario_of(cfg), out, say=print, progress=False)
    return out / "dataset"


def worker_train(spec: dict) -> dict:
    """One training run through the pipeline; the time measured is its training stage alone."""
    import pandas as pd

    from leed_traffic.pipeline import decisions_per_episode, run_experiment

    cfg = experiment(spec["city"], spec["algo"], spec["episodes"], spec["demos"])
    with tempfile.TemporaryDirectory(prefix="bench-train-") as d:
        c0 = time.process_time()
        res = run_experiment(cfg, Path(d) / "run", progress=False)
        wall, cpu = res.wall_s["train"], time.process_time() - c0
        up = pd.read_csv(res.run.updates_path)
        m = pd.read_csv(res.run.metrics_path)
    scen = res.scenario
    delta = cfg.env.delta_time or scen.delta_time
    sim = float(m["sim_time"].sum())
    # update loop only: each update's sim seconds / its wall seconds, pooled
    loop_wall = float((up["env_steps"].diff().fillna(up["env_steps"]) * delta / up["sim_s_per_wall_s"]).sum())
    return {"wall_s": wall, "cpu_s": cpu, "sim_s": sim, "loop_sim_s_per_s": sim / loop_wall,
            "n_agents": len(scen.agents), "env_steps": spec["episodes"] * decisions_per_episode(scen, cfg)}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    res = worker_train(spec)
    res["peak_rss_mb"] = bench_env._rss_mb()
    print_result(res)


def run_train(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {k: v for k, v in os.environ.items() if k != "LIBSUMO_AS_TRACI"}
    return run_result(cmd, timeout, env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--city", default="helsinki")
    p.add_argument("--episodes", type=int, default=5, help="training episodes per run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=str(DOCS_DIR))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    from leed_traffic.scenario import build_scenario

    t_start = time.time()
    scen = build_scenario(args.city)
    demos = demos_for(args.city)
    env_spec = bench_env.run_spec(scen, scen.end - scen.begin, scen.eval_seeds[0], scen.delta_time)
    rows: list[dict] = []
    failed = False
    for rep in range(args.repeats):
        env = bench_env.derive(bench_env.run_worker("env", env_spec, args.timeout))
        print(f"repeat {rep}: env {env.get('sim_s_per_s', 0):.0f} sim-s/s ({env['status']})", flush=True)
        failed |= env["status"] != "ok"
        for algo in ALGOS:
            r = run_train({"city": args.city, "algo": algo, "episodes": args.episodes, "demos": str(demos)},
                          args.timeout)
            failed |= r["status"] != "ok"
            if r["status"] == "ok" and env["status"] == "ok":
                r["sim_s_per_s"] = r["sim_s"] / r["wall_s"]
                r["ratio"] = r["sim_s_per_s"] / env["sim_s_per_s"]
                r["loop_ratio"] = r["loop_sim_s_per_s"] / env["sim_s_per_s"]
            rows.append({"repeat": rep, "algo": algo, "env_sim_s_per_s": env.get("sim_s_per_s"),
                         "env_peak_rss_mb": env.get("peak_rss_mb"), **r})
            print(f"  {algo}: {r.get('sim_s_per_s', 0):.0f} sim-s/s, ratio {r.get('ratio', float('nan')):.2f} "
                  f"({r['status']})", flush=True)

    table = []
    for algo in ALGOS:
        ok = [r for r in rows if r["algo"] == algo and "ratio" in r]
        if not ok:
            table.append([algo, "failed", "", "", "", "", "", ""])
            continue
        med = lambda k: statistics.median(r[k] for r in ok)  # noqa: E731
        ratio = med("ratio")
        table.append([algo, f"{med('sim_s_per_s'):.0f}", f"{med('env_sim_s_per_s'):.0f}", f"{ratio:.2f}",
                      f"{med('loop_ratio'):.2f}", f"{med('peak_rss_mb'):.0f}", f"{med('env_peak_rss_mb'):.0f}",
                      "met" if ratio >= GOAL else "**MISSED**"])
    info = machine_info(("leed-traffic", "eclipse-sumo", "libsumo", "torch", "numpy"))
    body = "\n".join([
        f"Generated by `{command_line()}` ({(time.time() - t_start) / 60:.0f} min). Machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        f"{args.city} ({len(scen.agents)} agents, {scen.delta_time} s decisions), {args.episodes} full "
        f"episodes per training run, 1 rollout worker, {args.repeats} repeat(s); LEED with max-pressure "
        "demonstrations. Training = the whole `train()` call (set-up, BC warm start, rollouts, updates, "
        "DTW, checkpoints); \"loop only\" = the update loop from updates.csv. Env = random actions, "
        "stepping loop only (bench_env). Ratios: median over repeats of the paired ratio.",
        "",
        markdown_table(["algo", "train sim-s/s", "env random sim-s/s", "ratio (whole run)", "ratio (loop only)",
                        "peak RSS train (MB)", "peak RSS env (MB)", f"goal ≥ {GOAL}"], table),
    ])
    write_section(Path(args.out) / "benchmarks.md", "Training-loop throughput", body)
    import csv

    keys = sorted({k for r in rows for k in r})
    with open(Path(args.out) / "bench_train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
