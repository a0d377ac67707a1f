"""Issue 12, "imitate only what helps": the expert gate, the trust it implies, the gated warm start,
the ``random`` reference demonstrator, and LEED on random demonstrations against IPPO."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from llm_states import crossing
from test_learn_fakes import (
    SIZES,
    FakeFactory,
    FakeTrafficEnv,
    expert_demos,
    run_controller,
)

from leed_traffic.dataset import AgentDemos, DemoDataset
from leed_traffic.demos import demo_quality
from leed_traffic.learn import TrainConfig, get_algorithm, load_policies
from leed_traffic.learn import train as train_run
from leed_traffic.learn.demo_batch import (
    AgentDemoTensors,
    DemoBatch,
    Demonstrations,
    warm_start_agents,
)
from leed_traffic.learn.expert_weight import discounted_returns, lambda_returns
from leed_traffic.learn.loss import expert_loss
from leed_traffic.llm import make_demonstrator
from leed_traffic.rundir import RunDir

FAST = dict(progress=False, ent_coef=0.0, learning_rate=1e-2, checkpoint_interval=1000)


# ------------------------------------------------------------------------------ hand cases
class ValueIsFirstFeature:
    """A stand-in for the policy's critic: V(o) = o[0] (own critic, no agent id)."""

    def critic_input(self, padded: torch.Tensor) -> torch.Tensor:
        return padded

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 0]


def one_agent_demos(values: list[float], rewards: list[float], episode: list[int], gate: str,
                    gamma: float = 0.5, lam: float = 1.0, trust: str = "none") -> Demonstrations:
    """Agent "a" with demo rows whose critic value is ``values`` (obs[0]) and reward ``rewards``."""
    n = len(values)
    obs = np.zeros((n, 2), np.float32)
    obs[:, 0] = values
    ep = np.asarray(episode)
    dm = AgentDemoTensors(obs=obs, actions=np.zeros(n, np.int64), rewards=np.asarray(rewards, float),
                          episode=ep, returns_to_go=discounted_returns(np.asarray(rewards), ep, gamma),
                          features=[], per_step_return=float(np.mean(rewards)),
                          obs_mean=np.zeros(2), obs_std=np.ones(2))
    batch = DemoBatch(torch.as_tensor(obs)[None], torch.zeros(1, n, dtype=torch.int64),
                      torch.tensor([n]), torch.ones(1, n))
    return Demonstrations(["a"], {"a": dm}, batch, gate=gate, gamma=gamma, lam=lam, trust=trust)


def test_lambda_returns_by_hand() -> None:
    r, v, ep = np.array([1.0, 0.0]), np.array([0.5, 2.0]), np.array([0, 0])
    # lam = 1: Monte-Carlo return, the last row bootstrapped with its own V: G1 = 0 + .5*2 = 1,
    # G0 = 1 + .5*G1 = 1.5
    assert np.allclose(lambda_returns(r, v, ep, 0.5, 1.0), [1.5, 1.0])
    # lam = 0: one-step TD targets r_t + gamma V_{t+1}: [1 + .5*2, 0 + .5*2]
    assert np.allclose(lambda_returns(r, v, ep, 0.5, 0.0), [2.0, 1.0])
    # trajectories do not leak into each other: two one-row trajectories are r + gamma * own V
    assert np.allclose(lambda_returns(r, v, np.array([0, 1]), 0.5, 1.0), [1.25, 1.0])


def test_gate_ignores_a_bad_demonstration_and_imitates_a_good_one() -> None:
    # row 0: the demo earns 1 now and reaches a state worth 2 -> target 1.5 (lam=1) > V = 0.5: good
    # row 1: the demo earns 0 from a state the agent values at 2 -> target 1 < 2: bad
    for gate in ("advantage", "return"):
        d = one_agent_demos([0.5, 2.0], [1.0, 0.0], [0, 0], gate)
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
        assert d.batch.mask[0].tolist() == [1.0, 0.0], gate
        assert d.kept() == {"a": 0.5}
    # the units: rewards are divided by the reward normaliser's std before the comparison
    # (row 0's target 0.25 + 1 = 1.25 with std 4 still beats 0.5; a value of 1.3 it does not)
    d = one_agent_demos([1.3, 2.0], [1.0, 0.0], [0, 0], "advantage")
    d.refresh_mask(ValueIsFirstFeature(), np.array([4.0]))
    assert d.batch.mask[0].tolist() == [0.0, 0.0]
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
    assert d.batch.mask[0].tolist() == [1.0, 0.0]
    # the baseline: the agent's own mean advantage under the same critic. A critic that
    # under-values everything makes every GAE positive, the agent's own as well: row 0's GAE (1.0)
    # no longer counts as better once the agent's own GAE averages 1.2
    d = one_agent_demos([0.5, 2.0], [1.0, 0.0], [0, 0], "advantage")
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]), baseline={"a": 1.2})
    assert d.batch.mask[0].tolist() == [0.0, 0.0]
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]), baseline={"a": 0.9})
    assert d.batch.mask[0].tolist() == [1.0, 0.0]


