"""Learning benchmark: LEED vs IPPO / MAPPO vs the classical controllers, next to RESCO's numbers.

For every city x algorithm x seed it trains (``leed_traffic.learn.train``), then evaluates the
**final** policy (never the best training episode) on the scenario's held-out evaluation seeds
with the shared evaluation path (``leed_traffic.evaluate``), and evaluates the classical
controllers once per city on the same seeds. Algorithms:

* ``ippo``, ``mappo``: PPO without demonstrations (decentralized / centralized critic).
* ``leed-mp``: LEED with the max-pressure reference expert's demonstrations.
* ``leed-llm``: LEED with the embedded ``local`` LLM's demonstrations.
* ``leed-random``: LEED with uniformly random legal phases as "demonstrations" (the worst case).

Each city's demonstrations are generated once (``<runs>/<city>/demos-<llm>``) and reused by every
seed. Everything is resumable: a finished run (``policy.pt`` at the full budget) is skipped, an
interrupted one continues from its last checkpoint (``resume=True``), a finished evaluation is
not redone. Every task runs in its own subprocess with a log under ``<runs>/logs/``.

Outputs: ``<out>/learning.md`` (section "Results", other sections are left alone),
``<out>/learning_<city>.png`` (training delay vs env steps and vs wall time),
``<runs>/summary.csv`` (one row per run).

Full protocol (hours; ``make bench-learning``)::

    python benchmarks/bench_learning.py --out docs

Reduced profile::

    python benchmarks/bench_learning.py --cities cologne8 --algos ippo,leed-mp --seeds 0 \
        --episodes 30 --eval-episodes 3 --out docs

Exits non-zero only when a run fails (crash or timeout), never because a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, benchmark_config, command_line, machine_info, markdown_table, write_section  # noqa: E402

SECTION = "Results"
DOC_TITLE = "# Learning results"

# name -> (TrainConfig.algo, demonstrator or None)
ALGOS: dict[str, tuple[str, str | None]] = {
    "ippo": ("ippo", None),
    "mappo": ("mappo", None),
    "leed-mp": ("leed", "max-pressure"),
    "leed-llm": ("leed", "local"),
    "leed-random": ("leed", "random"),
}

# RESCO (Ault & Sharon 2021), average delay s/veh, best training episode, SUMO 1.9.
RESCO = {
    "cologne1": {"IDQN": 26.05, "IPPO": 43.24, "fixed": 56.61},
    "cologne3": {"IDQN": 23.99, "IPPO": 24.03, "fixed": 46.35},
    "cologne8": {"IDQN": 22.06, "IPPO": 21.62, "fixed": 63.77},
    "ingolstadt1": {"IDQN": 21.48, "IPPO": 20.90, "fixed": 39.40},
    "ingolstadt7": {"IDQN": 31.19, "IPPO": 31.68, "fixed": 91.31},
    "ingolstadt21": {"IDQN": 59.64, "IPPO": 93.11, "fixed": 133.10},
}
# ../shared/ANCHORS.md: independent classical measurements (SUMO 1.28, honest delay, 5 seeds).
ANCHORS = {
    "cologne1": {"fixed": "42.8 ± 0.7", "actuated": "70.7 ± 10.4", "max-pressure": "22.0 ± 0.7", "webster": "89.4 ± 1.3"},
    "cologne3": {"fixed": "36.2 ± 1.3", "actuated": "35.9 ± 2.6", "max-pressure": "274.8 ± 325", "webster": "130.5 ± 38"},
    "cologne8": {"fixed": "49.1 ± 0.2", "actuated": "43.4 ± 2.7", "max-pressure": "32.5 ± 0.9", "webster": "80.5 ± 1.4"},
    "ingolstadt1": {"fixed": "29.6 ± 1.0", "actuated": "19.6 ± 0.7", "max-pressure": "32.9 ± 2.5", "webster": "43.1 ± 1.0"},
    "ingolstadt7": {"fixed": "123.5 ± 10.6", "actuated": "33.0 ± 0.8", "max-pressure": "215.8 ± 6.8", "webster": "119.0 ± 2.6"},
    "ingolstadt21": {"fixed": "139.2 ± 2.2", "actuated": "135.3 ± 95.6", "max-pressure": "380.6 ± 160", "webster": "217.4 ± 87"},
}

GOAL_STEP_RATIO = 1 / 3  # LEED reaches IPPO's final training delay in <= 1/3 of IPPO's env steps
GOAL_THROUGHPUT = 0.5  # training loop sim-s/wall-s >= 0.5 x env random-action throughput
GOAL_CITIES = ("helsinki", "cologne8")
SCALABILITY_CITIES = ("helsinki", "oslo", "luxembourg")


# ---------------------------------------------------------------------------- paths
def city_dir(runs: Path, city: str) -> Path:
    return runs / city


def run_dir(runs: Path, city: str, algo: str, seed: int) -> Path:
    return runs / city / f"{algo}-s{seed}"


def demos_dir(runs: Path, city: str, llm: str) -> Path:
    return runs / city / f"demos-{llm}"


def experiment(t: dict):
    """The task's ExperimentConfig (``common.benchmark_config``)."""
    return benchmark_config(t["city"], eval_episodes=t["eval_episodes"], seconds=t.get("seconds"),
                            reward=t.get("reward"), observation=t.get("observation"),
                            enforce_max_green=bool(t.get("enforce_max_green")), rounds=t.get("rounds", 2),
                            workers=t.get("workers", 1), seed=int(t.get("seed", 0)),
                            settings=dict(kv.split("=", 1) for kv in t.get("settings", [])))


