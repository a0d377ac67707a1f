"""The one experiment pipeline: scenario -> demonstrations -> training -> evaluation -> report.

``run_experiment(cfg, run_dir)`` is what ``leed-traffic train`` runs and what every benchmark
script calls, so a rule (the step budget, the held-out seeds, when to resume, what a failing
classical controller does to the comparison) is written here once. Each stage is resumable:
re-running the same experiment into the same directory continues training from the last
checkpoint, keeps completed demonstration rounds, and skips an evaluation that already ran for
the same policy and settings.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from leed_traffic.config import ExperimentConfig
from leed_traffic.errors import UserError
from leed_traffic.learn.serving import final_env_steps
from leed_traffic.rundir import DEPLOY, MODES, RunDir
from leed_traffic.scenario import Scenario

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class ExperimentResult:
    run: RunDir
    config: ExperimentConfig
    scenario: Scenario
    trained: str
    """"trained", "resumed" or "finished" (the run had already reached its budget)."""
    evaluation: pd.DataFrame | None = None
    """Per (controller, seed) rows of the held-out evaluation (None: no evaluation)."""
    summary: pd.DataFrame | None = None
    """Mean and std per controller."""
    failed_controllers: dict[str, str] = dataclasses.field(default_factory=dict)
    """Classical controllers that could not run on this scenario, with the reason."""
    deployed_mode: str | None = None
    """"sampled" or "argmax": what export, gui and report use (``select_mode``; None: not evaluated)."""
    wall_s: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds per stage (demos, train, eval, report)."""


# ---------------------------------------------------------------------- rules written once
def scenario_of(cfg: ExperimentConfig, *, force: bool = False) -> Scenario:
    """The experiment's scenario (built or taken from the cache)."""
    from leed_traffic.cities import resolve_city, with_demand
    from leed_traffic.scenario import build_scenario

    sc = cfg.scenario
    spec = with_demand(resolve_city(sc.city, lefthand=sc.lefthand), veh_per_hour=sc.veh_per_hour,
                       fit=sc.fit_demand, counts=sc.counts)
    return build_scenario(spec, force=force)


