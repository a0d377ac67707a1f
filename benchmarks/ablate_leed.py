"""LEED ablations: which expert-weight form, warm start, reward and entropy settings work best.

Each *variant* is a named set of ``TrainConfig`` overrides (and optionally env options such as the
reward) on top of an algorithm and a demonstrator. Every (variant, seed) is trained to the same
budget, then its final policy is evaluated on the scenario's held-out seeds, sampled and argmax,
with the package's evaluation path. Results: ``<runs>/ablation.csv`` (one row per run) and a
``##`` section in ``docs/learning.md`` (mean ± std over seeds per variant).

    python benchmarks/ablate_leed.py --city cologne8 --variants similarity,distance,annealed,constant,no-warm-start \\
        --seeds 0,1,2 --episodes 60 --eval-episodes 5 --jobs 2

Resumable like bench_learning: finished runs and evaluations are skipped. Each run is its own
subprocess (libsumo allows one simulation per process). Exit status is non-zero only when a run
fails, never because a variant is worse.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# name -> settings (SECTION.FIELD = value) over the benchmark defaults (common.benchmark_config)
MP = {"train.algo": "leed", "demos.llm": "max-pressure"}
VARIANTS: dict[str, dict[str, Any]] = {
    "ippo": {"train.algo": "ippo"},
    "similarity": {**MP, "train.expert_weight_mode": "similarity"},
    "distance": {**MP, "train.expert_weight_mode": "distance"},
    "annealed": {**MP, "train.expert_weight_mode": "annealed"},
    "constant": {**MP, "train.expert_weight_mode": "constant"},
    "similarity-no-decay": {**MP, "train.expert_return_decay": False},
    "no-warm-start": {**MP, "train.bc_pretrain_steps": 0},
    "reled": {**MP, "train.algo": "reled"},
    "ent0": {**MP, "train.ent_coef": 0.0},
    "ippo-queue": {"train.algo": "ippo", "env.reward": "queue"},
    "leed-queue": {**MP, "env.reward": "queue"},
    "leed-queue-ent0": {**MP, "train.ent_coef": 0.0, "env.reward": "queue"},
    "ippo-queue-ent0": {"train.algo": "ippo", "train.ent_coef": 0.0, "env.reward": "queue"},
    "leed-pressure-obs": {**MP, "env.observation": "pressure"},
    "ippo-maxgreen": {"train.algo": "ippo", "env.enforce_max_green": True},
    "leed-maxgreen": {**MP, "env.enforce_max_green": True},
}


def experiment(task: dict[str, Any]):
    """The variant's ExperimentConfig: the command line's env options, then the variant's settings."""
    cfg = common.benchmark_config(task["city"], eval_episodes=task["eval_episodes"], reward=task.get("reward"),
                                  enforce_max_green=task.get("enforce_max_green", False),
                                  rounds=task["demo_rounds"], seed=int(task["seed"]),
                                  settings=VARIANTS[task["variant"]])
    cfg.eval.controllers = ()
    cfg.train.episodes = task["episodes"]
    cfg.train.extra = {"benchmark": "ablate_leed", "variant": task["variant"]}
    return cfg


def _demos_key(cfg) -> str:
    env = {k: v for k, v in cfg.env.options().items() if k != "seconds"}
    return cfg.demos.llm + "".join(f"-{k}={v}" for k, v in sorted(env.items()))


def make_demos(task: dict[str, Any]) -> Path:
    """The variant's demonstrations (shared by every variant with the same demonstrator and env)."""
    from leed_traffic.pipeline import demonstrations, scenario_of

    cfg = experiment({**task, "seed": 0})
    ddir = Path(task["runs"]) / task["city"] / f"demos-{_demos_key(cfg)}"
    demonstrations(cfg, scenario_of(cfg), ddir, say=print, progress=False)
    return ddir / "dataset"