def env_options(t: dict) -> dict[str, Any]:
    """The env options of a task (for the env-throughput measurement)."""
    return experiment(t).env.options()


def steps_per_episode(city: str, seconds: int | None) -> tuple[int, int]:
    """(decision steps per episode, delta_time) of a city's scenario."""
    from leed_traffic.pipeline import decisions_per_episode, scenario_of

    cfg = experiment({"city": city, "seconds": seconds, "eval_episodes": 0})
    scen = scenario_of(cfg)
    return decisions_per_episode(scen, cfg), cfg.env.delta_time or scen.delta_time


# ---------------------------------------------------------------------------- tasks (subprocess)
def task_demos(t: dict) -> dict:
    from leed_traffic.pipeline import demonstrations, scenario_of

    cfg = experiment({**t, "seed": 0})
    cfg.demos.llm, cfg.train.algo = t["llm"], "leed"
    out = demos_dir(Path(t["runs"]), t["city"], t["llm"])
    demonstrations(cfg, scenario_of(cfg), out, say=print, progress=False)
    return {"dataset": str(out / "dataset")}


def task_train(t: dict) -> dict:
    """Train one (city, algo, seed) to its budget (resuming), then evaluate the final policy on the
    held-out seeds, sampled and argmax (``leed_traffic.pipeline.run_experiment``)."""
    from leed_traffic.pipeline import final_env_steps, run_experiment

    runs, city, name, seed = Path(t["runs"]), t["city"], t["algo"], int(t["seed"])
    algo, llm = ALGOS[name]
    cfg = experiment(t)
    cfg.train.algo, cfg.train.episodes = algo, t["episodes"]
    cfg.train.extra = {"benchmark": "bench_learning", "name": name}
    if llm:
        cfg.demos.llm, cfg.demos.path = llm, str(demos_dir(runs, city, llm) / "dataset")
    cfg.eval.controllers = ()  # the classical controllers are evaluated once per city (task_classical)
    res = run_experiment(cfg, run_dir(runs, city, name, seed), progress=False)
    return {"status": res.trained, "env_steps": final_env_steps(res.run)}


def task_classical(t: dict) -> dict:
    """The classical controllers as they are; with --enforce-max-green also the two that decide
    through the env (max-pressure, greedy) under the learners' phase rules, as "<name> (max green)".
    A controller that cannot run on a map is reported (``failed``) and its rows left out."""
    import pandas as pd

    from leed_traffic.fileio import atomic_write, atomic_write_json
    from leed_traffic.pipeline import evaluate_classical, resolve, scenario_of

    cfg = experiment(t)
    scenario = scenario_of(cfg)
    resolve(cfg, scenario)
    out = city_dir(Path(t["runs"]), t["city"]) / "classical"
    stamp = out / "done.json"
    key = {"seeds": list(cfg.eval.seeds), "seconds": cfg.env.seconds, "controllers": list(cfg.eval.controllers),
           "ruled": cfg.env.enforce_max_green}
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        return {"status": "skipped (finished)"}
    plain, ruled, failed = evaluate_classical(cfg, scenario)
    df = pd.concat(plain + ruled, ignore_index=True)
    atomic_write(out / "metrics.csv", lambda p: df.to_csv(p, index=False))
    atomic_write_json(stamp, {"key": key, "failed": failed})
    return {"status": "evaluated" + (f" ({len(failed)} controller(s) could not run: {', '.join(failed)})"
                                     if failed else ""), "failed": failed}


