"""A trained policy as a controller: sampled (seeded, reproducible) or argmax; serving a run;
one agent's actor as a stand-alone (exportable) module."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from leed_traffic.errors import UserError
from leed_traffic.learn import PolicyController, TrainConfig, final_env_steps, load_policies, train
from leed_traffic.learn.policy import AgentSpec, MultiAgentPolicy
from leed_traffic.rundir import RunDir
from test_learn_fakes import SIZES, FakeFactory


def _controller(sample: bool) -> PolicyController:
    torch.manual_seed(0)
    pol = MultiAgentPolicy([AgentSpec("a", 4, 3), AgentSpec("b", 6, 2)], hidden=(8,))
    return PolicyController(pol, sample=sample)


def _run(ctrl: PolicyController, seed: int, steps: int = 40) -> list[tuple[int, int]]:
    ctrl.reseed(seed)
    rng = np.random.default_rng(1)
    out = []
    for _ in range(steps):
        obs = {"a": rng.random(4, dtype=np.float32), "b": rng.random(6, dtype=np.float32)}
        act = ctrl.decide(obs)
        out.append((act["a"], act["b"]))
    return out


def test_sampled_policy_is_reproducible_per_seed_and_varies():
    c = _controller(sample=True)
    first, again, other = _run(c, 100), _run(c, 100), _run(c, 101)
    assert first == again
    assert first != other
    assert len({a for a, _ in first}) > 1, "an untrained policy samples several phases"
    assert all(0 <= a < 3 and 0 <= b < 2 for a, b in first)


def test_argmax_policy_ignores_the_seed():
    c = _controller(sample=False)
    assert _run(c, 100) == _run(c, 5)


@pytest.mark.parametrize("share", [False, True])
def test_actor_module_matches_the_policy_and_exports(tmp_path: Path, share: bool) -> None:
    torch.manual_seed(0)
    pol = MultiAgentPolicy([AgentSpec("a", 4, 3), AgentSpec("b.x", 6, 2)], hidden=(8, 8),
                           share_parameters=share)
    obs = {"a": torch.rand(5, 4), "b.x": torch.rand(5, 6)}
    with torch.no_grad():
        full = pol.logits(pol.pad(obs))  # [A, B, max_actions]
    for i, (agent, n) in enumerate((("a", 3), ("b.x", 2))):
        actor = pol.actor_module(agent)
        with torch.no_grad():
            logits = actor(obs[agent])
            both = pol.actor_module(agent, with_action=True)(obs[agent])
        assert logits.shape == (5, n)
        assert torch.allclose(logits, full[i, :, :n], atol=1e-6)
        assert torch.equal(both[0], logits) and torch.equal(both[1], logits.argmax(-1))
        traced = torch.jit.trace(actor, torch.zeros(1, obs[agent].shape[1]))
        assert torch.allclose(traced(obs[agent]), logits)
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "b.onnx"
    torch.onnx.export(pol.actor_module("b.x", with_action=True), (torch.zeros(1, 6),), str(path),
                      dynamo=False, input_names=["obs"], output_names=["logits", "action"],
                      dynamic_axes={"obs": {0: "batch"}, "logits": {0: "batch"}, "action": {0: "batch"}})
    onnx.checker.check_model(str(path))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["action"], {"obs": obs["b.x"].numpy()})[0]
    assert np.array_equal(got, full[1, :, :2].argmax(-1).numpy())


# ---------------------------------------------------------------------- serving a run
def _trained(tmp_path: Path, **kw) -> RunDir:
    run = RunDir(tmp_path / "run")
    cfg = TrainConfig(algo="ippo", total_env_steps=40, progress=False, **kw)
    res = train(cfg, run, FakeFactory())
    run.write_config({"experiment": {"train": cfg.to_dict()}, "env": res.spec.to_dict(), "city": res.spec.city})
    return run


def test_from_run_serves_policy_or_checkpoint_and_refuses_other_scenarios(tmp_path: Path) -> None:
    run = _trained(tmp_path, checkpoint_interval=1)
    ctrl = PolicyController.from_run(run.path)
    assert ctrl.name == "ippo" and ctrl.sample and ctrl.decides and ctrl.city == "fakecity"
    assert PolicyController.from_run(run.path, sample=False).name == "ippo-argmax"
    assert final_env_steps(run) == 40 and ctrl.metadata["env_steps"] == 40
    ours = SimpleNamespace(hash="hash-net-A", city="fakecity")
    assert ctrl.prepare(ours, tmp_path, seed=3) == {}
    with pytest.raises(UserError, match="trained on fakecity"):
        ctrl.prepare(SimpleNamespace(hash="other", city="elsewhere"), tmp_path, seed=3)
    obs = {a: np.full(SIZES[a][0], 0.5, np.float32) for a in SIZES}
    want = load_policies(run).decide(obs)
    # an interrupted run (no policy.pt) is served from its latest checkpoint: the same weights
    run.policy_path.unlink()
    assert final_env_steps(run) is None
    assert load_policies(run.path).decide(obs) == want
    assert PolicyController.from_run(run.path, sample=False).act(None, obs) == want


def test_from_run_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --run"):
        PolicyController.from_run(None)
    with pytest.raises(UserError, match="does not exist"):
        PolicyController.from_run(tmp_path / "nope")
    run = _trained(tmp_path)
    run.policy_path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="Cannot load the policies"):
        PolicyController.from_run(run.path)


def test_legacy_checkpoint_is_served_with_config_json(tmp_path: Path) -> None:
    """Checkpoints of earlier versions lack spec/config: config.json's legacy layout is read."""
    run = _trained(tmp_path, checkpoint_interval=1)
    obs = {a: np.full(SIZES[a][0], 0.25, np.float32) for a in SIZES}
    want = load_policies(run).decide(obs)
    run.policy_path.unlink()
    ck = run.latest_checkpoint()
    state = torch.load(ck, weights_only=True)
    spec, cfg = json.loads(state.pop("spec")), json.loads(state.pop("config"))
    torch.save(state, ck)
    cfg.update(reled=False, eval_episodes=5, eval_seeds=[1000])  # an old TrainConfig dict
    run.write_config({"city": "fakecity", "config": cfg, "env": spec})
    assert load_policies(run).decide(obs) == want