def test_masked_samples_get_no_gradient_and_sample_returns_the_mask() -> None:
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    le = expert_loss(logits, torch.tensor([[0, 2]]), torch.tensor([[1.0, 0.0]]))
    le.sum().backward()
    g = logits.grad[0]
    assert torch.all(g[1] == 0) and g[0, 0] < 0  # the kept sample raises log pi(a_e), the other is ignored
    assert float(le.detach()) == pytest.approx(np.log(3) / 2)  # mean over *all* samples: weight x kept
    d = one_agent_demos([0.5, 2.0], [1.0, 0.0], [0, 0], "advantage")
    assert d.sample(4)[2] is not None  # gated demos always come with their mask
    assert one_agent_demos([0.5, 2.0], [1.0, 0.0], [0, 0], "none").sample(4)[2] is None


def test_trust_falls_when_imitation_does_not_pay() -> None:
    """One demo trajectory of reward 1 per step (gamma = .5: MC returns 1.75, 1.5, 1) against an
    agent whose own value rises: the gate keeps fewer of its states, and once the demonstrations
    earn less than the agent expects *on average* (mean margin <= 0) the agent trusts them no more
    and imitates none of them, not even the state where they still look better."""
    kept, trust, gated_only = [], [], []
    for v in (0.0, 0.9, 1.2, 1.6, 2.0):  # mean margins 1.42, .52, .22, -.18, -.58
        d = one_agent_demos([v] * 3, [1.0, 1.0, 1.0], [0, 0, 0], "return", trust="mean")
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
        kept.append(d.kept()["a"])
        trust.append(d.trust["a"])
        d = one_agent_demos([v] * 3, [1.0, 1.0, 1.0], [0, 0, 0], "return")
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
        gated_only.append(d.kept()["a"])
        assert d.trust == {}  # no trust test without expert_trust
    assert trust == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert kept == pytest.approx([1.0, 1.0, 2 / 3, 0.0, 0.0])
    assert gated_only == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3, 0.0])
    # the advantage gate: margins are GAE minus the agent's own mean GAE
    d = one_agent_demos([0.5, 2.0], [1.0, 0.0], [0, 0], "advantage", trust="mean")
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))  # GAE 1.0 and -1.0: mean 0, not > 0
    assert d.trust == {"a": 0.0} and d.kept() == {"a": 0.0}
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]), baseline={"a": -0.2})  # margins 1.2, -.8
    assert d.trust == {"a": 1.0} and d.batch.mask[0].tolist() == [1.0, 0.0]


def test_shared_network_trusts_city_wide() -> None:
    """Two agents, "a" whose demonstrations pay (margins 1.0, 1.0) and "b" whose do not (-3, -3):
    per-agent trust imitates at a only; a shared network pools the margins (mean -1): nobody."""
    n, vals = 2, {"a": [0.0, 0.0], "b": [4.0, 4.0]}
    obs = np.zeros((2, n, 2), np.float32)
    per = {}
    for i, a in enumerate(("a", "b")):
        obs[i, :, 0] = vals[a]
        ep, rew = np.zeros(n, np.int64), np.ones(n)
        per[a] = AgentDemoTensors(obs=obs[i], actions=np.zeros(n, np.int64), rewards=rew, episode=ep,
                                  returns_to_go=np.ones(n), features=[], per_step_return=1.0,
                                  obs_mean=np.zeros(2), obs_std=np.ones(2))
    for shared, expect in ((False, {"a": 1.0, "b": 0.0}), (True, {"a": 0.0, "b": 0.0})):
        batch = DemoBatch(torch.as_tensor(obs), torch.zeros(2, n, dtype=torch.int64), torch.tensor([n, n]),
                          torch.ones(2, n))
        d = Demonstrations(["a", "b"], per, batch, gate="return", trust="mean", shared=shared)
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0, 1.0]))
        assert d.trust == expect and d.kept() == expect
    per["b"].returns_to_go = np.full(n, 4.5)  # now b pays a little too: pooled mean > 0, both imitate
    batch = DemoBatch(torch.as_tensor(obs), torch.zeros(2, n, dtype=torch.int64), torch.tensor([n, n]), torch.ones(2, n))
    d = Demonstrations(["a", "b"], per, batch, gate="return", trust="mean", shared=True)
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0, 1.0]))
    assert d.trust == {"a": 1.0, "b": 1.0} and d.kept() == {"a": 1.0, "b": 1.0}
    d.city_beats_fixed = False  # measured: the demonstrator queues more than fixed time city-wide
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0, 1.0]))
    assert d.trust == {"a": 0.0, "b": 0.0} and d.kept() == {"a": 0.0, "b": 0.0}