def task_envspeed(t: dict) -> dict:
    """The env's random-action throughput on the city (bench_env's `env` worker, same episode)."""
    import bench_env
    from leed_traffic.scenario import build_scenario

    out = city_dir(Path(t["runs"]), t["city"]) / "env_speed.json"
    keys = ("seconds", "reward", "observation", "enforce_max_green")
    if out.exists() and {k: json.loads(out.read_text()).get(k) for k in keys} == {k: t.get(k) for k in keys}:
        return {"status": "skipped (finished)"}
    scen = build_scenario(t["city"])
    seconds = t["seconds"] or (scen.end - scen.begin)
    spec = bench_env.run_spec(scen, seconds, scen.eval_seeds[0], scen.delta_time)
    spec.update({k: v for k, v in env_options(t).items() if k in ("reward", "observation", "enforce_max_green")})
    reps = [bench_env.run_worker("env", spec, timeout=1800) for _ in range(t.get("repeats", 2))]
    ok = [r for r in reps if r.get("status") == "ok"]
    if not ok:
        raise RuntimeError(f"env throughput run failed: {reps}")
    best = max(ok, key=lambda r: r["sim_s"] / r["wall_s"])  # least disturbed by other jobs
    res = {"seconds": t["seconds"], "reward": t.get("reward"), "observation": t.get("observation"),
           "enforce_max_green": t.get("enforce_max_green"),
           "sim_s": best["sim_s"], "wall_s": best["wall_s"],
           "cpu_s": best["cpu_s"], "sim_s_per_s": best["sim_s"] / best["wall_s"],
           "n_agents": best["n_agents"], "repeats": [r.get("sim_s", 0) / r.get("wall_s", 1) for r in ok]}
    out.write_text(json.dumps(res, indent=1))
    return {"status": "measured", **res}


TASKS = {"demos": task_demos, "train": task_train, "classical": task_classical, "envspeed": task_envspeed}
RESULT_TAG = "BENCH_TASK_RESULT "


def task_main(spec_json: str) -> int:
    t = json.loads(spec_json)
    try:
        res = TASKS[t["kind"]](t)
    except Exception:  # noqa: BLE001 - reported to the parent via the log and exit status
        traceback.print_exc()
        return 1
    print(RESULT_TAG + json.dumps(res), flush=True)
    return 0


def task_name(t: dict) -> str:
    if t["kind"] == "train":
        return f"{t['city']}-{t['algo']}-s{t['seed']}"
    if t["kind"] == "demos":
        return f"{t['city']}-demos-{t['llm']}"
    return f"{t['city']}-{t['kind']}"


def run_task(t: dict, logs: Path, timeout: float | None) -> dict:
    """One task in a fresh subprocess (libsumo holds one simulation per process), logged."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{task_name(t)}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--task", json.dumps(t)]
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] start {task_name(t)} (log {log})", flush=True)
    with log.open("a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        f.flush()
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                  timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    res: dict = {}
    for line in reversed(log.read_text().splitlines()):
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
            break
    ok = rc == 0
    why = "ok" if ok else ("timeout" if rc is None else f"exit {rc}")
    print(f"[{time.strftime('%H:%M:%S')}] {'done' if ok else 'FAILED'} {task_name(t)} "
          f"({why}, {time.time() - t0:.0f} s) {res.get('status', '')}", flush=True)
    return {"task": task_name(t), "ok": ok, "why": why, **res}


def run_tasks(tasks: list[dict], jobs: int, logs: Path, timeout: float | None) -> list[dict]:
    if jobs <= 1:
        return [run_task(t, logs, timeout) for t in tasks]
    with ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(lambda t: run_task(t, logs, timeout), tasks))


# ---------------------------------------------------------------------------- analysis
def smooth_window(n_episodes: int) -> int:
    """Rolling-mean window over training episodes: a tenth of the run, 3 to 20 episodes."""
    return int(min(20, max(3, n_episodes // 10)))


def load_curve(rd: Path):
    """Per-episode training curve with a rolling mean of the delay, or None."""
    import pandas as pd

    p = rd / "metrics.csv"
    if not p.exists():
        return None
    df = pd.read_csv(p)
    df = df[pd.to_numeric(df["mean_delay"], errors="coerce").notna()].copy()
    if df.empty:
        return None
    df["mean_delay"] = df["mean_delay"].astype(float)
    df = df.sort_values("env_steps").reset_index(drop=True)
    w = smooth_window(len(df))
    df["smooth"] = df["mean_delay"].rolling(w, min_periods=w).mean()
    df.attrs["window"] = w
    return df


def first_reach(df, target: float) -> tuple[float | None, float | None]:
    """(env steps, wall s) where the smoothed training delay first is <= target."""
    hit = df[df["smooth"] <= target]
    if hit.empty:
        return None, None
    r = hit.iloc[0]
    return float(r["env_steps"]), float(r["wall_time"])


def eval_value(csv: Path, argmax: bool = False) -> dict | None:
    """Mean over the evaluation episodes of one run (sampled rows, or the argmax ones)."""
    import pandas as pd

    if not csv.exists():
        return None
    df = pd.read_csv(csv)
    df = df[df["controller"].astype(str).str.endswith("-argmax") == argmax]
    if df.empty:
        return None
    return {"mean_delay": float(df["mean_delay"].mean()), "resco_delay": float(df["resco_delay"].mean()),
            "never_inserted": float(df["never_inserted"].mean()), "teleports": float(df["teleports"].mean()),
            "episodes": len(df)}


def deployed(rd: Path, row: dict) -> dict:
    """The run's deployed mode (chosen on its training seeds, ``pipeline.select_mode``) and that
    mode's held-out values as ``evald_*``: the headline number. Runs from before 2026-12-02 have
    no validation and deploy the sampled policy."""
    from leed_traffic.rundir import RunDir

    mode = RunDir(rd).deployed_mode()
    pre = "eval_" if mode == "sampled" else "evala_"
    out: dict[str, Any] = {"deploy_mode": mode}
    out.update({"evald_" + k[len(pre):]: v for k, v in row.items() if k.startswith(pre)})
    return out


def seed_cell(row: dict) -> str:
    """One seed's deployed held-out delay, ``a`` when it deployed argmax."""
    return f"{fmt(row.get('evald_mean_delay'))}{'' if row['deploy_mode'] == 'sampled' else ' a'}"


