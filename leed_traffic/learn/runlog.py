"""What a training run reports while it runs: metrics.csv, updates.csv and the progress bar.

Both CSVs are append-only logs owned by the run directory (``RunDir.metrics_log`` /
``updates_log``); ``TrainLog`` counts their rows so a checkpoint can record them and a resumed
run can drop the rows written after it (``resume``). ``wall_time`` columns count training time
only, across resumes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from leed_traffic.rundir import RunDir

if TYPE_CHECKING:
    from leed_traffic.learn.demo_batch import Demonstrations
    from leed_traffic.learn.episodes import EpisodeState
    from leed_traffic.learn.expert_weight import WeightInfo

METRICS_FIELDS = (
    "episode", "update", "worker", "seed", "env_steps", "sim_time", "wall_time", "return",
    "mean_delay", "expert_weight",
)
UPDATE_FIELDS = (
    "update", "env_steps", "wall_time", "lr", "pg_loss", "v_loss", "entropy", "expert_loss",
    "approx_kl", "clipfrac", "expert_weight", "dtw_distance", "return_decay", "reled_kept",
    "steps_per_s", "sim_s_per_wall_s", "expert_kept", "expert_weight_eff",
    "expert_trust", "collect_s", "optimize_s",
)
"""``expert_kept``: the gate's kept fraction of the demo states (the share imitated), mean
over the agents with demos (nan while ungated); ``expert_weight_eff``: mean over all agents of
w_i x kept_i, the weight the expert loss really has (= expert_weight while ungated); ``expert_trust``:
the share of the agents with demos that trusted their demonstrator (nan without the trust test);
``collect_s`` / ``optimize_s``: wall seconds of this update's rollout and of its PPO(+expert) optimisation
(the learner's update time, which issue 13 wants flat per agent as cities grow). New columns go
last, so that the rows of a log written by an earlier version still line up on resume."""


def mean_weight(weights: dict[str, "WeightInfo"]) -> float:
    """The mean expert weight over agents (0 before the first update)."""
    return float(np.mean([i.weight for i in weights.values()])) if weights else 0.0


def weight_columns(weights: dict[str, "WeightInfo"], demos: "Demonstrations | None",
                   masked: bool) -> dict[str, float]:
    """updates.csv's expert columns: mean weight over all agents; DTW distance and return decay
    over the agents with demonstrations (all agents when none has any); RELED's kept fraction
    (``masked``); the gate's kept fraction and the effective weight (any gated learner)."""
    ws = [i for a, i in weights.items() if demos is not None and a in demos] or list(weights.values())
    dists = [i.distance for i in ws if np.isfinite(i.distance)]
    gated = demos is not None and demos.gated
    kept = [i.kept for i in ws if np.isfinite(i.kept)]
    trust = [i.trust for i in ws if np.isfinite(i.trust)]
    return dict(
        expert_weight=float(np.mean([i.weight for i in weights.values()])),
        dtw_distance=float(np.mean(dists)) if dists else float("nan"),
        return_decay=float(np.mean([i.decay for i in ws])),
        reled_kept=demos.kept_fraction() if masked and demos is not None else float("nan"),
        expert_kept=float(np.mean(kept)) if gated and kept else float("nan"),
        expert_weight_eff=float(np.mean([i.weight * (i.kept if gated and np.isfinite(i.kept) else 1.0)
                                         for i in weights.values()])),
        expert_trust=float(np.mean(trust)) if gated and trust else float("nan"),
    )


class TrainLog:
    """metrics.csv (one row per episode), updates.csv (one row per update), the progress bar."""

    def __init__(self, run: RunDir, label: str, show_progress: bool = True) -> None:
        self.metrics = run.metrics_log(METRICS_FIELDS)
        self.updates = run.updates_log(UPDATE_FIELDS)
        self.metrics_rows = self.update_rows = 0
        self.label, self.show_progress = label, show_progress
        self._offset, self._t0 = 0.0, time.time()
        self._last: dict[str, float] = {}
        self._bar: Any = None
        self._task: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """A fresh run: empty logs."""
        self.metrics.start()
        self.updates.start()

    def resume(self, metrics_rows: int, update_rows: int, wall_time: float) -> None:
        """A resumed run: drop rows written after the checkpoint (they will be produced again)."""
        self.metrics.truncate(metrics_rows)
        self.updates.truncate(update_rows)
        self.metrics_rows, self.update_rows, self._offset = metrics_rows, update_rows, wall_time

    def start_clock(self) -> None:
        self._t0 = time.time() - self._offset

    def elapsed(self) -> float:
        """Training wall time so far (including the runs this one resumed)."""
        return time.time() - self._t0

    def state_dict(self) -> dict[str, Any]:
        return {"metrics_rows": self.metrics_rows, "update_rows": self.update_rows, "wall_time": self.elapsed()}

    # ------------------------------------------------------------------ rows
    def episode(self, ep: "EpisodeState", *, number: int, update: int, worker: int, env_steps: int,
                expert_weight: float) -> None:
        delay = ep.mean_delay
        row = {
            "episode": number, "update": update, "worker": worker, "seed": ep.seed,
            "env_steps": env_steps, "sim_time": round(ep.sim_time, 3),
            "wall_time": round(self.elapsed(), 3),
            "return": round(float(np.sum(ep.returns)), 6),
            "mean_delay": round(delay, 6) if delay is not None else "",
            "expert_weight": round(expert_weight, 6),
        }
        self.metrics.append(row)
        self.metrics_rows += 1
        self._last = {"episode": number, "sim_time": ep.sim_time, "return": row["return"],
                      "delay": delay or 0.0, "w": expert_weight}
        if self._bar is not None:
            self._bar.update(self._task, description=self.describe())

    def update(self, update: int, env_steps: int, stats: dict[str, float]) -> None:
        self.updates.append({"update": update, "env_steps": env_steps,
                             "wall_time": round(self.elapsed(), 3), **stats})
        self.update_rows += 1

    # ------------------------------------------------------------------ progress bar
    def describe(self) -> str:
        i = self._last
        if not i:
            return self.label
        return (f"{self.label} | ep {i['episode']} | sim {i['sim_time']:.0f}s | "
                f"return {i['return']:.1f} | delay {i['delay']:.1f}s | w {i['w']:.3f}")

    @contextmanager
    def progress(self, total: int, completed: int) -> Iterator[None]:
        """The rich progress bar over environment steps, for the ``with`` block."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), disable=not self.show_progress, transient=False)
        self._task = bar.add_task(self.describe(), total=total, completed=completed)
        self._bar = bar
        try:
            with bar:
                yield
        finally:
            self._bar = None

    def advance(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, steps)