def uses_demos(task: dict[str, Any]) -> bool:
    from leed_traffic.learn.algos import get_algorithm

    return get_algorithm(experiment(task).train.algo).uses_demos


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one variant/seed and evaluate its final policy (``pipeline.run_experiment``)."""
    import pandas as pd

    from leed_traffic.pipeline import run_experiment

    cfg = experiment(task)
    if uses_demos(task):
        cfg.demos.path = str(make_demos(task))
    rd = Path(task["runs"]) / task["city"] / f"{task['variant']}-s{task['seed']}"
    res = run_experiment(cfg, rd, progress=False)
    df = res.evaluation
    sampled = df[~df["controller"].str.endswith("-argmax")]
    argmax = df[df["controller"].str.endswith("-argmax")]
    m = pd.read_csv(res.run.metrics_path)
    tail = max(1, len(m) // 10)
    return {
        "variant": task["variant"], "seed": task["seed"], "episodes": task["episodes"],
        "delay": float(sampled["mean_delay"].mean()), "delay_argmax": float(argmax["mean_delay"].mean()),
        "never_inserted": float(sampled["never_inserted"].mean()),
        "final_train_delay": float(m["mean_delay"].tail(tail).mean()),
        "final_expert_weight": float(m["expert_weight"].tail(tail).mean()),
        "train_wall_s": round(res.wall_s.get("train", 0.0), 1),
    }


def _demos_worker(task: dict[str, Any]) -> str:
    make_demos(task)
    return task["variant"]


def _worker(task: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **run_one(task)}
    except Exception:  # noqa: BLE001 - reported in the summary and the exit status
        return {"ok": False, "variant": task["variant"], "seed": task["seed"], "error": traceback.format_exc()}


def report(rows: list[dict[str, Any]], args: argparse.Namespace, env: dict[str, Any]) -> str:
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r.get("ok")])
    lines = [
        f"Generated by `{common.command_line()}`. Machine: "
        + ", ".join(f"{k} {v}" for k, v in common.machine_info(("leed-traffic", "libsumo", "torch")).items())
        + ".", "",
        f"{args.city}, {args.episodes} training episodes per run"
        + (f", env options for every variant: {', '.join(f'{k}={v}' for k, v in env.items())}" if env else "")
        + ", final policy evaluated over "
        f"{args.eval_episodes} held-out episodes (sampled; argmax beside it); mean ± std over seeds "
        f"{args.seeds}. Variants: `benchmarks/ablate_leed.py` VARIANTS (overrides of TrainConfig's "
        "defaults and env options).", "",
    ]
    table = []
    for v in args.variants.split(","):
        d = df[df["variant"] == v] if len(df) else df
        if not len(d):
            table.append([v, "failed", "", "", "", "", "0"])
            continue
        what = ", ".join(f"{k}={x}" for k, x in VARIANTS[v].items())
        table.append([
            v, what,
            f"{d['delay'].mean():.1f} ± {d['delay'].std(ddof=0):.1f}",
            f"{d['delay_argmax'].mean():.1f} ± {d['delay_argmax'].std(ddof=0):.1f}",
            f"{d['final_train_delay'].mean():.1f}",
            f"{d['final_expert_weight'].mean():.2f}",
            str(len(d)),
        ])
    lines.append(common.markdown_table(
        ["variant", "settings", "delay s/veh (sampled)", "argmax", "final train delay", "final w", "seeds"],
        table, "llrrrrr"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--city", default="cologne8")
    p.add_argument("--variants", default="ippo,similarity,distance,annealed,constant,no-warm-start")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--demo-rounds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--reward", default=None, help="env reward for every variant (default: the env's)")
    p.add_argument("--enforce-max-green", action="store_true", help="enforce max green in every variant")
    p.add_argument("--runs", default="runs/ablation")
    p.add_argument("--out", default=str(common.DOCS_DIR))
    p.add_argument("--section", default=None, help="## title in docs/learning.md")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    env = {**({"reward": args.reward} if args.reward else {}),
           **({"enforce_max_green": True} if args.enforce_max_green else {})}
    tasks = [{"variant": v, "seed": s, "city": args.city, "episodes": args.episodes, "runs": args.runs,
              "eval_episodes": args.eval_episodes, "demo_rounds": args.demo_rounds, **env}
             for s in seeds for v in args.variants.split(",")]
    # demonstrations are shared between variants: make each dataset once before the parallel runs
    first: dict[str, dict] = {}
    for t in tasks:
        if uses_demos(t):
            first.setdefault(_demos_key(experiment(t)), t)
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = []
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        pool.map(_demos_worker, list(first.values()), chunksize=1)
        for r in pool.imap_unordered(_worker, tasks, chunksize=1):
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "error"}), flush=True)
    for r in rows:
        if not r.get("ok"):
            print(f"FAILED {r['variant']} seed {r['seed']}:\n{r['error']}", file=sys.stderr)
    import pandas as pd

    Path(args.runs).mkdir(parents=True, exist_ok=True)
    pd.DataFrame([r for r in rows if r.get("ok")]).to_csv(Path(args.runs) / f"ablation-{args.city}.csv", index=False)
    title = args.section or f"Ablation: {args.city}, {args.episodes} episodes"
    common.write_section(Path(args.out) / "learning.md", title, report(rows, args, env), doc_title="# Learning results")
    return 1 if any(not r.get("ok") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
