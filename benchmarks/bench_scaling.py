"""Scaling out: training throughput with 1 and 2 rollout workers on every backend, and on a
two-node Ray cluster on this machine.

Issue 13 goal: parallel efficiency (throughput with 2 workers / (2 x throughput with 1)) >= 0.8.
Each configuration trains IPPO (no demonstrations: the rollouts are what scales) for
``--episodes`` whole episodes per worker in a fresh subprocess (so peak RSS is its own), through
``leed_traffic.learn.trainer.Trainer``: the same loop as ``leed-traffic train``. Throughput is env
(decision) steps and simulated seconds per wall second of the update loop (workers started, first
weights not yet sent; the learner's PPO updates included), so worker start-up is reported apart.

The cluster: ``ray start --head --num-cpus 1 --port P --block`` and a second ``ray start --address
127.0.0.1:P --num-cpus 1 --block`` (two raylets, one CPU each, so the two actors land on different
nodes), stopped by their process ids at the end.

    python benchmarks/bench_scaling.py --city helsinki --seconds 900 --episodes 8 --out docs

Exits non-zero only when a run fails, never because the goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DOCS_DIR,
    command_line,
    load_average,
    machine_info,
    markdown_table,
    print_result,
    run_result,
    write_section,
)

SECTION = "Scaling out (Ray)"
CONFIGS = [  # (label, backend, workers, cluster)
    ("inprocess", "inprocess", 1, False),
    ("process", "process", 1, False),
    ("process", "process", 2, False),
    ("ray (local)", "ray", 1, False),
    ("ray (local)", "ray", 2, False),
    ("ray (2-node cluster)", "ray", 2, True),
]
FIELDS = ("config", "backend", "workers", "repeat", "episodes", "env_steps", "loop_wall_s", "startup_s",
          "env_steps_per_s", "sim_s_per_wall_s", "parallel_efficiency", "learner_rss_mb", "worker_rss_mb",
          "nodes", "worker_core_share", "learner_cores", "ray_daemon_cores", "optimize_share")


# ---------------------------------------------------------------------------- where the CPU goes
RAY_PROCESS_MARKS = ("gcs_server", "raylet", "/ray/", "ray::")
"""A process whose command line holds one of these belongs to Ray (its GCS, raylets, agents,
monitors, idle workers; actors show as ``ray::<Class>``)."""


def ray_processes_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of every Ray process on this machine, by pid (Linux
    /proc; no psutil in the environment)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not any(m in cmd for m in RAY_PROCESS_MARKS):
                continue
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


class CpuSampler:
    """Samples, every ``period`` s, this process's CPU time and every Ray process's, so that the
    update loop's share can be cut out afterwards (its start is only known when it has ended)."""

    def __init__(self, period: float = 0.5, ray: bool = False) -> None:
        import threading

        self.samples: list[tuple[float, float, dict[int, float]]] = []
        self.period, self.ray = period, ray
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), time.process_time(), ray_processes_cpu() if self.ray else {}))
            if self._stop.wait(self.period):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, t0: float, t1: float, exclude: set[int]) -> tuple[float, float]:
        """(this process's CPU s, Ray's processes' CPU s outside ``exclude``) between the samples
        nearest ``t0`` and ``t1``; a Ray process born in between counts from zero."""
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        own = b[1] - a[1]
        ray = sum(c - a[2].get(pid, 0.0) for pid, c in b[2].items() if pid not in exclude and pid != os.getpid())
        return own, ray


