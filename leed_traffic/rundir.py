"""The run directory: the only code that knows where a run's files live and how they are written.

One experiment = one directory::

    config.json           the ExperimentConfig as it ran (resolved: seeds, budget, scenario hash)
    metrics.csv           one row per training episode
    updates.csv           one row per PPO update
    pretrain.json         behaviour-cloning warm start (LEED/BC)
    checkpoints/          fingerprinted checkpoints (the newest few)
    policy.pt             the final policy
    demos/                demonstration rounds and dataset/
    evaluation/deploy.json  the deployed action mode (sampled or argmax), chosen on training seeds
    evaluation/validation.csv  the episodes that chose it
    evaluation/metrics.csv  per (controller, seed) held-out evaluation
    comparison.{csv,md}   evaluation summary
    export/               signal plans, timing table, ONNX models
    report.{md,html}, report/   the run's report and its figures

Every writer is atomic (``fileio``) except the two append-only CSV logs, which are truncated to
the checkpoint's row count on resume. Readers (export, report, gui, evaluation) open a run with
``RunDir.open`` and get one-sentence ``UserError``s for missing or damaged runs.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from leed_traffic.errors import UserError
from leed_traffic.fileio import atomic_dir, atomic_write, atomic_write_json, atomic_write_text

CONFIG = "config.json"
METRICS = "metrics.csv"
UPDATES = "updates.csv"
PRETRAIN = "pretrain.json"
POLICY = "policy.pt"
CHECKPOINTS = "checkpoints"
DEMOS = "demos"
EVALUATION = "evaluation"
DEPLOY = "evaluation/deploy.json"
MODES = ("sampled", "argmax")
"""How a policy picks its phase: a draw from pi (as PPO trained) or its most likely phase."""


def policy_row(algo: str, sample: bool) -> str:
    """A policy's controller name in evaluations: ``<algo>`` sampled, ``<algo>-argmax`` otherwise."""
    return algo if sample else f"{algo}-argmax"
EXPORT = "export"
REPORT = "report"
REPLAYED_OPTIONS = ("delta_time", "yellow_time", "all_red_time", "min_green", "max_green",
                    "enforce_max_green", "observation", "reward")
"""Env options that change what a policy observes or how its actions act: evaluation, export,
gui and report replay them from the run's config.json."""
_CKPT = re.compile(r"^ckpt_(\d{8})\.pt$")


