"""Checkpoints: exact resume (identical next update), refusal of foreign and corrupt checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from leed_traffic.learn import CheckpointCorrupt, CheckpointError, CheckpointMismatch, TrainConfig
from leed_traffic.learn import train
from leed_traffic.learn.checkpoint import latest_checkpoint
from test_learn_fakes import FakeFactory, expert_demos


def cfg(steps: int, **kw) -> TrainConfig:
    # rollout_steps=7 on 20-step episodes: checkpoints fall mid-episode, so resume must replay
    base = dict(algo="leed", total_env_steps=steps, rollout_steps=7, progress=False,
                checkpoint_interval=1, reled=True)
    return TrainConfig(**{**base, **kw})


def params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "policy.pt", weights_only=True)["policy"]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        timing = {"wall_time", "steps_per_s", "sim_s_per_wall_s"}
        return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]


def test_resume_is_exact(tmp_path: Path) -> None:
    demos = expert_demos()
    full = train("fakecity", cfg(7 * 4), tmp_path / "full", demos, env_factory=FakeFactory())
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during update 4, after checkpoint 3
        train("fakecity", cfg(7 * 4), part, demos, env_factory=FakeFactory(crash_after=7 * 3 + 2))
    assert latest_checkpoint(part).name == "ckpt_00000003.pt"
    # a stale row written after the checkpoint (as after kill -9) must be dropped on resume
    with (part / "metrics.csv").open("a") as f:
        f.write("999,9,0,0,0,0,0,0,,0\n")
    resumed = train("fakecity", cfg(7 * 4), part, demos, resume=True, env_factory=FakeFactory())
    a, b = params(full), params(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(full / "metrics.csv") == rows(resumed / "metrics.csv")
    assert rows(full / "updates.csv") == rows(resumed / "updates.csv")
    # and a different seed does give different parameters (the check above can fail)
    other = train("fakecity", cfg(7 * 4, seed=1), tmp_path / "seed1", demos,
                  env_factory=FakeFactory())
    assert not all(torch.equal(a[k], params(other)[k]) for k in a)


def test_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    demos = expert_demos(1)
    run = train("fakecity", cfg(7), tmp_path / "r", demos, env_factory=FakeFactory())
    with pytest.raises(CheckpointMismatch, match="net_hash"):
        train("fakecity", cfg(14), run, demos, resume=True, env_factory=FakeFactory(net="net-B"))
    with pytest.raises(CheckpointMismatch, match="learning_rate"):
        train("fakecity", cfg(14, learning_rate=1e-3), run, demos, resume=True,
              env_factory=FakeFactory())
    with pytest.raises(CheckpointMismatch, match="demos_hash"):
        train("fakecity", cfg(14), run, expert_demos(2), resume=True, env_factory=FakeFactory())
    with pytest.raises(CheckpointError, match="already holds a run"):
        train("fakecity", cfg(14), run, demos, env_factory=FakeFactory())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    demos = expert_demos(1)
    run = train("fakecity", cfg(7), tmp_path / "r", demos, env_factory=FakeFactory())
    ck = latest_checkpoint(run)
    data = ck.read_bytes()
    ck.write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointCorrupt, match="corrupt"):
        train("fakecity", cfg(14), run, demos, resume=True, env_factory=FakeFactory())
    assert ck.exists()  # never silently deleted or restarted over