# ---------------------------------------------------------------------------- one run (subprocess)
def worker(spec: dict) -> None:
    """Train one configuration; print its measurements as the result line."""
    from leed_traffic.config import ExperimentConfig
    from leed_traffic.learn import EnvFactory, TrainConfig
    from leed_traffic.learn.trainer import Trainer
    from leed_traffic.scenario import build_scenario

    env = ExperimentConfig().env
    env.seconds = spec["seconds"]
    scenario = build_scenario(spec["city"])
    factory = EnvFactory(scenario, env.options())
    probe = factory()
    from leed_traffic.learn.rollout import env_spec

    steps_per_episode = round(spec["seconds"] / env_spec(probe).delta_time)
    probe.close()
    W = spec["workers"]
    cfg = TrainConfig(algo="ippo", n_workers=W, backend=spec["backend"], ray_address=spec.get("ray_address"),
                      total_env_steps=steps_per_episode * W * spec["episodes"], progress=False,
                      checkpoint_interval=10_000, seed=0)
    if cfg.ray_address:  # the cluster: wait until both nodes have registered
        import ray

        from leed_traffic.learn.workers import connect_ray

        connect_ray(cfg.ray_address, W)
        for _ in range(120):
            if ray.cluster_resources().get("CPU", 0) >= W:
                break
            time.sleep(0.5)
    sampler = CpuSampler(ray=spec["backend"] == "ray")
    t0 = time.time()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    trainer = Trainer(cfg, run_dir, factory)
    result = trainer.run()
    t_end = time.time()
    total = t_end - t0
    rss = trainer.pool.peak_rss_mb
    me = f"{os.uname().nodename}:{os.getpid()}"
    # the loop's CPU: the learner's own and Ray's processes' other than the rollout actors
    actors = {int(h.rsplit(":", 1)[1]) for h in rss if h != me}
    sampler.stop()
    learner_cpu, ray_cpu = sampler.window(t_end - result.wall_s, t_end, exclude=actors)
    import pandas as pd

    updates = pd.read_csv(run_dir / "updates.csv")
    print_result({
        "env_steps": result.env_steps, "episodes": result.episodes, "loop_wall_s": result.wall_s,
        "startup_s": total - result.wall_s, "delta_time": float(trainer.spec.delta_time),
        "learner_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "worker_rss_mb": [round(v, 1) for k, v in sorted(rss.items()) if k != me],
        "worker_hosts": sorted(rss), "ray_nodes": len(trainer.pool.nodes),
        "worker_core_share": trainer.pool.episode_cpu_s / max(trainer.pool.episode_wall_s, 1e-9),
        "learner_cores": learner_cpu / result.wall_s, "ray_daemon_cores": ray_cpu / result.wall_s,
        "optimize_share": float(updates["optimize_s"].sum()) / result.wall_s,
    })