class CsvLog:
    """An append-only CSV log with a fixed header (metrics.csv, updates.csv)."""

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path, self.fields = Path(path), tuple(fields)

    def start(self) -> None:
        """A new, empty log (header only)."""
        atomic_write(self.path, lambda p: self._write(p, []))

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` rows: those written before the checkpoint a run resumes from."""
        lines: list[list[str]] = []
        if self.path.exists():
            with self.path.open(newline="") as f:
                lines = list(csv.reader(f))[1: 1 + rows]
        atomic_write(self.path, lambda p: self._write(p, lines))

    def _write(self, path: Path, lines: list[list[str]]) -> None:
        with path.open("w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(self.fields)
            wr.writerows(lines)


@dataclass(frozen=True)
class RunDir:
    """A run directory. ``RunDir(path)`` names it; ``RunDir.open(path)`` validates an existing one."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path, *, need_policy: bool = True) -> "RunDir":
        """An existing run; a missing or incomplete one raises a one-sentence ``UserError``."""
        run = cls(Path(path))
        d = run.path
        if not d.is_dir():
            raise UserError(f"Run directory {d} does not exist; pass the directory `leed-traffic train` wrote.")
        missing = [] if (d / CONFIG).is_file() else [CONFIG]
        if need_policy and not run.has_policy():
            missing.append(f"{POLICY} (or {CHECKPOINTS}/ckpt_*.pt)")
        if missing:
            raise UserError(f"{d} is an incomplete training run: {', '.join(missing)} missing; "
                            "finish or resume the run with `leed-traffic train --resume`.")
        run.config()  # readable, or a UserError
        return run

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def has_policy(self) -> bool:
        return (self.path / POLICY).is_file() or self.latest_checkpoint() is not None

    # ------------------------------------------------------------------ config
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def write_config(self, data: dict[str, Any]) -> Path:
        return atomic_write_json(self.config_path, data)

    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.config_path} is unreadable ({exc}); the run directory is damaged.") from exc

    # What readers need from config.json. Layout (written by ``pipeline.run_experiment``):
    # {"experiment": ExperimentConfig sections, "env": EnvSpec dict (agents, sizes, env_config,
    #  scenario_hash), "fingerprint": ..., "city": ...}. Runs of earlier versions had
    # {"city", "config": TrainConfig dict, "env", "fingerprint"}; both are read.
    @property
    def dir(self) -> Path:
        return self.path

    @property
    def env_spec(self) -> dict[str, Any]:
        """The environment the policy was trained in (EnvSpec as a dict; {} before training)."""
        return dict(self.config().get("env") or {})

    @property
    def city(self) -> str:
        meta = self.config()
        city = self.env_spec.get("city") or meta.get("city") or meta.get("experiment", {}).get(
            "scenario", {}).get("city")
        if not city:
            raise UserError(f"{self.config_path} names no city; the run directory is damaged.")
        return str(city)

    @property
    def algo(self) -> str:
        meta = self.config()
        train = meta.get("experiment", {}).get("train") or meta.get("config") or {}
        return str(train.get("algo", "policy"))

    @property
    def scenario_hash(self) -> str:
        return str(self.env_spec.get("scenario_hash", ""))

    @property
    def env_config(self) -> dict[str, Any]:
        """The env's own options as they ran (reward, observation, delta_time, max green...)."""
        return dict(self.env_spec.get("env_config") or {})

    @property
    def env_options(self) -> dict[str, Any]:
        """The options that change what the policy sees or does, replayed wherever it runs."""
        cfg = self.env_config
        return {k: cfg[k] for k in REPLAYED_OPTIONS if cfg.get(k) is not None}

    @property
    def seconds(self) -> int | None:
        s = self.env_config.get("seconds")
        return int(s) if s else None

    def scenario(self):
        """The scenario this run trained on: its cached build, else the city's current build,
        refused when that has another hash (network or demand changed since)."""
        from leed_traffic.scenario import scenario_with_hash

        return scenario_with_hash(self.city, self.scenario_hash, f"{self.path} was trained on")

    # ------------------------------------------------------------------ logs
    def metrics_log(self, fields: Sequence[str]) -> CsvLog:
        return CsvLog(self.path / METRICS, fields)

    def updates_log(self, fields: Sequence[str]) -> CsvLog:
        return CsvLog(self.path / UPDATES, fields)

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def updates_path(self) -> Path:
        return self.path / UPDATES

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_json(self.path / name, data)

    def read_json(self, name: str) -> Any | None:
        p = self.path / name
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError as exc:
            raise UserError(f"{p} is unreadable ({exc}); the run directory is damaged.") from exc

    def write_pretrain(self, data: dict[str, Any]) -> Path:
        return self.write_json(PRETRAIN, data)

    # ------------------------------------------------------------------ checkpoints and policy
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_path(self, update: int) -> Path:
        return self.checkpoints_dir / f"ckpt_{update:08d}.pt"

    def checkpoints(self) -> list[Path]:
        d = self.checkpoints_dir
        return sorted(p for p in d.iterdir() if _CKPT.match(p.name)) if d.is_dir() else []

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def prune_checkpoints(self, keep: int) -> None:
        for p in self.checkpoints()[:-keep] if keep > 0 else []:
            p.unlink(missing_ok=True)

    @property
    def policy_path(self) -> Path:
        return self.path / POLICY

    def write_binary(self, path: Path, write: Callable[[Path], None]) -> Path:
        """Atomic write of any file inside the run (checkpoints, policy)."""
        return atomic_write(path, write)

    # ------------------------------------------------------------------ demonstrations
    @property
    def demos_dir(self) -> Path:
        return self.path / DEMOS

    # ------------------------------------------------------------------ evaluation
    @property
    def evaluation_dir(self) -> Path:
        return self.path / EVALUATION

    @property
    def evaluation_path(self) -> Path:
        return self.evaluation_dir / "metrics.csv"

    @property
    def validation_path(self) -> Path:
        return self.evaluation_dir / "validation.csv"

    def deployed_mode(self) -> str:
        """The action mode export, gui, report and ``--controller policy`` use: the one the run's
        validation chose (``evaluation/deploy.json``), "sampled" (as trained) when none ran."""
        d = self.read_json(DEPLOY)
        mode = d.get("mode") if isinstance(d, dict) else None
        if mode is None:
            return "sampled"
        if mode not in MODES:
            raise UserError(f"{self.path / DEPLOY} names mode {mode!r}, not one of {', '.join(MODES)}; "
                            "delete it to deploy the sampled policy, or rerun the evaluation.")
        return mode

    @property
    def deployed_row(self) -> str:
        """The evaluation row (controller name) of the deployed policy."""
        return policy_row(self.algo, self.deployed_mode() == "sampled")

    def write_table(self, path: Path, df: Any) -> Path:
        """A pandas DataFrame as CSV, atomically."""
        return atomic_write(path, lambda p: df.to_csv(p, index=False))

    def read_table(self, path: Path) -> Any | None:
        """A CSV written by the run as a DataFrame (None when absent or empty)."""
        import pandas as pd

        if not path.is_file():
            return None
        try:
            df = pd.read_csv(path)
        except (ValueError, OSError):
            return None
        return df if len(df) else None

    def write_text(self, name: str | Path, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    @property
    def comparison_csv(self) -> Path:
        return self.path / "comparison.csv"

    @property
    def comparison_md(self) -> Path:
        return self.path / "comparison.md"

    # ------------------------------------------------------------------ export and report
    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT

    def build_dir(self, final: Path, *, replace: bool):
        """Context manager: build a directory of the run (export) in a temporary sibling."""
        return atomic_dir(final, exists="replace" if replace else "error")

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"
