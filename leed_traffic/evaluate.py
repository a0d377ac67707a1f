"""One evaluation path for every controller: classical programs, rule-based and learned policies.

Each episode runs the scenario with SUMO's tripinfo (unfinished trips included), summary and
statistics outputs, then ``metrics.episode_metrics`` turns them into one row. Same scenario,
same seeds, same code for everyone, so the numbers are comparable.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from leed_traffic.controllers import Controller, get_controller
from leed_traffic.env import EnvConfig, LeedTrafficEnv, play_episode
from leed_traffic.fileio import atomic_write
from leed_traffic.metrics import METRIC_COLUMNS, episode_metrics
from leed_traffic.scenario import Scenario, build_scenario

log = logging.getLogger(__name__)

ALL_CLASSICAL = ("fixed", "webster", "actuated", "max-pressure", "greedy")


def run_episode(
    scenario: Scenario, controller: Controller, seed: int, *, seconds: int | None = None,
    workdir: Path, env_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one episode under ``controller`` and return its metrics row."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{controller.name}_s{seed}"
    trip, summ, stats = (workdir / f"{tag}.{k}.xml" for k in ("tripinfo", "summary", "statistics"))
    opts = dict(env_options or {})
    opts.update(controller.prepare(scenario, workdir, seed))
    sumo_args = tuple(opts.pop("sumo_args", ())) + (
        "--summary-output", str(summ), "--statistic-output", str(stats),
    )
    env = LeedTrafficEnv(scenario, EnvConfig(seed=seed, seconds=seconds, tripinfo=str(trip),
                                             sumo_args=sumo_args, **opts))
    play_episode(env, seed, (lambda obs: controller.act(env, obs)) if controller.decides else None)
    m = episode_metrics(trip, [scenario.route_file(seed)], env.begin, env.end, summary=summ, statistics=stats)
    return {"controller": controller.name, "seed": seed, **m.as_dict()}


def held_out_seeds(scenario: Scenario, n: int, first: int | None = None) -> list[int]:
    """The ``n`` evaluation seeds: ``first, first+1, ...`` when ``first`` is given, else the
    scenario's held-out seeds (never used for training) continued one by one after the last:
    ``eval_seeds=(100, 101, 102)`` gives 100, 101, 102, 103, 104, ..."""
    if first is not None:
        return [first + i for i in range(n)]
    base = list(scenario.eval_seeds)
    return [base[i] if i < len(base) else base[-1] + i - len(base) + 1 for i in range(n)]


def evaluate(
    city: str | Scenario, controllers: Sequence[str | Controller] = ALL_CLASSICAL, *, episodes: int = 1,
    seconds: int | None = None, seed: int | None = None, seeds: Sequence[int] | None = None,
    out: Path | None = None, env_options: dict[str, Any] | None = None, progress: bool = True,
) -> pd.DataFrame:
    """Evaluate controllers over ``episodes`` seeds; write ``out/metrics.csv`` atomically.

    Seeds are ``held_out_seeds(scenario, episodes, seed)``: the scenario's held-out evaluation
    seeds unless ``seed`` is given, in which case episodes use ``seed, seed+1, ...``. An explicit
    ``seeds`` list overrides both (and ``episodes``).
    """
    scenario = city if isinstance(city, Scenario) else build_scenario(city)
    ctrls = [get_controller(c) if isinstance(c, str) else c for c in controllers]
    seeds = [int(s) for s in seeds] if seeds is not None else held_out_seeds(scenario, episodes, seed)
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="leed-eval-"))
    try:
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"evaluating {scenario.city}", total=len(ctrls) * len(seeds))
            for c in ctrls:
                for s in seeds:
                    bar.update(task, description=f"{scenario.city}: {c.name} seed {s}")
                    rows.append(run_episode(scenario, c, s, seconds=seconds, workdir=work / c.name,
                                            env_options=env_options))
                    bar.advance(task)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame(rows)
    cols = ["controller", "seed", *METRIC_COLUMNS]
    df = df[cols + [c for c in df.columns if c not in cols]]
    if out is not None:
        write_csv_atomic(df, Path(out) / "metrics.csv")
    return df


ENV_DECIDING = ("max-pressure", "greedy")
"""Classical controllers that decide through the env, so its phase rules (max green) apply to them.

A policy trained with ``enforce_max_green`` is compared with these under the same rule as well as
with the controllers as they are (``pipeline.evaluate_classical``): the rule alone changes them a
lot (max-pressure on helsinki)."""
MAX_GREEN_SUFFIX = " (max green)"


def write_csv_atomic(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(Path(path), lambda tmp: df.to_csv(tmp, index=False))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std per controller (std 0 for a single episode)."""
    g = df.groupby("controller", sort=False)
    mean, std = g[list(METRIC_COLUMNS)].mean(), g[list(METRIC_COLUMNS)].std(ddof=0).fillna(0.0)
    out = mean.copy()
    for c in METRIC_COLUMNS:
        out[f"{c}_std"] = std[c]
    out["episodes"] = g.size()
    return out.reset_index()


GRIDLOCK_FRACTION = 0.05
"""A fixed-time hour that teleports or never inserts more than this share of vehicles is gridlocked."""


def check_demand(scenario: Scenario, seed: int | None = None, seconds: int | None = None) -> dict[str, Any]:
    """Run SUMO's own fixed-time programs once and refuse demand that gridlocks them.

    The calibration target for bundled cities is stricter (teleports < 1 %, nothing left waiting
    to insert); this check only catches demand that makes the scenario useless.
    """
    from leed_traffic.controllers import FixedTime
    from leed_traffic.errors import ScenarioError

    seed = scenario.eval_seeds[0] if seed is None else seed
    work = Path(tempfile.mkdtemp(prefix="leed-check-"))
    try:
        row = run_episode(scenario, FixedTime(), seed, seconds=seconds, workdir=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    inserted = max(row["vehicles"] - row["never_inserted"], 1)
    tele, never = row["teleports"] / inserted, row["never_inserted"] / max(row["vehicles"], 1)
    row["teleport_fraction"], row["never_inserted_fraction"] = tele, never
    if tele > GRIDLOCK_FRACTION or never > GRIDLOCK_FRACTION:
        raise ScenarioError(
            f"The demand gridlocks {scenario.city} under fixed time ({tele:.0%} of vehicles teleported, "
            f"{never:.0%} never got into the network); lower the demand (--demand VEH_PER_H, or the city's "
            "scenarios/<city>.toml)."
        )
    return row