def test_measured_trust_stops_when_the_agent_beats_the_demonstrations() -> None:
    """``measured`` trust: demonstrations whose margins pay (mean 1.42) and whose measured honest
    delay is 50 s. Imitated while the agent's last 3 training episodes average more than 50 s
    (60, 55, 52 -> 55.7), not once they average less (55, 52, 40 -> 49), whatever the critic says;
    imitated again when the agent falls back (52, 40, 70 -> 54). ``mean`` ignores the delays, and
    an unrecorded demo delay (older datasets) never vetoes."""
    seen = []
    for delay in (60.0, 55.0, 52.0, 40.0, 70.0):
        d = one_agent_demos([0.0] * 3, [1.0, 1.0, 1.0], [0, 0, 0], "return", trust="measured")
        d.demo_delay, d.window = 50.0, 3
        d.agent_delays = seen[-3:]
        d.observe_delay(delay)
        d.observe_delay(None)  # an episode without a delay changes nothing
        seen = list(d.agent_delays)
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
        assert d.kept()["a"] == d.trust["a"]
        if len(seen) == 3:
            assert d.trust["a"] == float(np.mean(seen) >= 50.0), seen
    assert seen == [52.0, 40.0, 70.0] and d.trust["a"] == 1.0
    d.agent_delays = [10.0]
    d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
    assert d.trust == {"a": 0.0}
    for trust, demo_delay in (("mean", 50.0), ("measured", None)):
        d = one_agent_demos([0.0] * 3, [1.0, 1.0, 1.0], [0, 0, 0], "return", trust=trust)
        d.demo_delay, d.agent_delays = demo_delay, [10.0]
        d.refresh_mask(ValueIsFirstFeature(), np.array([1.0]))
        assert d.trust == {"a": 1.0}


def test_gate_per_algorithm_and_config() -> None:
    cfg = TrainConfig()
    assert cfg.expert_gate == "advantage" and cfg.expert_trust == "measured" and cfg.warm_start_gate == "queue"
    assert get_algorithm("leed").gate(cfg) == "advantage" and get_algorithm("bc").gate(cfg) == "none"
    assert get_algorithm("bc").warm_start_gate(cfg) == "none"  # BC is the imitate-everything baseline
    off = TrainConfig(expert_gate="none")
    assert off.warm_start_gate == "none" and get_algorithm("leed").gate(off) == "none"
    assert get_algorithm("reled").gate(off) == "return"  # RELED's original mask
    assert TrainConfig(expert_gate="none", bc_pretrain_gate="queue").warm_start_gate == "queue"
    with pytest.raises(ValueError, match="expert_gate"):
        TrainConfig(expert_gate="always")
    with pytest.raises(ValueError, match="expert_trust"):
        TrainConfig(expert_trust="median")
    with pytest.raises(ValueError, match="bc_pretrain_gate"):
        TrainConfig(bc_pretrain_gate="return")