def collect(args, cities: list[str], algos: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    for city in cities:
        spe, dt = steps_per_episode(city, args.seconds)
        for name in algos:
            for seed in seeds:
                rd = run_dir(args.runs, city, name, seed)
                row: dict[str, Any] = {"city": city, "algo": name, "seed": seed, "run": str(rd),
                                       "delta_time": dt, "steps_per_episode": spe}
                ev = eval_value(rd / "evaluation" / "metrics.csv")
                if ev:
                    row.update({f"eval_{k}": v for k, v in ev.items()})
                ev = eval_value(rd / "evaluation" / "metrics.csv", argmax=True)
                if ev:
                    row.update({f"evala_{k}": v for k, v in ev.items()})
                row.update(deployed(rd, row))
                curve = load_curve(rd)
                if curve is not None:
                    last = curve.iloc[-1]
                    row.update(episodes=len(curve), env_steps=int(last["env_steps"]),
                               train_wall_s=float(last["wall_time"]),
                               train_final_delay=float(curve["smooth"].iloc[-1]),
                               smooth_window=curve.attrs["window"])
                    row["train_sim_s_per_s"] = row["env_steps"] * dt / max(row["train_wall_s"], 1e-9)
                cfgp = rd / "config.json"
                if cfgp.exists():
                    row["n_agents"] = len(json.loads(cfgp.read_text())["env"]["agents"])
                rows.append(row)
    return rows


def fmt(x, spec=".1f", none="–") -> str:
    try:
        if x is None or x != x:
            return none
    except TypeError:
        return none
    return format(x, spec)


def mean_std(xs: list[float]) -> tuple[float, float]:
    import numpy as np

    a = np.asarray([x for x in xs if x is not None and x == x], float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=0))


def pm(xs: list[float], spec=".1f") -> str:
    m, s = mean_std(xs)
    if m != m:
        return "–"
    return f"{m:{spec}} ± {s:{spec}}" if len(xs) > 1 else f"{m:{spec}}"


# ---------------------------------------------------------------------------- plots
def plot_city(city: str, rows: list[dict], out: Path, target: float | None, tag: str = "") -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_algo: dict[str, list] = {}
    for r in rows:
        c = load_curve(Path(r["run"]))
        if c is not None:
            by_algo.setdefault(r["algo"], []).append(c)
    if not by_algo:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for i, (name, curves) in enumerate(sorted(by_algo.items())):
        color = f"C{i}"
        for ax, x in zip(axes, ("env_steps", "wall_time")):
            for c in curves:
                ax.plot(c[x], c["mean_delay"], color=color, alpha=0.2, lw=0.8)
            # mean over seeds on a common grid (of the smoothed curves)
            valid = [c[c["smooth"].notna()] for c in curves]
            if any(v.empty for v in valid):
                continue
            lo = max(float(v[x].iloc[0]) for v in valid)
            hi = min(float(v[x].iloc[-1]) for v in valid)
            grid = np.linspace(lo, hi, 200)
            ys = np.asarray([np.interp(grid, v[x], v["smooth"]) for v in valid])
            label = f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
            ax.plot(grid, ys.mean(0), color=color, lw=2, label=label)
            if len(curves) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.15)
    for ax, xl in zip(axes, ("environment steps (decisions, summed over workers)", "wall time (s)")):
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label="IPPO final (smoothed)")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training delay (s/veh, honest)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{city}: training delay per episode (thin) and its rolling mean (thick)")
    fig.tight_layout()
    path = out / f"learning_{city}{'_' + tag if tag else ''}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- report