# ---------------------------------------------------------------------------- the cluster
def start_cluster(port: int) -> list[subprocess.Popen]:
    """Two Ray nodes with one CPU each on this machine (head + one more), as child processes."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    # Ray 2.60 authenticates with the token in ~/.ray/auth_token; a joining node must be told so
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    logs = Path(tempfile.mkdtemp(prefix="bench-scaling-ray-"))
    head = subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                            stdout=(logs / "head.log").open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    _wait_port(port, 60)
    node = subprocess.Popen([ray_bin, "start", "--address", f"127.0.0.1:{port}", *common],
                            stdout=(logs / "node.log").open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    print(f"Ray cluster: head and node logs in {logs}", flush=True)
    return [head, node]


def stop_cluster(procs: list[subprocess.Popen], port: int) -> None:
    """Stop the nodes this script started (their process groups, by id; never `ray stop`)."""
    import signal

    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    # `ray start` records its cluster for `ray.init()`; without `ray stop` the record would outlive it
    record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if record.exists() and record.read_text().strip().endswith(f":{port}"):
        record.unlink()


def _wait_port(port: int, timeout: float) -> None:
    import socket

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not open port {port} within {timeout:.0f} s")


# ---------------------------------------------------------------------------- orchestration
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--city", default="helsinki")
    p.add_argument("--seconds", type=int, default=900, help="episode length (simulated s)")
    p.add_argument("--episodes", type=int, default=8, help="whole episodes per worker per run")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--port", type=int, default=6391, help="the cluster head's port")
    p.add_argument("--no-cluster", action="store_true", help="skip the two-node Ray cluster")
    p.add_argument("--only", default="", help="run only the configs whose label contains this (e.g. cluster)")
    p.add_argument("--out", type=Path, default=DOCS_DIR)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    info = machine_info(("leed-traffic", "eclipse-sumo", "libsumo", "torch", "ray"))
    load0 = load_average()
    t_start = time.time()
    rows: list[dict] = []
    failed = []
    cluster: list[subprocess.Popen] = []
    try:
        for rep in range(args.repeats):
            for label, backend, W, on_cluster in CONFIGS:
                if (on_cluster and args.no_cluster) or args.only not in label:
                    continue
                spec = {"city": args.city, "seconds": args.seconds, "episodes": args.episodes,
                        "backend": backend, "workers": W}
                if on_cluster:
                    if not cluster:
                        cluster = start_cluster(args.port)
                    spec["ray_address"] = f"127.0.0.1:{args.port}"
                res = run_result([sys.executable, __file__, "--worker", json.dumps(spec)], timeout=900)
                print(f"{label} x{W} (repeat {rep}): {res}", flush=True)
                if res["status"] != "ok":
                    failed.append(f"{label} x{W}: {res['status']}")
                    continue
                sps = res["env_steps"] / res["loop_wall_s"]
                rows.append({
                    "config": label, "backend": backend, "workers": W, "repeat": rep,
                    "episodes": res["episodes"], "env_steps": res["env_steps"],
                    "loop_wall_s": round(res["loop_wall_s"], 2), "startup_s": round(res["startup_s"], 2),
                    "env_steps_per_s": round(sps, 1), "sim_s_per_wall_s": round(sps * res["delta_time"], 1),
                    "parallel_efficiency": "", "learner_rss_mb": round(res["learner_rss_mb"]),
                    "worker_rss_mb": " ".join(str(round(x)) for x in res["worker_rss_mb"]) or "(learner)",
                    "nodes": res["ray_nodes"] if backend == "ray" else 1,
                    "worker_core_share": round(res["worker_core_share"], 2),
                    "learner_cores": round(res["learner_cores"], 2),
                    "ray_daemon_cores": round(res["ray_daemon_cores"], 2) if backend == "ray" else "",
                    "optimize_share": round(res["optimize_share"], 2),
                })
    finally:
        if cluster:
            stop_cluster(cluster, args.port)

    # parallel efficiency: 2 workers against the same backend's 1 worker (the cluster: local processes' 1)
    def one_worker(backend: str, rep: int) -> float | None:
        for r in rows:
            if r["backend"] == backend and r["workers"] == 1 and r["repeat"] == rep:
                return r["env_steps_per_s"]
        return None

    for r in rows:
        if r["workers"] == 2:
            base = one_worker("process" if "cluster" in r["config"] else r["backend"], r["repeat"])
            if base:
                r["parallel_efficiency"] = round(r["env_steps_per_s"] / (2 * base), 2)

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "bench_scaling.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    load1 = load_average()
    write_section(args.out / "benchmarks.md", SECTION,
                  section(args, rows, failed, info, load0, load1, time.time() - t_start))
    print(f"wrote {args.out / 'bench_scaling.csv'} and the '{SECTION}' section of {args.out / 'benchmarks.md'}")
    return 1 if failed else 0


def _span(xs: list[float]) -> str:
    return f"{min(xs):.2f}" if min(xs) == max(xs) else f"{min(xs):.2f}–{max(xs):.2f}"


def section(args, rows: list[dict], failed: list[str], info: dict, load0: str, load1: str, wall: float) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    head = ["config", "workers", "env steps/s", "sim s / wall s", "parallel efficiency", "start-up (s)",
            "worker core share", "learner cores", "optimise share of loop", "Ray daemons' cores",
            "peak RSS learner (MB)", "peak RSS workers (MB)", "nodes"]
    table = [[r["config"], str(r["workers"]), f"{r['env_steps_per_s']:.0f}", f"{r['sim_s_per_wall_s']:.0f}",
              str(r["parallel_efficiency"] or "–"), f"{r['startup_s']:.1f}", f"{r['worker_core_share']:.2f}",
              f"{r['learner_cores']:.2f}", f"{r['optimize_share']:.2f}",
              "–" if r["ray_daemon_cores"] == "" else f"{r['ray_daemon_cores']:.2f}",
              str(r["learner_rss_mb"]),
              r["worker_rss_mb"], str(r["nodes"])] for r in rows]
    share = {w: [r["worker_core_share"] for r in rows if r["workers"] == w and r["backend"] != "inprocess"]
             for w in (1, 2)}
    mean = {w: sum(v) / len(v) if v else float("nan") for w, v in share.items()}
    goals = []
    for config in dict.fromkeys(r["config"] for r in rows if r["parallel_efficiency"] != ""):
        effs = [r["parallel_efficiency"] for r in rows if r["config"] == config and r["parallel_efficiency"] != ""]
        verdict = "met" if min(effs) >= 0.8 else "**MISSED**"
        goals.append(f"{config} {', '.join(map(str, effs))}: {verdict}")
    goal = "; ".join(goals) or "none measured"
    if mean[2] >= 0.9:  # the workers had their cores: what is lost is the backends' and the learner's
        reading = (f"each of two workers had {mean[2]:.2f} of a core (alone {mean[1]:.2f}), so the episodes ran at full "
                   "speed and what a backend loses is its own overhead plus the learner's PPO update, which runs while "
                   "the workers wait and grows with the data of 2 workers.")
    else:
        reading = (f"a worker playing alone got {mean[1]:.2f} of a core on average, each of two workers {mean[2]:.2f}: with "
                   "2 workers the episodes themselves ran that much slower, so what is measured is mostly the machine's "
                   "spare capacity, not the backends' overhead; treat the efficiencies as noisy lower bounds of what 2 "
                   "free cores give.")
    cost = []
    for config in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == config and r["workers"] == 2] or [r for r in rows if r["config"] == config]
        part = f"{config} x{rs[0]['workers']}: learner {_span([r['learner_cores'] for r in rs])} of a core"
        if rs[0]["ray_daemon_cores"] != "":
            part += f", Ray's own processes {_span([r['ray_daemon_cores'] for r in rs])}"
        cost.append(part + f", PPO updates {_span([r['optimize_share'] for r in rs])} of the loop")
    reading += " Where the rest of the 2 cores went, per configuration (repeats as a range): " + "; ".join(cost) + "."
    return f"""Generated by `{command_line()}` ({wall / 60:.0f} min). Machine: {machine}.

