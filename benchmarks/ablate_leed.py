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
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# name -> (algo, demonstrator or None, TrainConfig overrides, env options)
VARIANTS: dict[str, tuple[str, str | None, dict[str, Any], dict[str, Any]]] = {
    "ippo": ("ippo", None, {}, {}),
    "similarity": ("leed", "max-pressure", {"expert_weight_mode": "similarity"}, {}),
    "distance": ("leed", "max-pressure", {"expert_weight_mode": "distance"}, {}),
    "annealed": ("leed", "max-pressure", {"expert_weight_mode": "annealed"}, {}),
    "constant": ("leed", "max-pressure", {"expert_weight_mode": "constant"}, {}),
    "similarity-no-decay": ("leed", "max-pressure", {"expert_return_decay": False}, {}),
    "no-warm-start": ("leed", "max-pressure", {"bc_pretrain_steps": 0}, {}),
    "reled": ("leed", "max-pressure", {"reled": True}, {}),
    "ent0": ("leed", "max-pressure", {"ent_coef": 0.0}, {}),
    "ippo-queue": ("ippo", None, {}, {"reward": "queue"}),
    "leed-queue": ("leed", "max-pressure", {}, {"reward": "queue"}),
    "leed-queue-ent0": ("leed", "max-pressure", {"ent_coef": 0.0}, {"reward": "queue"}),
    "ippo-queue-ent0": ("ippo", None, {"ent_coef": 0.0}, {"reward": "queue"}),
    "leed-pressure-obs": ("leed", "max-pressure", {}, {"observation": "pressure"}),
    "ippo-maxgreen": ("ippo", None, {}, {"enforce_max_green": True}),
    "leed-maxgreen": ("leed", "max-pressure", {}, {"enforce_max_green": True}),
}


def _demos_key(llm: str, env: dict[str, Any]) -> str:
    return llm + "".join(f"-{k}={v}" for k, v in sorted(env.items()))


def variant(task: dict[str, Any]) -> tuple[str, str | None, dict[str, Any], dict[str, Any]]:
    """(algo, demonstrator, TrainConfig overrides, env options): the variant's own env options over
    the command line's (--reward, --enforce-max-green), which apply to every variant."""
    algo, llm, over, env = VARIANTS[task["variant"]]
    return algo, llm, over, {**task.get("env", {}), **env}


def make_demos(task: dict[str, Any]) -> Path:
    """The variant's demonstrations (shared by every variant with the same demonstrator and env)."""
    from leed_traffic.demos import generate_demos

    _algo, llm, _over, env = variant(task)
    ddir = Path(task["runs"]) / task["city"] / f"demos-{_demos_key(llm, env)}"
    if not (ddir / "dataset").exists():
        generate_demos(task["city"], llm=llm, rounds=task["demo_rounds"], out=ddir, seed=0, progress=False,
                       env_options=dict(env))
    return ddir / "dataset"


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) one variant/seed, evaluate its final policy; returns a result row."""
    import pandas as pd
    import torch

    from leed_traffic.controllers import get_controller
    from leed_traffic.dataset import DemoDataset
    from leed_traffic.evaluate import evaluate
    from leed_traffic.learn import TrainConfig, train
    from leed_traffic.learn.checkpoint import latest_checkpoint
    from leed_traffic.scenario import build_scenario

    algo, llm, over, env = variant(task)
    runs, city, seed = Path(task["runs"]), task["city"], int(task["seed"])
    rd = runs / city / f"{task['variant']}-s{seed}"
    scen = build_scenario(city)
    budget = task["episodes"] * ((scen.end - scen.begin) // scen.delta_time)
    demos = DemoDataset.load(make_demos(task)) if llm else None
    pol = rd / "policy.pt"
    t0 = time.time()
    done = pol.exists() and int(torch.load(pol, map_location="cpu", weights_only=True)["env_steps"]) >= budget
    if not done:
        cfg = TrainConfig(algo=algo, total_env_steps=budget, seed=seed, progress=False,
                          extra={"benchmark": "ablate_leed", "variant": task["variant"]}, **over)
        train(city, cfg, rd, demos, resume=latest_checkpoint(rd) is not None, env_options=dict(env))
    train_s = time.time() - t0
    ev = rd / "ablation-eval"
    key = {"episodes": task["eval_episodes"], "policy_mtime": pol.stat().st_mtime}
    stamp = ev / "done.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == key):
        ctrls = [get_controller("policy", run=rd, sample=True), get_controller("policy", run=rd, sample=False)]
        evaluate(city, ctrls, episodes=task["eval_episodes"], out=ev, progress=False)
        stamp.write_text(json.dumps(key))
    df = pd.read_csv(ev / "metrics.csv")
    sampled = df[~df["controller"].str.endswith("-argmax")]
    argmax = df[df["controller"].str.endswith("-argmax")]
    m = pd.read_csv(rd / "metrics.csv")
    tail = max(1, len(m) // 10)
    return {
        "variant": task["variant"], "seed": seed, "episodes": task["episodes"],
        "delay": float(sampled["mean_delay"].mean()), "delay_argmax": float(argmax["mean_delay"].mean()),
        "never_inserted": float(sampled["never_inserted"].mean()),
        "final_train_delay": float(m["mean_delay"].tail(tail).mean()),
        "final_expert_weight": float(m["expert_weight"].tail(tail).mean()),
        "train_wall_s": round(train_s, 1),
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
        algo, llm, over, env = VARIANTS[v]
        what = ", ".join([algo] + ([f"demos {llm}"] if llm else []) + [f"{k}={x}" for k, x in {**over, **env}.items()])
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
              "eval_episodes": args.eval_episodes, "demo_rounds": args.demo_rounds, "env": env}
             for s in seeds for v in args.variants.split(",")]
    # demonstrations are shared between variants: make each dataset once before the parallel runs
    first: dict[str, dict] = {}
    for t in tasks:
        algo, llm, _o, env = variant(t)
        if llm:
            first.setdefault(_demos_key(llm, env), t)
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