def render(args, rows: list[dict], cities: list[str], algos: list[str], seeds: list[int],
           info: dict, cmd: str, total_s: float, failures: list[dict], scal_rows: list[dict]) -> str:
    from leed_traffic.scenario import build_scenario

    out: list[str] = []
    out.append(
        f"Generated by `{cmd}` ("
        + ("tables rebuilt from the runs on disk" if args.report_only else f"{total_s / 60:.0f} min")
        + f", failures: {len(failures)}). Machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items()) + "."
    )
    out.append(
        f"Budget: {args.episodes} training episodes per run of "
        + (f"{args.seconds} s" if args.seconds else "the scenario's full length")
        + f", {args.workers} rollout worker(s), reward {args.reward or 'diff-waiting-time (the env default)'}"
        + (f", observation {args.observation}" if args.observation else "")
        + (", max green enforced" if args.enforce_max_green else "")
        + "".join(f", {kv}" for kv in args.settings)
        + f", seeds {','.join(map(str, seeds))}; final policies evaluated over "
        f"{args.eval_episodes} held-out episodes (the scenario's evaluation seeds, never used in training). "
        "Each seed's value is the mean over its evaluation episodes; ± is the std over seeds (learners) "
        "or over evaluation episodes (classical controllers, which have no training seed)."
    )
    if failures:
        out.append("**Failed tasks:** " + ", ".join(f"{f['task']} ({f['why']})" for f in failures))
    goals: list[str] = []
    for city in cities:
        crow = [r for r in rows if r["city"] == city]
        scen = build_scenario(city)
        out.append(f"### {city} ({scen.n_agents} agents, {crow[0]['delta_time'] if crow else '?'} s decisions)")
        # ---- final policies
        head = ["controller", "deployed: delay s/veh (honest) [seeds]", "sampled: delay", "delay, RESCO's rule",
                "never inserted", "argmax actions: delay (never ins.)", "n",
                "RESCO (SUMO 1.9, best train ep.)", "ANCHORS (SUMO 1.28)"]
        table = []
        cls = eval_value_frame(city_dir(args.runs, city) / "classical" / "metrics.csv")
        best = best_classical(cls)
        resco = RESCO.get(city, {})
        anch = ANCHORS.get(city, {})
        if cls is not None:
            for name in classical_names():
                d = cls[cls["controller"] == name]
                if d.empty:
                    continue
                table.append([name, pm(list(d["mean_delay"])), "", pm(list(d["resco_delay"])),
                              fmt(float(d["never_inserted"].mean()), ".0f"), "", str(len(d)),
                              fmt(resco.get("fixed")) if name == "fixed" else "",
                              anch.get(name, "")])
        for name in algos:
            rs = [r for r in crow if r["algo"] == name and "eval_mean_delay" in r]
            if not rs:
                table.append([name, "not run", "", "", "", "", "0", "", ""])
                continue
            ref = ""
            if name == "ippo" and resco:
                ref = f"IPPO {resco['IPPO']:.2f} (IDQN {resco['IDQN']:.2f})"
            dep = [r.get("evald_mean_delay", float("nan")) for r in rs]
            table.append([f"**{name}**", f"{pm(dep)} [{', '.join(seed_cell(r) for r in rs)}]", pm([r["eval_mean_delay"] for r in rs]),
                          pm([r["eval_resco_delay"] for r in rs]),
                          fmt(mean_std([r["eval_never_inserted"] for r in rs])[0], ".0f"),
                          pm([r.get("evala_mean_delay", float("nan")) for r in rs]) + " ("
                          + fmt(mean_std([r.get("evala_never_inserted", float("nan")) for r in rs])[0], ".0f") + ")",
                          f"{len(rs)} seed(s) × {rs[0]['eval_episodes']}", ref, ""])
        out.append(markdown_table(head, table, "lrrrrrrrl"))
        out.append("Learners: the headline is each seed's deployed mode, chosen before the held-out episodes on "
                   "two episodes of its own training seeds (sampled or argmax, the lower delay; `a` marks a seed "
                   "that deployed argmax); \"sampled\" is the policy drawing its actions as PPO trained it "
                   "(seeded per episode), \"argmax actions\" the same policy taking its most likely phase "
                   "(`leed-traffic evaluate --sampled` / `--argmax`).")
        # ---- sample efficiency
        ippo = [r for r in crow if r["algo"] == "ippo" and "train_final_delay" in r]
        target = mean_std([r["train_final_delay"] for r in ippo])[0] if ippo else None
        png = plot_city(city, crow, args.out, target if target == target else None, args.tag)
        if png:
            out.append(f"![{city} training curves]({png.name})")
        if target is not None and target == target:
            head = ["algo", "seed", "episodes", "env steps", "train wall s", "final train delay (smoothed)",
                    f"env steps to ≤ {target:.1f} s", "wall s to reach", "steps / IPPO's"]
            reach = {}
            for r in crow:
                if "train_final_delay" not in r:
                    continue
                st, wt = first_reach(load_curve(Path(r["run"])), target)
                reach.setdefault(r["algo"], []).append(st)
                r["steps_to_ippo_final"], r["wall_to_ippo_final"] = st, wt
            ippo_steps = mean_std([s for s in reach.get("ippo", []) if s is not None])[0]
            table = []
            for r in crow:
                if "train_final_delay" not in r:
                    continue
                st = r.get("steps_to_ippo_final")
                ratio = st / ippo_steps if st is not None and ippo_steps == ippo_steps else None
                r["steps_ratio_vs_ippo"] = ratio
                table.append([r["algo"], str(r["seed"]), str(r["episodes"]), str(r["env_steps"]),
                              fmt(r["train_wall_s"], ".0f"), fmt(r["train_final_delay"]),
                              fmt(st, ".0f", "not reached"), fmt(r.get("wall_to_ippo_final"), ".0f", "–"),
                              fmt(ratio, ".2f")])
            out.append(
                f"Sample efficiency. Training delay = the env's honest mean delay at the episode's end "
                f"(every vehicle due to depart, the never-inserted ones charged their wait: the evaluation's "
                f"definition; runs from before 2026-11-29 logged finished trips only); smoothed with a "
                f"rolling mean over {crow[0].get('smooth_window', '?')} episodes (a tenth of the run, 3 to 20). "
                f"Target = IPPO's final smoothed training delay (mean over seeds) = {target:.1f} s; "
                "\"env steps to reach\" is the first episode end at which the smoothed curve is at or below it; "
                "IPPO reaches its own final value by definition, usually before the end."
            )
            out.append(markdown_table(head, table, "lrrrrrrrr"))
        # ---- throughput
        sp = city_dir(args.runs, city) / "env_speed.json"
        env_speed = json.loads(sp.read_text())["sim_s_per_s"] if sp.exists() else None
        table = []
        for name in algos:
            rs = [r for r in crow if r["algo"] == name and "train_sim_s_per_s" in r]
            if not rs:
                continue
            m = mean_std([r["train_sim_s_per_s"] for r in rs])[0]
            ratio = m / env_speed if env_speed else None
            for r in rs:
                r["throughput_ratio"] = r["train_sim_s_per_s"] / env_speed if env_speed else None
            verdict = "–" if ratio is None else ("met" if ratio >= GOAL_THROUGHPUT else "**MISSED**")
            table.append([name, fmt(m, ".0f"), fmt(env_speed, ".0f"), fmt(ratio, ".2f"), verdict])
            if ratio is not None and (city == "helsinki" or name == algos[0]):
                goals.append(f"{city} {name}: training loop {m:.0f} sim-s/s = {ratio:.2f}× the env's random-action "
                             f"{env_speed:.0f} sim-s/s (goal ≥ {GOAL_THROUGHPUT}): "
                             + ("met" if ratio >= GOAL_THROUGHPUT else "**MISSED**"))
        if table:
            out.append("Training-loop throughput: simulated seconds per wall second over the whole run "
                       "(rollouts, PPO/LEED updates, DTW, checkpoints, episode resets) vs the env's own "
                       "random-action throughput on the same city and episode length (bench_env's `env` "
                       "worker, best of 2, measured in the same benchmark run).")
            out.append(markdown_table(["algo", "train sim-s/s", "env random sim-s/s", "ratio", f"goal ≥ {GOAL_THROUGHPUT}"],
                                      table, "lrrrl"))
        # ---- goals
        for name in ("leed-mp", "leed-llm"):
            rs = [r for r in crow if r["algo"] == name]
            if not rs:
                continue
            ratios = [r.get("steps_ratio_vs_ippo") for r in rs if "train_final_delay" in r]
            if ratios:
                if any(x is None for x in ratios):
                    v = f"not reached by {sum(x is None for x in ratios)} of {len(ratios)} seed(s): **MISSED**"
                else:
                    m = mean_std(ratios)[0]
                    v = f"{m:.2f}× IPPO's steps (goal ≤ {GOAL_STEP_RATIO:.2f}): " + (
                        "met" if m <= GOAL_STEP_RATIO else "**MISSED**")
                goals.append(f"{city} {name}: reaches IPPO's final training delay at {v}")
            ev = [r["evald_mean_delay"] for r in rs if "evald_mean_delay" in r]
            if ev and best:
                m = mean_std(ev)[0]
                goals.append(f"{city} {name}: final policy (deployed) {m:.1f} s vs best classical {best[0]} "
                             f"{best[1]:.1f} s: " + ("beats it" if m < best[1] else "**MISSED**"))
    if scal_rows:
        out.append("### Scalability")
        head = ["city", "agents", "algo", "seeds", "final delay s/veh (eval)", "training wall s", "env steps",
                "wall s per episode"]
        table = []
        for city in dict.fromkeys(r["city"] for r in scal_rows):
            for name in dict.fromkeys(r["algo"] for r in scal_rows):
                rs = [r for r in scal_rows if r["city"] == city and r["algo"] == name and "train_wall_s" in r]
                if not rs:
                    continue
                table.append([city, str(rs[0].get("n_agents", "?")), name, str(len(rs)),
                              pm([r.get("evald_mean_delay", float("nan")) for r in rs]),
                              pm([r["train_wall_s"] for r in rs], ".0f"), str(rs[0]["env_steps"]),
                              fmt(mean_std([r["train_wall_s"] / max(r["episodes"], 1) for r in rs])[0], ".1f")])
        out.append(markdown_table(head, table, "lrlrrrrr"))
    out.append("### Goals\n\n" + ("\n".join(f"- {g}" for g in goals) if goals else "- nothing to judge yet"))
    return "\n\n".join(out)