# ------------------------------------------------------------------------------ warm start gate
def test_demo_quality_and_warm_start_agents() -> None:
    def rnd(queues: dict[str, float]) -> tuple[dict, dict]:
        return {}, {"agents": {a: {"mean_queues": {"north": q, "south": 1.0}} for a, q in queues.items()}}

    rounds = [rnd({"A": 1.0, "B": 9.0}), rnd({"A": 3.0, "B": 7.0})]
    fixed = {"agents": {"A": {"mean_queues": {"north": 2.5, "south": 1.0}},
                        "B": {"mean_queues": {"north": 2.0, "south": 1.0}}}}
    q = demo_quality(rounds, {"A": [0, 1], "B": [1]}, fixed)
    # A: mean of (1+1, 3+1) = 3 <= 3.5 under fixed time; B: 8 > 3; city: mean(12, 12) > 6.5
    assert q["agents"]["A"] == {"demos": 3.0, "fixed": 3.5, "beats_fixed": True}
    assert q["agents"]["B"] == {"demos": 8.0, "fixed": 3.0, "beats_fixed": False}
    assert q["city"] == {"demos": 12.0, "fixed": 6.5, "beats_fixed": False, "delay": None, "fixed_delay": None}
    rounds[0][1]["mean_delay"], rounds[1][1]["mean_delay"] = 40.0, 50.0  # the honest delay, when recorded
    q = demo_quality(rounds, {"A": [0, 1], "B": [1]}, {**fixed, "mean_delay": 60.0})
    assert q["city"]["delay"] == 45.0 and q["city"]["fixed_delay"] == 60.0
    # the recorded delay decides "beats fixed time" city-wide, whatever the queue says
    from leed_traffic.learn.demo_batch import city_beats_fixed

    assert city_beats_fixed({"quality": q}) is True and q["city"]["beats_fixed"] is False
    city = {**q["city"], "delay": 33.1, "fixed_delay": 29.8, "beats_fixed": True}  # ingolstadt1: less queue, more delay
    assert city_beats_fixed({"quality": {**q, "city": city}}) is False
    city["delay"] = None  # not recorded: the queue decides
    assert city_beats_fixed({"quality": {**q, "city": city}}) is True and city_beats_fixed({}) is None
    q = demo_quality(rounds[:0] + [rnd({"A": 1.0, "B": 9.0}), rnd({"A": 3.0, "B": 7.0})],
                     {"A": [0, 1], "B": [1]}, fixed)  # as before, without delays, for the warm start below

    def tensors() -> dict[str, AgentDemoTensors]:
        z = np.zeros((1, 1))
        return {a: AgentDemoTensors(z, z[0], z[0], z[0], z[0], [], 0.0, z[0], z[0]) for a in ("A", "B")}

    per = tensors()
    warm_start_agents(per, {"quality": q}, "queue")
    assert (per["A"].warm, per["B"].warm) == (True, False)
    per = tensors()
    warm_start_agents(per, {"quality": {**q, "city": {"beats_fixed": True}}}, "queue")
    assert per["B"].warm  # a demonstrator that wins city-wide is trusted everywhere
    for meta, gate in (({"quality": q}, "none"), ({}, "queue")):  # off, or an older dataset
        per = tensors()
        warm_start_agents(per, meta, gate)
        assert per["A"].warm and per["B"].warm
    # a shared network learns one behaviour: only a city-wide winner may shape it
    per = tensors()
    warm_start_agents(per, {"quality": q}, "queue", shared=True)
    assert not per["A"].warm and not per["B"].warm
    per = tensors()
    warm_start_agents(per, {"quality": {**q, "city": {"beats_fixed": True}}}, "queue", shared=True)
    assert per["A"].warm and per["B"].warm
    # a pretrained start is never overwritten by cloning
    per = tensors()
    warm_start_agents(per, {"quality": {**q, "city": {"beats_fixed": True}}}, "queue", init="pretrained")
    assert not per["A"].warm and not per["B"].warm and "pretrained" in per["A"].warm_reason


def test_warm_start_skips_agents_whose_demos_queue_more_than_fixed_time(tmp_path: Path) -> None:
    demos = expert_demos()
    demos.metadata["quality"] = {"city": {"beats_fixed": False},
                                 "agents": {"a": {"beats_fixed": False}, "b": {"beats_fixed": True}}}
    cfg = TrainConfig(algo="leed", total_env_steps=20, bc_pretrain_steps=50, **FAST)
    train_run(cfg, RunDir(tmp_path / "w"), FakeFactory(), demos)
    pre = __import__("json").loads((tmp_path / "w" / "pretrain.json").read_text())
    assert pre["agents"] == 2 and set(pre["skipped"]) == {"a"} and pre["gate"] == "queue"
    # nobody left: the warm start draws nothing and changes nothing
    demos.metadata["quality"]["agents"] = {a: {"beats_fixed": False} for a in SIZES}
    train_run(cfg, RunDir(tmp_path / "none"), FakeFactory(), demos)
    pre = __import__("json").loads((tmp_path / "none" / "pretrain.json").read_text())
    assert pre["steps"] == 0 and pre["agents"] == 0


