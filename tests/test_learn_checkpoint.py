"""Checkpoints: exact resume (identical next update), refusal of foreign and corrupt checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from leed_traffic.learn import CheckpointCorrupt, CheckpointError, CheckpointMismatch, TrainConfig
from leed_traffic.learn import train as train_run
from leed_traffic.rundir import RunDir
from test_learn_fakes import FakeFactory, expert_demos


def cfg(steps: int, **kw) -> TrainConfig:
    # rollout_steps=7 on 20-step episodes: checkpoints fall mid-episode, so resume must replay
    base = dict(algo="reled", total_env_steps=steps, rollout_steps=7, progress=False,
                checkpoint_interval=1)
    return TrainConfig(**{**base, **kw})


def train(config: TrainConfig, path: Path, demos, resume: bool = False, *, env_factory) -> Path:
    train_run(config, RunDir(path), env_factory, demos, resume=resume)
    return path


def latest_checkpoint(path: Path) -> Path | None:
    return RunDir(path).latest_checkpoint()


def params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "policy.pt", weights_only=True)["policy"]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        timing = {"wall_time", "steps_per_s", "sim_s_per_wall_s", "collect_s", "optimize_s"}
        return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(f)]


def test_resume_is_exact(tmp_path: Path) -> None:
    demos = expert_demos()
    # a measured delay the agent crosses during the run: ``measured`` trust reads the training
    # episodes' delays, which the checkpoint must carry
    demos.metadata["quality"] = {"city": {"beats_fixed": True, "delay": 6.0}, "agents": {}}
    full = train(cfg(7 * 4), tmp_path / "full", demos, env_factory=FakeFactory())
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during update 4, after checkpoint 3
        train(cfg(7 * 4), part, demos, env_factory=FakeFactory(crash_after=7 * 3 + 2))
    assert latest_checkpoint(part).name == "ckpt_00000003.pt"
    # a stale row written after the checkpoint (as after kill -9) must be dropped on resume
    with (part / "metrics.csv").open("a") as f:
        f.write("999,9,0,0,0,0,0,0,,0\n")
    resumed = train(cfg(7 * 4), part, demos, resume=True, env_factory=FakeFactory())
    a, b = params(full), params(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rows(full / "metrics.csv") == rows(resumed / "metrics.csv")
    assert rows(full / "updates.csv") == rows(resumed / "updates.csv")
    # and a different seed does give different parameters (the check above can fail)
    other = train(cfg(7 * 4, seed=1), tmp_path / "seed1", demos,
                  env_factory=FakeFactory())
    assert not all(torch.equal(a[k], params(other)[k]) for k in a)


def test_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    demos = expert_demos(1)
    run = train(cfg(7), tmp_path / "r", demos, env_factory=FakeFactory())
    with pytest.raises(CheckpointMismatch, match="net_hash"):
        train(cfg(14), run, demos, resume=True, env_factory=FakeFactory(net="net-B"))
    with pytest.raises(CheckpointMismatch, match="learning_rate"):
        train(cfg(14, learning_rate=1e-3), run, demos, resume=True,
              env_factory=FakeFactory())
    with pytest.raises(CheckpointMismatch, match="demos_hash"):
        train(cfg(14), run, expert_demos(2), resume=True, env_factory=FakeFactory())
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(cfg(14), run, demos, env_factory=FakeFactory())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    demos = expert_demos(1)
    run = train(cfg(7), tmp_path / "r", demos, env_factory=FakeFactory())
    ck = latest_checkpoint(run)
    data = ck.read_bytes()
    ck.write_bytes(b"not a checkpoint" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointCorrupt, match="corrupt"):
        train(cfg(14), run, demos, resume=True, env_factory=FakeFactory())
    assert ck.exists()  # never silently deleted or restarted over


def test_legacy_reled_checkpoint_resumes_as_algo_reled(tmp_path: Path) -> None:
    """Checkpoints of earlier versions fingerprinted RELED as {algo: leed, reled: true}."""
    import json

    demos = expert_demos(1)
    run = train(cfg(7), tmp_path / "r", demos, env_factory=FakeFactory())
    ck = latest_checkpoint(run)
    state = torch.load(ck, weights_only=True)
    fp = json.loads(state["fingerprint"])
    fp["config"].update(algo="leed", reled=True)
    state["fingerprint"] = json.dumps(fp, sort_keys=True)
    torch.save(state, ck)
    train(cfg(14), run, demos, resume=True, env_factory=FakeFactory())
    assert latest_checkpoint(run).name == "ckpt_00000002.pt"


def test_checkpoints_are_pruned_to_the_newest_three(tmp_path: Path) -> None:
    run = train(cfg(7 * 5, algo="ippo"), tmp_path / "r", None, env_factory=FakeFactory())
    assert [p.name for p in RunDir(run).checkpoints()] == [f"ckpt_0000000{i}.pt" for i in (3, 4, 5)]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
