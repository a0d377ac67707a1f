"""The phase policy and the pretrained policy (issue 10): one set of weights for any junction.

Hand-checkable properties: the phase policy's logits follow the phases (permuting an agent's phase
rows permutes its logits), a policy file made on one network acts on networks with phase and lane
counts it never saw, it trains in the PPO loop, and bad files and settings get one sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leed_traffic.config import ExperimentConfig
from leed_traffic.errors import UserError
from leed_traffic.learn import TrainConfig, load_policies
from leed_traffic.learn import train as train_run
from leed_traffic.learn.policy import AgentSpec, PhasePolicy
from leed_traffic.learn.pretrained import load_file, save_pretrained
from leed_traffic.learn.serving import PretrainedController
from leed_traffic.observations import PHASE_FEATURES as F
from leed_traffic.rundir import RunDir
from test_learn_fakes import FakeTrafficEnv

ENV = {"observation": "phase", "reward": "queue", "delta_time": 5, "min_green": 5, "max_green": 50,
       "enforce_max_green": True}


def _policy(phases: dict[str, int], hidden=(16, 16)) -> PhasePolicy:
    torch.manual_seed(0)
    return PhasePolicy([AgentSpec(a, n * F, n) for a, n in phases.items()], hidden)


def test_logits_follow_the_phases() -> None:
    pol = _policy({"a": 3, "b": 5})
    rng = np.random.default_rng(0)
    obs = {"a": rng.random(3 * F).astype(np.float32), "b": rng.random(5 * F).astype(np.float32)}
    logits = pol.logits(pol.pad(obs))[:, 0]  # [A, max_actions]
    perm = np.array([4, 2, 0, 1, 3])
    b_perm = obs["b"].reshape(5, F)[perm].reshape(-1)
    logits_p = pol.logits(pol.pad({"a": obs["a"], "b": b_perm}))[:, 0]
    torch.testing.assert_close(logits_p[1, :5], logits[1, :5][perm])
    torch.testing.assert_close(logits_p[0], logits[0])  # agents do not see each other
    assert (logits[0, 3:] < -1e8).all(), "phases beyond an agent's own are masked"
    # the exported actor of one agent computes the same logits
    torch.testing.assert_close(pol.actor_module("b")(torch.from_numpy(obs["b"])[None])[0], logits[1, :5])


def test_a_file_from_one_network_acts_on_another(tmp_path: Path) -> None:
    pol = _policy({"a": 2, "b": 3})
    path = save_pretrained(pol.state_dict(), tmp_path / "p.pt", {"hidden_sizes": [16, 16], "env": ENV, "cities": ["x"]})
    ctrl = PretrainedController(str(path), sample=False)
    assert ctrl.prepare(None, tmp_path, seed=1) == ENV  # the env options it was trained under
    rng = np.random.default_rng(1)
    unseen = {"t-junction": 2, "big": 6, "odd.id": 4}  # phase counts the network never had
    obs = {a: rng.random(n * F).astype(np.float32) for a, n in unseen.items()}
    act = ctrl.decide(obs)
    assert set(act) == set(unseen) and all(0 <= act[a] < n for a, n in unseen.items())
    # argmax of the same per-phase scores the saved policy computes on a 2-phase junction
    two = {"x": obs["t-junction"]}
    other = _policy({"x": 2})
    other.load_state_dict(pol.state_dict())
    ref = other.logits(other.pad(two))
    assert act["t-junction"] == int(ref[0, 0, :2].argmax())
    with pytest.raises(UserError, match="10 per phase"):
        ctrl.decide({"a": np.zeros(7, np.float32)})


def test_bad_files_and_settings_get_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torch")
    with pytest.raises(UserError, match="corrupt"):
        load_file(str(bad))
    with pytest.raises(UserError, match="No pretrained policy"):
        load_file(str(tmp_path / "missing.pt"))
    cfg = ExperimentConfig()
    with pytest.raises(UserError, match="train.policy=mlp"):
        cfg.apply(["env.observation=default"])  # the experiments' phase policy cannot read it
    cfg.apply(["train.policy=mlp"])
    path = save_pretrained(_policy({"a": 2}).state_dict(), tmp_path / "p.pt", {"hidden_sizes": [16, 16], "env": ENV})
    cfg = ExperimentConfig().init_from(str(path))
    assert (cfg.train.policy, cfg.train.init_policy, cfg.train.hidden_sizes) == ("phase", str(path), (16, 16))
    assert (cfg.env.observation, cfg.env.reward) == ("phase", "queue")
    cfg.validate()


class PhaseFake(FakeTrafficEnv):
    """The fake env with phase-shaped observations: the rewarded phase is the one whose first
    feature is largest (a rule that holds at every junction, as a transferable one must)."""

    def __init__(self, episode_steps: int = 20):
        super().__init__(episode_steps, sizes={"a": (2 * F, 2), "b": (3 * F, 3), "c.1": (4 * F, 4)})

    def best_action(self, agent: str, obs: np.ndarray) -> int:
        return int(np.argmax(obs.reshape(-1, F)[:, 0]))


class PhaseFactory:
    def __call__(self) -> PhaseFake:
        return PhaseFake()


def hit_rate(ctrl, episodes: int = 5) -> float:
    """Share of the fake env's rewarded decisions a controller makes over a few episodes."""
    env = PhaseFake()
    hits = n = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=500 + ep)
        while env.agents:
            obs, rew, *_ = env.step(ctrl(obs))
            hits += sum(rew.values())
            n += len(rew)
    return hits / n


def test_phase_policy_trains_and_fine_tunes_from_a_file(tmp_path: Path) -> None:
    fast = dict(progress=False, ent_coef=0.0, learning_rate=1e-2, checkpoint_interval=1000, policy="phase",
                hidden_sizes=(16, 16))
    run = RunDir(tmp_path / "r")
    result = train_run(TrainConfig(algo="ippo", total_env_steps=400, **fast), run, PhaseFactory())
    run.write_config({"experiment": {"train": TrainConfig(algo="ippo", **fast).to_dict()},
                      "env": result.spec.to_dict()})
    ctrl = load_policies(run.path)
    assert hit_rate(ctrl) > 0.6, "random is 0.36"
    # the run's policy.pt starts another run (any network): the first rollout acts like it
    tuned = RunDir(tmp_path / "tuned")
    cfg = TrainConfig(algo="ippo", total_env_steps=20, init_policy=str(run.path), **fast)
    train_run(cfg, tuned, PhaseFactory())
    a = torch.load(run.policy_path, weights_only=True)["policy"]
    b = torch.load(tuned.policy_path, weights_only=True)["policy"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 0.2, "fine-tuning starts at the file's weights"
    with pytest.raises(ValueError, match="policy=phase"):
        TrainConfig(init_policy="pretrained")


def test_the_shipped_policy_runs_zero_shot_on_a_map_it_never_saw(tmp_path: Path) -> None:
    """cologne1 (RESCO, one junction) is not among the shipped policy's training cities."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import evaluate
    from leed_traffic.learn.pretrained import shipped_path

    meta = load_file("pretrained")["meta"]
    assert shipped_path().is_file() and "cologne1" not in meta["cities"]
    assert meta["env"]["observation"] == "phase" and meta["stages"]
    df = evaluate("cologne1", [get_controller("pretrained"), get_controller("fixed")], seeds=[100], seconds=600)
    delay = df.set_index("controller")["mean_delay"]
    assert np.isfinite(delay["pretrained"]) and delay["pretrained"] > 0