def classical_names() -> list[str]:
    """The classical controllers, then the env-deciding ones under max green, in report order."""
    from leed_traffic.evaluate import ALL_CLASSICAL, ENV_DECIDING, MAX_GREEN_SUFFIX

    return [*ALL_CLASSICAL, *(n + MAX_GREEN_SUFFIX for n in ENV_DECIDING)]


def best_classical(cls) -> tuple[str, float, float] | None:
    """(name, mean, std over episodes) of the classical controller with the lowest mean delay in
    a city's classical metrics frame (None without one)."""
    if cls is None:
        return None
    best = None
    for name in classical_names():
        d = cls[cls["controller"] == name]["mean_delay"]
        if not d.empty and (best is None or d.mean() < best[1]):
            best = (name, float(d.mean()), float(d.std(ddof=0)))
    return best


def eval_value_frame(csv: Path):
    import pandas as pd

    return pd.read_csv(csv) if csv.exists() else None


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cities", default="helsinki,cologne1,cologne3,cologne8,ingolstadt1,ingolstadt7,ingolstadt21")
    p.add_argument("--algos", default="ippo,mappo,leed-mp,leed-llm", help=f"subset of {','.join(ALGOS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=100, help="training episodes per run")
    p.add_argument("--seconds", type=int, default=None, help="episode length (default: the scenario's, 1 h)")
    p.add_argument("--eval-episodes", type=int, default=5, help="held-out evaluation episodes per policy")
    p.add_argument("--reward", default=None, help="env reward for training and demos (default: the env's)")
    p.add_argument("--observation", default=None, help="env observation (default: the env's)")
    p.add_argument("--enforce-max-green", action="store_true",
                   help="force a phase change after max_green (as real controllers do; off in sumo-rl)")
    p.add_argument("--workers", type=int, default=1, help="rollout worker processes per training run")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   help="further SECTION.FIELD=VALUE for every run and its demonstrations (e.g. train.policy=phase)")
    p.add_argument("--jobs", type=int, default=1, help="tasks (training runs, evaluations) run in parallel")
    p.add_argument("--demo-rounds", type=int, default=2, help="demonstration generation/refinement rounds")
    p.add_argument("--scalability", action="store_true",
                   help=f"also train on {','.join(SCALABILITY_CITIES)} (35 -> 125 -> 186 agents)")
    p.add_argument("--scalability-algos", default="leed-mp,ippo")
    p.add_argument("--scalability-episodes", type=int, default=None, help="default: --episodes")
    p.add_argument("--timeout", type=float, default=None, help="seconds before one task is killed (default: none)")
    p.add_argument("--section", default=SECTION,
                   help="title of the ## section of learning.md this run writes (other sections stay)")
    p.add_argument("--tag", default="", help="suffix of the PNG names (learning_<city>_<tag>.png)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from existing runs")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="docs directory (learning.md, PNGs)")
    p.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "bench-learning")
    p.add_argument("--task", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.task:
        return task_main(args.task)

    from leed_traffic.cities import resolve_city  # noqa: F401 - fail early on an unknown city
    from leed_traffic.scenario import build_scenario

    cmd = command_line()
    info = machine_info(("leed-traffic", "eclipse-sumo", "libsumo", "torch", "numpy"))
    cities = [c for c in args.cities.split(",") if c]
    algos = [a for a in args.algos.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    bad = [a for a in algos + args.scalability_algos.split(",") if a and a not in ALGOS]
    if bad:
        p.error(f"unknown algo(s) {bad}; choose from {', '.join(ALGOS)}")
    for c in cities + (list(SCALABILITY_CITIES) if args.scalability else []):
        build_scenario(c)  # unknown city -> the list of bundled cities
    args.runs, args.out = args.runs.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    base = {"runs": str(args.runs), "seconds": args.seconds, "eval_episodes": args.eval_episodes,
            "reward": args.reward, "observation": args.observation,
            "enforce_max_green": args.enforce_max_green,
            "workers": args.workers, "rounds": args.demo_rounds, "settings": list(args.settings)}
    scal_algos = [a for a in args.scalability_algos.split(",") if a]
    plan: list[tuple[str, list[str], int]] = [(c, algos, args.episodes) for c in cities]
    if args.scalability:
        plan += [(c, scal_algos, args.scalability_episodes or args.episodes) for c in SCALABILITY_CITIES
                 if c not in cities]
    t0 = time.time()
    results: list[dict] = []
    if not args.report_only:
        logs = args.runs / "logs"
        demo_tasks = [{**base, "kind": "demos", "city": c, "llm": ALGOS[a][1]}
                      for c, al, _ in plan for a in al if ALGOS[a][1]]
        demo_tasks = list({task_name(t): t for t in demo_tasks}.values())

        def trains(with_demos: bool, failed: set[str]) -> list[dict]:
            out = []
            for c, al, eps in plan:
                for a in al:
                    llm = ALGOS[a][1]
                    if bool(llm) != with_demos or (llm and f"{c}-demos-{llm}" in failed):
                        continue  # a failed demonstration task is reported as a failure already
                    out += [{**base, "kind": "train", "city": c, "algo": a, "seed": s, "episodes": eps}
                            for s in seeds]
            return out

        # no held-out episodes (--eval-episodes 0, training-seed experiments): no classical evaluation
        classical = [{**base, "kind": "classical", "city": c} for c, _, _ in plan] if args.eval_episodes > 0 else []
        envspeed = [{**base, "kind": "envspeed", "city": c} for c, _, _ in plan]
        # demonstrations first, beside them what does not need them (IPPO, MAPPO, classical);
        # then the demonstration learners
        results += run_tasks(demo_tasks + trains(False, set()) + classical, args.jobs, logs, args.timeout)
        failed_demos = {r["task"] for r in results if not r["ok"]}
        results += run_tasks(trains(True, failed_demos), args.jobs, logs, args.timeout)
        # the env's throughput is measured alone (jobs=1) so it is not slowed by our own training
        results += run_tasks(envspeed, 1, logs, args.timeout)
    failures = [r for r in results if not r["ok"]]
    rows = collect(args, cities, algos, seeds)
    scal_rows = []
    if args.scalability:
        scal_rows = collect(args, list(SCALABILITY_CITIES), scal_algos, seeds)
    total = time.time() - t0
    body = render(args, rows, cities, algos, seeds, info, cmd, total, failures, scal_rows)
    write_section(args.out / "learning.md", args.section, body, doc_title=DOC_TITLE)
    import pandas as pd

    args.runs.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows + scal_rows).to_csv(args.runs / "summary.csv", index=False)
    print(f"wrote {args.out / 'learning.md'} and {args.runs / 'summary.csv'}")
    if failures:
        print("FAILED: " + ", ".join(f"{f['task']} ({f['why']})" for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