def decisions_per_episode(scenario: Scenario, cfg: ExperimentConfig) -> int:
    """Decision steps in one episode: episode length // decision interval (at least 1)."""
    length = cfg.env.seconds or (scenario.end - scenario.begin)
    delta = cfg.env.delta_time or scenario.delta_time
    return max(1, int(length) // int(delta))


def default_run_dir(cfg: ExperimentConfig, scenario: Scenario) -> Path:
    return Path("runs") / f"{scenario.city}-{cfg.train.algo}-s{cfg.train.seed}"


def resolve(cfg: ExperimentConfig, scenario: Scenario) -> ExperimentConfig:
    """Fill in what the defaults leave to the scenario: the step budget and the held-out seeds."""
    from leed_traffic.evaluate import held_out_seeds

    if cfg.train.episodes:
        cfg.train.total_env_steps = cfg.train.episodes * decisions_per_episode(scenario, cfg)
    if cfg.eval.seeds:
        cfg.eval.episodes = len(cfg.eval.seeds)
    elif cfg.eval.episodes:
        cfg.eval.seeds = tuple(held_out_seeds(scenario, cfg.eval.episodes))
    return cfg


# ---------------------------------------------------------------------- the pipeline
def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = True,
    say: Say | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run (or continue) one experiment in one run directory; returns what it measured.

    ``resume``: True continues a run that has a checkpoint and starts one that has none (what
    benchmarks want); False refuses a directory that already holds a run (the CLI without
    ``--resume``, so a typo cannot append to someone else's run).
    """
    say = say or (lambda text: log.info(text))
    cfg.validate()
    scenario = scenario_of(cfg)
    resolve(cfg, scenario)
    run = RunDir(Path(run_dir) if run_dir is not None else default_run_dir(cfg, scenario))
    has_ckpt = run.latest_checkpoint() is not None
    if has_ckpt and not resume:
        raise UserError(f"{run.path} already holds a run; pass --resume to continue it, or choose "
                        "another --out directory.")
    run.path.mkdir(parents=True, exist_ok=True)
    _write_config(run, cfg, scenario)
    result = ExperimentResult(run=run, config=cfg, scenario=scenario, trained="trained")

    t0 = time.perf_counter()
    dataset = demonstrations(cfg, scenario, run.demos_dir, say, progress)
    result.wall_s["demos"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result.trained = train_stage(cfg, scenario, run, dataset, resume=has_ckpt, progress=progress)
    result.wall_s["train"] = time.perf_counter() - t0
    say(f"run: {run.path} ({result.trained})")

    if cfg.eval.episodes:
        t0 = time.perf_counter()
        evaluate_stage(cfg, scenario, run, result, say, progress)
        result.wall_s["eval"] = time.perf_counter() - t0
        if cfg.eval.report:
            from leed_traffic.report import write_report

            t0 = time.perf_counter()
            _md, html = write_report(run.path)
            result.wall_s["report"] = time.perf_counter() - t0
            say(f"report: {html}")
    return result


def _write_config(run: RunDir, cfg: ExperimentConfig, scenario: Scenario, **extra: Any) -> None:
    """config.json: the experiment as it runs, and (after training) the env it trained in."""
    from importlib.metadata import PackageNotFoundError, version

    old = run.config() if run.exists() else {}
    try:
        versions = {p: version(p) for p in ("leed-traffic", "eclipse-sumo", "torch")}
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        versions = {}
    record = {
        "scenario_hash": scenario.hash,
        "agents": scenario.n_agents,
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "versions": versions,
    }
    data = {"experiment": cfg.to_dict(), "record": {**old.get("record", {}), **record}}
    for key in ("env", "fingerprint", "city"):
        if key in old:
            data[key] = old[key]
    data.update(extra)
    run.write_config(data)


def demonstrations(cfg: ExperimentConfig, scenario: Scenario, out: Path, say: Say, progress: bool):
    """The demonstration dataset the learner imitates (None for learners that need none):
    ``demos.path`` if given, else generated (or resumed) in ``out``."""
    from leed_traffic.dataset import DemoDataset
    from leed_traffic.learn.algos import get_algorithm

    if not get_algorithm(cfg.train.algo).uses_demos:
        return None
    return DemoDataset.load(demonstration_path(cfg, scenario, out, say, progress))


def demonstration_path(cfg: ExperimentConfig, scenario: Scenario, out: Path, say: Say, progress: bool) -> Path:
    """``demos.path``, or the dataset ``cfg.demos`` generates (or resumes) in ``out`` (benchmarks
    that reuse one city's demonstrations across runs call this once and set ``demos.path``)."""
    path = Path(cfg.demos.path) if cfg.demos.path else None
    if path is None:
        from leed_traffic.demos import generate_demos

        d = cfg.demos
        say(f"demonstrations ({d.llm}, {d.rounds} rounds) -> {out}")
        env_options = {k: v for k, v in cfg.env.options().items() if k != "seconds"}
        path = generate_demos(scenario, llm=d.llm, rounds=d.rounds, seconds=cfg.env.seconds, out=out,
                              seed=cfg.train.seed, env_options=env_options, keep=d.keep,
                              require_beat_fixed=d.require_beat_fixed, model=d.model,
                              progress=progress, episodes=d.episodes, backend=cfg.train.backend,
                              workers=cfg.train.n_workers, ray_address=cfg.train.ray_address)
    return path


def train_stage(cfg: ExperimentConfig, scenario: Scenario, run: RunDir, dataset, *, resume: bool,
                progress: bool) -> str:
    """Train to the budget; "finished" when the run's final policy already reached it."""
    from leed_traffic.learn import EnvFactory, train

    done = final_env_steps(run)
    if done is not None and done >= cfg.train.total_env_steps:
        return "finished"
    # the progress bar is not part of the experiment: config.json keeps the setting as configured
    train_cfg = dataclasses.replace(cfg.train, progress=cfg.train.progress and progress)
    result = train(train_cfg, run, EnvFactory(scenario, cfg.env.options()), dataset, resume=resume)
    meta = run.config()
    meta["env"] = result.spec.to_dict()
    meta["fingerprint"] = result.fingerprint
    meta["city"] = scenario.city
    run.write_config(meta)
    return "resumed" if resume else "trained"


def evaluate_controllers(scenario: Scenario, controllers: list, seeds: list[int], *, seconds: int | None,
                         env_options: dict[str, Any] | None = None, suffix: str = "", progress: bool = False,
                         tolerate: bool = True) -> tuple[list[pd.DataFrame], dict[str, str]]:
    """Evaluate controllers one at a time on ``seeds``; ``(frames, failed)``.

    The one rule for a controller that cannot run on a scenario (SUMO's Webster tool fails on one
    ingolstadt21 junction, ../shared/ANCHORS.md): with ``tolerate`` it is reported in ``failed``
    (name -> reason) and the other controllers' rows are kept; without, it raises.
    """
    from leed_traffic.evaluate import evaluate

    frames, failed = [], {}
    for c in controllers:
        try:
            df = evaluate(scenario, [c], seeds=seeds, seconds=seconds, env_options=env_options, progress=progress)
        except Exception as exc:  # noqa: BLE001 - reported, the others' rows are kept
            if not tolerate:
                raise
            failed[c.name + suffix] = f"{type(exc).__name__}: {exc}"
            log.warning("controller %s could not run on %s: %s", c.name, scenario.city, exc)
            continue
        if suffix:
            df["controller"] = df["controller"] + suffix
        frames.append(df)
    return frames, failed


def evaluate_classical(cfg: ExperimentConfig, scenario: Scenario, *, progress: bool = False
                       ) -> tuple[list[pd.DataFrame], list[pd.DataFrame], dict[str, str]]:
    """The configured classical controllers on the held-out seeds, and, when the env enforces max
    green, the env-deciding ones (max-pressure, greedy) under the same rule as extra rows
    ("<name> (max green)"): ``(as_they_are, under_max_green, failed)``."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import ENV_DECIDING, MAX_GREEN_SUFFIX

    ev, seeds = cfg.eval, list(cfg.eval.seeds)
    frames, failed = evaluate_controllers(scenario, [get_controller(n) for n in ev.controllers], seeds,
                                          seconds=cfg.env.seconds, progress=progress)
    ruled: list[pd.DataFrame] = []
    if ev.max_green_rows and cfg.env.enforce_max_green:
        ruled, failed2 = evaluate_controllers(
            scenario, [get_controller(n) for n in ENV_DECIDING if n in ev.controllers], seeds,
            seconds=cfg.env.seconds, env_options={"enforce_max_green": True}, suffix=MAX_GREEN_SUFFIX,
            progress=progress)
        failed.update(failed2)
    return frames, ruled, failed


def select_mode(cfg: ExperimentConfig, scenario: Scenario, run: RunDir, say: Say, progress: bool) -> str:
    """Choose the deployed action mode of the final policy on its training seeds; writes
    ``evaluation/deploy.json`` (and ``validation.csv``) and returns "sampled" or "argmax".

    Both modes play ``eval.validation_episodes`` episodes on ``learn.episodes.validation_seeds``;
    the lower honest mean delay wins, a tie keeps the sampled policy PPO trained. Redone only
    when the policy or the seeds changed. With no validation episodes the sampled policy is
    deployed without a measurement.
    """
    from leed_traffic.controllers import get_controller
    from leed_traffic.learn.episodes import validation_seeds

    n = cfg.eval.validation_episodes
    seeds = validation_seeds(cfg.train.seed, n)
    key = {"policy_env_steps": final_env_steps(run), "seeds": seeds, "seconds": cfg.env.seconds}
    stamp = run.read_json(DEPLOY)
    if isinstance(stamp, dict) and stamp.get("key") == key:
        return run.deployed_mode()
    if n == 0:
        run.write_json(DEPLOY, {"key": key, "mode": "sampled", "why": "no validation episodes"})
        return "sampled"
    policies = [get_controller("policy", run=run.path, sample=s) for s in (True, False)]
    frames, _ = evaluate_controllers(scenario, policies, seeds, seconds=cfg.env.seconds, progress=progress,
                                     tolerate=False)
    df = pd.concat(frames, ignore_index=True)
    run.write_table(run.validation_path, df)
    delay = {mode: float(df[df["controller"] == p.name]["mean_delay"].mean()) for mode, p in zip(MODES, policies)}
    mode = "argmax" if delay["argmax"] < delay["sampled"] else "sampled"
    run.write_json(DEPLOY, {"key": key, "mode": mode, "validation_mean_delay": delay})
    say(f"deployed mode: {mode} (training seeds {', '.join(map(str, seeds))}: sampled {delay['sampled']:.1f} s, "
        f"argmax {delay['argmax']:.1f} s mean delay)")
    return mode


def evaluate_stage(cfg: ExperimentConfig, scenario: Scenario, run: RunDir, result: ExperimentResult,
                   say: Say, progress: bool) -> None:
    """The final policy (sampled, and argmax) against the classical controllers on the held-out seeds,
    after ``select_mode`` chose which of the two is deployed.

    Redone only when the policy or the evaluation settings changed (``evaluation/done.json``).
    """
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import summarize

    ev = cfg.eval
    result.deployed_mode = select_mode(cfg, scenario, run, say, progress)
    key = {"policy_env_steps": final_env_steps(run), "seeds": list(ev.seeds), "controllers": list(ev.controllers),
           "argmax": ev.argmax, "max_green_rows": ev.max_green_rows, "seconds": cfg.env.seconds,
           "deployed": result.deployed_mode}
    stamp = run.read_json(DONE)
    if isinstance(stamp, dict) and stamp.get("key") == key and run.evaluation_path.is_file():
        df, failed = pd.read_csv(run.evaluation_path), dict(stamp.get("failed", {}))
    else:
        policies = [get_controller("policy", run=run.path, sample=True)]
        if ev.argmax or result.deployed_mode == "argmax":
            policies.append(get_controller("policy", run=run.path, sample=False))
        classical, ruled, failed = evaluate_classical(cfg, scenario, progress=progress)
        mine, _ = evaluate_controllers(scenario, policies, list(ev.seeds), seconds=cfg.env.seconds,
                                       progress=progress, tolerate=False)
        df = pd.concat(classical + mine + ruled, ignore_index=True)
        run.write_table(run.evaluation_path, df)
        run.write_json(DONE, {"key": key, "failed": failed})
    result.failed_controllers = failed
    result.evaluation = df
    result.summary = summarize(df)
    deployed = run.deployed_row
    write_comparison(run, result.summary, failed, deployed=deployed)
    say(comparison_text(result.summary, scenario.city, len(ev.seeds)) + f"\n  deployed: {deployed}")


DONE = "evaluation/done.json"


def write_comparison(run: RunDir, summary: pd.DataFrame, failed: dict[str, str], deployed: str | None = None) -> None:
    run.write_table(run.comparison_csv, summary)
    lines = ["| controller | mean delay (s) | travel time (s) | throughput | teleports |", "|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        name = f"**{r.controller}** (deployed)" if r.controller == deployed else r.controller
        lines.append(f"| {name} | {r.mean_delay:.1f} ± {r.mean_delay_std:.1f} | {r.mean_travel_time:.1f} "
                     f"| {r.throughput:.0f} | {r.teleports:.0f} |")
    for name, why in failed.items():
        lines.append(f"| {name} | could not run: {why.splitlines()[0][:120]} | | | |")
    run.write_text(run.comparison_md.name, "\n".join(lines) + "\n")


def comparison_text(summary: pd.DataFrame, city: str, episodes: int) -> str:
    rows = [f"{city}: held-out seeds, {episodes} episode(s) each"]
    for _, r in summary.iterrows():
        rows.append(f"  {r.controller:<28} delay {r.mean_delay:6.1f} ± {r.mean_delay_std:4.1f} s  "
                    f"travel {r.mean_travel_time:6.1f} s  throughput {r.throughput:5.0f}  teleports {r.teleports:.0f}")
    return "\n".join(rows)
