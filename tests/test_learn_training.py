"""Short trainings on the fake env: PPO and LEED improve on random, BC imitates, files are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from leed_traffic.learn import TrainConfig, TrainResult, load_policies
from leed_traffic.learn import train as train_run
from leed_traffic.rundir import RunDir
from test_learn_fakes import SIZES, FakeFactory, expert_demos, run_controller

FAST = dict(progress=False, ent_coef=0.0, learning_rate=1e-2, checkpoint_interval=1000)


def train(cfg: TrainConfig, path: Path, demos=None, *, env_factory) -> Path:
    """Train, then record the env in config.json as the experiment pipeline does."""
    run = RunDir(path)
    result = train_run(cfg, run, env_factory, demos)
    run.write_config({"experiment": {"train": cfg.to_dict()}, "env": result.spec.to_dict(),
                      "fingerprint": result.fingerprint, "city": result.spec.city})
    return path


def random_score() -> float:
    rng = np.random.default_rng(0)
    return run_controller(lambda obs: {a: int(rng.integers(SIZES[a][1])) for a in obs})


def test_ippo_improves_on_random(tmp_path: Path) -> None:
    run = train(TrainConfig(algo="ippo", total_env_steps=600, **FAST), tmp_path / "r",
                env_factory=FakeFactory())
    score = run_controller(load_policies(run))
    assert random_score() < 0.42  # 1/2, 1/3, 1/4 best-action rates averaged
    assert score > 0.5


def test_leed_learns_faster_than_ippo_with_a_perfect_expert(tmp_path: Path) -> None:
    cfg = TrainConfig(algo="leed", total_env_steps=600, **FAST)
    result = train_run(cfg, RunDir(tmp_path / "leed"), FakeFactory(), expert_demos())
    assert isinstance(result, TrainResult) and result.run.path == tmp_path / "leed"
    assert (result.env_steps, result.updates, result.episodes) == (600, 30, 30) and result.wall_s > 0
    assert result.spec.agents == list(SIZES) and result.fingerprint["agents"] == list(SIZES)
    assert result.fingerprint["config"]["algo"] == "leed" and result.fingerprint["city"] == "fakecity"
    run = result.run.path
    assert not (run / "config.json").exists()  # the experiment pipeline writes it, not the trainer
    RunDir(run).write_config({"experiment": {"train": cfg.to_dict()}, "env": result.spec.to_dict()})
    assert run_controller(load_policies(run)) > 0.75
    with (run / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30  # 600 steps / 20-step episodes, one episode per update
    w = [float(r["expert_weight"]) for r in rows]
    d = [float(r["dtw_distance"]) for r in rows]
    assert all(0 < x <= 1.0 for x in w) and all(0 <= x <= 1 for x in d)
    # each update's rollout and optimisation time (benchmarks/bench_large_train.py reads them)
    assert all(float(r["collect_s"]) > 0 and float(r["optimize_s"]) > 0 for r in rows)
    with (run / "metrics.csv").open() as f:
        ep = list(csv.DictReader(f))
    assert len(ep) == 30 and ep[-1]["mean_delay"] != "" and float(ep[-1]["expert_weight"]) > 0


def test_bc_reaches_high_accuracy(tmp_path: Path) -> None:
    cfg = TrainConfig(algo="bc", total_env_steps=200, update_epochs=10, **FAST)
    run = train(cfg, tmp_path / "bc", demos=expert_demos(), env_factory=FakeFactory())
    # the fake's reward is 1 exactly when the action is the expert's: score = accuracy
    assert run_controller(load_policies(run)) >= 0.85


def test_variants_run_mappo_shared_reled(tmp_path: Path) -> None:
    for i, kw in enumerate([dict(algo="mappo"), dict(algo="leed", share_parameters=True),
                            dict(algo="reled", expert_weight_mode="distance")]):
        cfg = TrainConfig(total_env_steps=60, **{**FAST, **kw})
        run = train(cfg, tmp_path / f"v{i}", demos=expert_demos(),
                    env_factory=FakeFactory())
        act = load_policies(run).decide({a: np.zeros(SIZES[a][0], np.float32) for a in SIZES})
        assert set(act) == set(SIZES) and all(0 <= act[a] < SIZES[a][1] for a in SIZES)


def test_process_workers(tmp_path: Path) -> None:
    cfg = TrainConfig(algo="ippo", total_env_steps=80, n_workers=2, **FAST)
    run = train(cfg, tmp_path / "mp", env_factory=FakeFactory())
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["worker"] for r in rows} == {"0", "1"} and len({r["seed"] for r in rows}) == 4


def test_demos_required_and_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs demonstrations"):
        train(TrainConfig(algo="leed", **FAST), tmp_path / "x", env_factory=FakeFactory())
    demos = expert_demos(1)
    demos.agents["a"].obs = demos.agents["a"].obs[:, :2]
    with pytest.raises(ValueError, match="observation size"):
        train(TrainConfig(algo="leed", total_env_steps=20, **FAST), tmp_path / "y",
              demos=demos, env_factory=FakeFactory())


def test_empty_demonstrations_train_as_ippo(tmp_path: Path, caplog) -> None:
    """A weak demonstrator may leave nothing that beat fixed time: LEED then is IPPO, not a crash."""
    from leed_traffic.dataset import DemoDataset

    cfg = dict(total_env_steps=40, seed=3, **FAST)
    with caplog.at_level("WARNING"):
        train(TrainConfig(algo="leed", **cfg), tmp_path / "leed", demos=DemoDataset(agents={}),
              env_factory=FakeFactory())
    assert "demonstrations are empty" in caplog.text
    train(TrainConfig(algo="ippo", **cfg), tmp_path / "ippo", env_factory=FakeFactory())
    rows = {k: list(csv.DictReader(open(tmp_path / k / "updates.csv"))) for k in ("leed", "ippo")}
    assert [float(r["expert_weight"]) for r in rows["leed"]] == [0.0] * len(rows["leed"])
    # same seed, no imitation: the same losses as IPPO
    assert [r["pg_loss"] for r in rows["leed"]] == [r["pg_loss"] for r in rows["ippo"]]


def test_bc_warm_start_imitates_before_any_rollout(tmp_path: Path) -> None:
    """With the warm start alone (one tiny rollout budget) the policy already follows the expert."""
    # the default step size: FAST's 1e-2 lets the one PPO update that follows undo part of the warm start
    slow = {**FAST, "learning_rate": 3e-4}
    cfg = TrainConfig(algo="leed", total_env_steps=20, bc_pretrain_steps=300, **slow)
    run = train(cfg, tmp_path / "warm", demos=expert_demos(), env_factory=FakeFactory())
    pre = json.loads((run / "pretrain.json").read_text())
    assert pre["action_agreement"]["before"] < 0.6 < 0.9 < pre["action_agreement"]["after"]
    assert pre["expert_loss"]["after"] < pre["expert_loss"]["before"]
    cold = TrainConfig(algo="leed", total_env_steps=20, bc_pretrain_steps=0, **slow)
    run0 = train(cold, tmp_path / "cold", demos=expert_demos(), env_factory=FakeFactory())
    assert not (run0 / "pretrain.json").exists()
    assert run_controller(load_policies(run)) > run_controller(load_policies(run0)) + 0.2


def test_a_smoothed_clone_follows_the_expert_and_keeps_exploring(tmp_path: Path) -> None:
    """expert_label_smoothing: the warm start still reproduces the expert's choices under argmax,
    but the policy PPO then samples from keeps entropy (the plain clone collapses towards 0)."""
    slow = {**FAST, "learning_rate": 3e-4}
    entropy, agreement = {}, {}
    for eps in (0.0, 0.2):
        cfg = TrainConfig(algo="leed", total_env_steps=20, bc_pretrain_steps=300, expert_label_smoothing=eps, **slow)
        run = train(cfg, tmp_path / f"ls{eps}", demos=expert_demos(), env_factory=FakeFactory())
        agreement[eps] = json.loads((run / "pretrain.json").read_text())["action_agreement"]["after"]
        entropy[eps] = float(next(csv.DictReader(open(run / "updates.csv")))["entropy"])
    assert agreement[0.0] > 0.9 and agreement[0.2] > 0.9
    assert entropy[0.2] > 2 * entropy[0.0] and entropy[0.2] > 0.3