# ------------------------------------------------------------------------------ random demonstrator
def test_random_demonstrator_is_legal_uniform_and_seeded() -> None:
    states = [crossing(f"J{i}", legal=(0, 1)) for i in range(200)] + [crossing("F", legal=(1,))]
    dem = make_demonstrator("random", seed=3)
    assert dem.name == "random" and not dem.is_llm
    first = dem.decide(states)
    assert all(d.valid and d.phase in s.legal_actions for d, s in zip(first, states))
    assert first[-1].phase == 1 and dem.stats.forced == 1  # a single legal phase is forced
    phases = [d.phase for d in first[:-1]]
    assert 70 < sum(phases) < 130  # both phases, about half each
    assert [d.phase for d in make_demonstrator("random", seed=3).decide(states)] == [d.phase for d in first]
    assert [d.phase for d in make_demonstrator("random", seed=4).decide(states)] != [d.phase for d in first]
    assert [d.phase for d in dem.decide(states)] != [d.phase for d in first]  # draws continue


# ------------------------------------------------------------------------------ LEED vs IPPO
def random_demos(n_episodes: int = 2, steps: int = 20, seed: int = 123) -> DemoDataset:
    """Demonstrations of a uniformly random policy on the fake env (1/n of the best reward)."""
    env, rng = FakeTrafficEnv(steps), np.random.default_rng(seed)
    rows: dict[str, dict[str, list]] = {a: {k: [] for k in ("obs", "actions", "rewards", "episode")}
                                        for a in SIZES}
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        while env.agents:
            act = {a: int(rng.integers(SIZES[a][1])) for a in env.agents}
            nxt, rew, *_ = env.step(act)
            for a in SIZES:
                for k, v in (("obs", obs[a]), ("actions", act[a]), ("rewards", rew[a]), ("episode", ep)):
                    rows[a][k].append(v)
            obs = nxt
    return DemoDataset({a: AgentDemos(np.asarray(r["obs"], np.float32), np.asarray(r["actions"], np.int64),
                                      np.asarray(r["rewards"], np.float32), np.asarray(r["episode"], np.int64),
                                      np.ones(len(r["actions"]), bool)) for a, r in rows.items()},
                       {"demonstrator": "random"})