{args.city}, {args.seconds} s episodes, IPPO, {args.episodes} whole episodes per worker per run, {args.repeats} repeat(s); each run a fresh
process. Throughput = env (decision) steps and simulated seconds per wall second of the update loop (rollouts by the workers
with the broadcast weights, plus the learner's PPO updates); start-up (worker processes / Ray actors, scenario, first reset)
apart. Parallel efficiency = throughput with 2 workers / (2 x the same backend's 1 worker); the 2-node cluster is compared with
1 local process. Worker core share = CPU time / wall time of the workers' episodes (1.0: a worker had a core to itself;
0.5: it waited half the time for one). Learner cores = the learner process's CPU time over the loop / loop wall time
(inprocess: it also plays the episodes); optimise share = the loop's wall time spent in PPO updates (updates.csv
`optimize_s`), while the workers wait; Ray daemons' cores = CPU time over the loop of every other Ray process on the
machine (GCS, raylets, agents, monitors, idle workers; not the rollout actors) / loop wall time, sampled from /proc every
0.5 s. Worker RSS per worker process (inprocess: the learner is the worker). Full rows: `docs/bench_scaling.csv`.

{markdown_table(head, table)}

Goal (issue 13): parallel efficiency ≥ 0.8 with 2 workers, per configuration and repeat: {goal}.

Reading: 2 cores (load average {load0} at start, {load1} at the end; the learner, the SUMO workers and, with
Ray, its GCS and raylets share them): {reading} Ray adds start-up time (its daemons and actors) but only finished
trajectories and weights travel. Every backend plays the same episodes for the same seed (tests/test_backends.py), so
they differ in speed only.
{'' if not failed else chr(10) + 'Failed: ' + '; '.join(failed)}"""


if __name__ == "__main__":
    sys.exit(main())
