"""MAPPO with the shared phase policy: a centralized critic that fits any city.

The centralized value is invariant to the order of the agents and of each junction's phases, it
follows the other agents' observations (the decentralized one does not), it survives the
trainer's per-agent minibatch gather, MAPPO (and gated LEED, which evaluates the critic on
time-aligned demos) trains with it, and weights move between decentralized and centralized phase
policies (``--init pretrained``, serving a MAPPO file zero-shot).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leed_traffic.dataset import AgentDemos, DemoDataset
from leed_traffic.learn import TrainConfig, load_policies
from leed_traffic.learn import train as train_run
from leed_traffic.learn.policy import AgentSpec, PhasePolicy, build_policy
from leed_traffic.learn.pretrained import load_weights, save_pretrained
from leed_traffic.learn.rollout import EnvSpec
from leed_traffic.learn.serving import PretrainedController
from leed_traffic.observations import PHASE_FEATURES as F
from leed_traffic.rundir import RunDir
from test_pretrained import ENV, PhaseFactory, PhaseFake, hit_rate

PHASES = {"a": 2, "b": 3, "c.1": 4}
FAST = dict(progress=False, ent_coef=0.0, learning_rate=1e-2, checkpoint_interval=1000, policy="phase",
            hidden_sizes=(16, 16))


def _policy(phases: dict[str, int] = PHASES, centralized: bool = True, seed: int = 0) -> PhasePolicy:
    torch.manual_seed(seed)
    return PhasePolicy([AgentSpec(a, n * F, n) for a, n in phases.items()], (16, 16), centralized)


def _live(pol: PhasePolicy) -> PhasePolicy:
    """A trained-looking city term (a fresh one outputs 0, which would hide what it sees)."""
    with torch.no_grad():
        for p in pol.critic_city.parameters():
            p.normal_(0.0, 0.5)
    return pol


def _obs(rng: np.random.Generator, batch: int = 4, phases: dict[str, int] = PHASES) -> dict[str, np.ndarray]:
    return {a: rng.random((batch, n * F)).astype(np.float32) * 3 for a, n in phases.items()}


def _values(pol: PhasePolicy, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    v = pol.value(pol.critic_input(pol.pad(obs)))
    return {a: v[i] for i, a in enumerate(pol.agents)}


def test_centralized_value_is_invariant_to_agent_and_phase_order() -> None:
    pol = _live(_policy())
    obs = _obs(np.random.default_rng(0))
    ref = _values(pol, obs)
    # the same weights on the agents listed in another order
    order = ["c.1", "a", "b"]
    other = _policy({a: PHASES[a] for a in order})
    other.load_state_dict(pol.state_dict())
    torch.testing.assert_close(_values(other, {a: obs[a] for a in order}), ref)
    # every junction's phase rows permuted
    rng = np.random.default_rng(1)
    perm = {a: o.reshape(len(o), PHASES[a], F)[:, rng.permutation(PHASES[a])].reshape(len(o), -1)
            for a, o in obs.items()}
    torch.testing.assert_close(_values(pol, perm), ref)


def test_centralized_value_follows_the_other_agents_and_survives_the_minibatch_gather() -> None:
    cen = _live(_policy())
    dec = _policy(centralized=False)
    dec.load_transferable(cen.state_dict())  # the same weights without the city term
    obs = _obs(np.random.default_rng(2))
    moved = {**obs, "c.1": obs["c.1"] * 0.1}  # only c.1's traffic changes
    for pol, sees in ((cen, True), (dec, False)):
        before, after = _values(pol, obs), _values(pol, moved)
        changed = bool((before["a"] - after["a"]).abs().max() > 1e-4)
        assert changed == sees, "a's value must follow c.1's observation exactly when centralized"
    # the trainer computes critic_input once, then gathers each agent's rows at its own columns
    x = cen.pad(obs)
    c = cen.critic_input(x)
    idx = torch.argsort(torch.rand(len(PHASES), x.shape[1]), dim=1)
    picked = cen.value(c.gather(1, idx[..., None].expand(-1, -1, c.shape[-1])))
    torch.testing.assert_close(picked, cen.value(c).gather(1, idx))
    # act_padded (rollouts, serving) reports the same values
    _, _, val = cen.act_padded(x)
    torch.testing.assert_close(torch.from_numpy(val), cen.value(c))


def test_a_fresh_centralized_critic_starts_as_the_decentralized_one() -> None:
    cen, dec = _policy(), _policy(centralized=False)
    obs = _obs(np.random.default_rng(3))
    torch.testing.assert_close(_values(cen, obs), _values(dec, obs))  # same seed, city term 0
    assert {k for k in cen.state_dict() if k not in dec.state_dict()} == {
        f"critic_city.{k}" for k in ("0.weight", "0.bias", "2.weight", "2.bias")}


def _phase_demos(n_episodes: int = 2, seed: int = 77) -> DemoDataset:
    """The perfect expert on ``PhaseFake``, every agent at every step (time-aligned)."""
    env = PhaseFake()
    rows: dict[str, dict[str, list]] = {a: {k: [] for k in ("obs", "actions", "rewards", "episode")}
                                        for a in env.possible_agents}
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        while env.agents:
            act = {a: env.best_action(a, obs[a]) for a in env.agents}
            nxt, rew, *_ = env.step(act)
            for a, r in rows.items():
                for k, v in (("obs", obs[a]), ("actions", act[a]), ("rewards", rew[a]), ("episode", ep)):
                    r[k].append(v)
            obs = nxt
    agents = {a: AgentDemos(np.asarray(r["obs"], np.float32), np.asarray(r["actions"], np.int64),
                            np.asarray(r["rewards"], np.float32), np.asarray(r["episode"], np.int64),
                            np.ones(len(r["actions"]), bool)) for a, r in rows.items()}
    return DemoDataset(agents, {"city": "fakecity", "demonstrator": "oracle"})


def test_mappo_trains_the_phase_policy(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "mappo")
    cfg = TrainConfig(algo="mappo", total_env_steps=400, **FAST)
    result = train_run(cfg, run, PhaseFactory())
    run.write_config({"experiment": {"train": cfg.to_dict()}, "env": result.spec.to_dict()})
    state = torch.load(run.policy_path, weights_only=True)["policy"]
    assert float(state["critic_city.2.weight"].abs().max()) > 0, "the city term was trained"
    ctrl = load_policies(run.path)  # policy.pt rebuilds as the centralized policy it is
    assert ctrl.policy.centralized
    assert hit_rate(ctrl) > 0.6, "random is 0.36"
    # gated LEED with the centralized critic evaluates it on the demos (time-aligned: all agents)
    leed = TrainConfig(algo="leed", centralized_critic=True, total_env_steps=40, **FAST)
    train_run(leed, RunDir(tmp_path / "leed"), PhaseFactory(), _phase_demos())
    assert (tmp_path / "leed" / "policy.pt").is_file()


def _spec(phases: dict[str, int]) -> EnvSpec:
    return EnvSpec(list(phases), {a: n * F for a, n in phases.items()}, dict(phases))


def test_weights_move_between_decentralized_and_centralized_phase_policies(tmp_path: Path) -> None:
    # a decentralized file (as shipped) starts MAPPO with its actor and critic; the city term is 0
    dec = _policy(centralized=False, seed=5)
    path = save_pretrained(dec.state_dict(), tmp_path / "dec.pt", {"hidden_sizes": [16, 16], "env": ENV})
    mappo = build_policy(_spec(PHASES), TrainConfig(algo="mappo", init_policy=str(path), **FAST))
    assert mappo.centralized
    obs = _obs(np.random.default_rng(4))
    torch.testing.assert_close(_values(mappo, obs), _values(dec, obs))
    torch.testing.assert_close(mappo.logits(mappo.pad(obs)), dec.logits(dec.pad(obs)))
    # a MAPPO file serves zero-shot on another network and starts IPPO (its city term dropped)
    cen = _live(_policy(seed=6))
    path = save_pretrained(cen.state_dict(), tmp_path / "cen.pt", {"hidden_sizes": [16, 16], "env": ENV})
    unseen = {"t": 2, "big": 6}
    ippo = build_policy(_spec(unseen), TrainConfig(algo="ippo", init_policy=str(path), **FAST))
    assert not ippo.centralized and not hasattr(ippo, "critic_city")
    ctrl = PretrainedController(str(path), sample=False)
    x = _obs(np.random.default_rng(5), 1, unseen)
    act = ctrl.decide({a: o[0] for a, o in x.items()})
    want = ippo.logits(ippo.pad(x))[:, 0]
    assert act == {a: int(want[i, :unseen[a]].argmax()) for i, a in enumerate(ippo.agents)}
    # weights that are not a phase policy's still fail loudly
    with pytest.raises(RuntimeError, match="critic_head"):
        ippo.load_transferable({k: v for k, v in cen.state_dict().items() if not k.startswith("critic_head")})
    # the shipped file starts MAPPO too
    shipped = load_weights("pretrained", (64, 64))
    big = PhasePolicy([AgentSpec(a, n * F, n) for a, n in unseen.items()], (64, 64), centralized_critic=True)
    big.load_transferable(shipped)
    torch.testing.assert_close(big.state_dict()["critic_head.0.weight"], shipped["critic_head.0.weight"])