def score(tmp_path: Path, name: str, demos: DemoDataset | None = None, **kw) -> tuple[float, list[dict]]:
    cfg = TrainConfig(total_env_steps=600, **FAST, **kw)
    run = RunDir(tmp_path / name)
    result = train_run(cfg, run, FakeFactory(), demos)
    run.write_config({"experiment": {"train": cfg.to_dict()}, "env": result.spec.to_dict()})
    with (run.path / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    return run_controller(load_policies(run.path)), rows


def test_leed_with_random_demonstrations_does_not_fall_behind_ippo(tmp_path: Path) -> None:
    """Constant weight w = 1 (no DTW or return decay to soften it), warm start on (the fake dataset
    carries no quality metadata): ungated, the random labels hold LEED near the random policy;
    gated (the defaults: advantage gate + trust), it learns at least as well as IPPO. The agents
    stop trusting the random demonstrator and keep trusting a perfect one."""
    const = dict(algo="leed", expert_weight_mode="constant")
    ippo, _ = score(tmp_path, "ippo", algo="ippo")
    gated, rows = score(tmp_path, "gated", random_demos(), **const)
    ungated, _ = score(tmp_path, "ungated", random_demos(), **const, expert_gate="none")
    assert ippo > 0.5  # IPPO learns (random: 0.36)
    assert gated >= ippo - 0.05
    assert ungated < ippo - 0.1 and ungated < gated - 0.1
    kept = [float(r["expert_kept"]) for r in rows]
    assert all(0.0 <= k <= 1.0 for k in kept)
    eff = [float(r["expert_weight_eff"]) for r in rows]
    assert all(0.0 <= e <= float(r["expert_weight"]) + 1e-9 for e, r in zip(eff, rows))  # w_i x kept_i
    _, good = score(tmp_path, "expert", expert_demos(), **const)
    kept_good = np.mean([float(r["expert_kept"]) for r in good][-10:])
    assert np.mean(kept[-10:]) < 0.3 and kept_good > 0.5
    trust_rand = np.mean([float(r["expert_trust"]) for r in rows][-10:])
    trust_good = np.mean([float(r["expert_trust"]) for r in good][-10:])
    assert trust_rand < 0.5 and trust_good > 0.8


def test_random_demonstrations_on_sumo_record_their_quality(tmp_path: Path) -> None:
    """``--llm random`` end to end on a short helsinki horizon: every answer legal, the dataset's
    metadata scores each kept intersection and the city against fixed time on the mean queue."""
    from leed_traffic.demos import generate_demos

    try:
        path = generate_demos("helsinki", llm="random", rounds=1, seconds=150, out=tmp_path / "r",
                              progress=False, require_beat_fixed=False, keep=1)
    except Exception as e:  # noqa: BLE001 - SUMO or the bundled scenario missing
        pytest.skip(f"helsinki scenario unavailable: {e}")
    ds = DemoDataset.load(path)
    meta = ds.metadata
    assert meta["demonstrator"] == "random" and meta["is_llm"] is False
    assert meta["per_round"][0]["validity"] == 1.0
    q = meta["quality"]
    assert set(q["agents"]) == set(ds.agents) and len(ds.agents) == 35
    assert all(v["demos"] >= 0 and v["fixed"] >= 0 and v["beats_fixed"] == (v["demos"] <= v["fixed"])
               for v in q["agents"].values())
    assert q["city"]["demos"] == pytest.approx(sum(v["demos"] for v in q["agents"].values()))


def test_measured_trust_in_training_stops_imitating_once_the_agent_is_better(tmp_path: Path) -> None:
    """The perfect expert's demonstrations, recorded as measuring 5.0 s of delay (the fake env
    reports 10 x the share of wrong actions at an episode's end). Under ``mean`` trust the critic
    keeps trusting them to the end; under ``measured`` the learner stops once its own last three
    episodes average below 5.0, and every update's trust agrees with the delays logged before it."""
    demos = expert_demos()
    demos.metadata["quality"] = {"city": {"beats_fixed": True, "delay": 5.0}, "agents": {}}
    const = dict(algo="leed", expert_weight_mode="constant", bc_pretrain_steps=0)
    _, mean_rows = score(tmp_path, "mean", demos, expert_trust="mean", **const)
    _, rows = score(tmp_path, "measured", demos, **const)
    with (tmp_path / "measured" / "metrics.csv").open() as f:
        eps = list(csv.DictReader(f))
    assert np.mean([float(r["expert_trust"]) for r in mean_rows][-5:]) > 0.8
    assert np.mean([float(r["expert_trust"]) for r in rows][-5:]) == 0.0
    for r in rows:  # the episodes collected up to update u (its own included) decide its trust
        before = [float(e["mean_delay"]) for e in eps if int(e["update"]) <= int(r["update"])][-3:]
        if before and np.mean(before) < 5.0:
            assert float(r["expert_trust"]) == 0.0, (r["update"], before)
    assert any(float(r["expert_trust"]) > 0 for r in rows)  # it did imitate while worse


@pytest.mark.parametrize("recorded, cloned", [(0.5, True), (9.0, False)])
def test_measured_warm_start_clones_only_what_beats_the_fresh_policy(tmp_path: Path, recorded: float,
                                                                     cloned: bool) -> None:
    """Under ``measured`` trust the warm start waits for the fresh policy's first episode (the fake
    env reports ~6.4 s for a near-random policy) and clones the demonstrations only if their
    recorded delay is 5 % below it: 0.5 s is cloned (the action agreement jumps), 9.0 s is not
    (nothing is drawn); ``pretrain.json`` records the comparison."""
    import json

    demos = expert_demos()
    demos.metadata["quality"] = {"city": {"beats_fixed": True, "delay": recorded}, "agents": {}}
    cfg = TrainConfig(algo="leed", total_env_steps=60, bc_pretrain_steps=50, **FAST)
    train_run(cfg, RunDir(tmp_path / "w"), FakeFactory(), demos)
    pre = json.loads((tmp_path / "w" / "pretrain.json").read_text())
    fresh = pre["measured"]["fresh_policy_delay"]
    assert 3.0 < fresh < 9.0 and pre["measured"]["after_update"] == 1
    assert pre["measured"]["cloned"] is cloned and pre["measured"]["demonstrations_delay"] == recorded
    if cloned:
        agree = pre["action_agreement"]
        assert pre["steps"] == 50 and agree["after"] > 0.8 and agree["after"] > agree["before"] + 0.2
    else:
        assert pre["steps"] == 0 and pre["agents"] == 0 and len(pre["skipped"]) == len(SIZES)
