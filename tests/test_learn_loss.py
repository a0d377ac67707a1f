"""PPO loss, expert loss, the LEED mix and GAE on hand-computable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leed_traffic.learn.buffer import compute_gae
from leed_traffic.learn.loss import expert_loss, mixed_loss, ppo_loss
from leed_traffic.learn.policy import AgentSpec, MultiAgentPolicy, clip_grad_norm_per_agent


def test_expert_loss_is_negative_mean_log_likelihood() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    actions = torch.tensor([0, 1])
    # -(log 0.75 + log 0.5) / 2
    assert float(expert_loss(logits, actions)) == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)
    # RELED mask: only the first sample counts, still divided by 2
    masked = expert_loss(logits, actions, torch.tensor([1.0, 0.0]))
    assert float(masked) == pytest.approx(-math.log(0.75) / 2)


def test_label_smoothed_expert_loss_spreads_eps_over_the_legal_phases_only() -> None:
    # phases: p = (0.75, 0.25, masked); eps = 0.2 over the 2 legal phases
    from leed_traffic.learn.policy import MASKED_LOGIT

    logits = torch.tensor([[math.log(3.0), 0.0, MASKED_LOGIT]])
    actions = torch.tensor([0])
    want = -(0.8 * math.log(0.75) + 0.2 * (math.log(0.75) + math.log(0.25)) / 2)
    assert float(expert_loss(logits, actions, smoothing=0.2)) == pytest.approx(want)
    assert float(expert_loss(logits, actions, smoothing=0.0)) == pytest.approx(-math.log(0.75))
    # its minimiser keeps entropy: the optimum of a free 2-phase softmax is (1 - eps/2, eps/2)
    z = torch.zeros(1, 2, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.1)
    for _ in range(600):
        opt.zero_grad()
        expert_loss(z, torch.tensor([0]), smoothing=0.2).sum().backward()
        opt.step()
    assert torch.softmax(z, -1)[0, 1].item() == pytest.approx(0.1, abs=1e-3)


def test_ppo_loss_hand_values_and_mix() -> None:
    old = torch.log(torch.tensor([0.5, 0.5]))
    new = torch.log(torch.tensor([0.75, 0.5]))  # ratios 1.5 (clipped to 1.2) and 1.0
    adv = torch.tensor([1.0, -2.0])
    v_new, v_old, ret = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])
    ent = torch.tensor([0.6, 0.4])
    t = ppo_loss(new, old, adv, v_new, v_old, ret, ent, clip_coef=0.2, vf_coef=0.5, ent_coef=0.1,
                 clip_vloss=False, norm_adv=False)
    pg = (-1.2 + 2.0) / 2  # max(-1*1.5, -1*1.2) = -1.2 ; max(2*1, 2*1) = 2
    v = 0.5 * ((1 - 3) ** 2 + 0) / 2
    assert float(t.pg_loss) == pytest.approx(pg)
    assert float(t.v_loss) == pytest.approx(v)
    assert float(t.loss) == pytest.approx(pg - 0.1 * 0.5 + 0.5 * v)
    le = torch.tensor(0.7)
    assert float(mixed_loss(t.loss, le, 0.3)) == pytest.approx(float(t.loss) + 0.3 * 0.7)
    assert float(mixed_loss(t.loss, le, 0.0)) == pytest.approx(float(t.loss))  # IPPO


def test_gae_hand_values_with_done_and_bootstrap() -> None:
    r = np.array([[1.0], [1.0], [1.0]], np.float32)
    v = np.array([[0.5], [0.5], [0.5]], np.float32)
    d = np.array([[False], [True], [False]])
    adv, ret = compute_gae(r, v, d, np.array([2.0], np.float32), gamma=0.5, gae_lambda=1.0)
    # t=2: 1 + 0.5*2 - 0.5 = 1.5 ; t=1 (done): 1 - 0.5 = 0.5 ; t=0: 1 + 0.25 - 0.5 + 0.5*0.5 = 1.0
    assert adv[:, 0] == pytest.approx([1.0, 0.5, 1.5])
    assert ret[:, 0] == pytest.approx([1.5, 1.0, 2.0])


def test_policy_shapes_sharing_masks_and_centralized_critic() -> None:
    specs = [AgentSpec("a", 3, 2), AgentSpec("b.x", 5, 4)]
    for share in (False, True):
        for central in (False, True):
            p = MultiAgentPolicy(specs, (8,), share, central)
            obs = {"a": np.random.rand(6, 3), "b.x": np.random.rand(6, 5)}
            acts, logp, vals = p.act_batch(obs)
            assert acts["a"].shape == (6,) and vals["b.x"].shape == (6,)
            assert acts["a"].max() < 2  # padded actions of the shared net are masked
            probs = p.dist(p.pad({"a": np.random.rand(4, 3), "b.x": np.random.rand(4, 5)})).probs
            assert probs.shape == (2, 4, 4) and torch.all(probs[0, :, 2:] == 0)


def test_stacked_agents_are_independent_and_clipped_per_agent() -> None:
    """Agent a's loss moves only agent a's slices; clipping one agent leaves the other alone."""
    p = MultiAgentPolicy([AgentSpec("a", 3, 2), AgentSpec("b", 5, 4)], (8,))
    padded = p.pad({"a": np.random.rand(6, 3), "b": np.random.rand(6, 5)})
    p.logits(padded)[0].sum().backward()  # loss of agent a only
    for w in p.actor.weights:
        assert w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0
    assert p.actor.weights[0].grad[0, 3:].abs().sum() == 0  # padded inputs get no gradient
    p.zero_grad()
    (1000 * p.logits(padded)[0].sum() + 1e-3 * p.logits(padded)[1].sum()).backward()
    before_b = [w.grad[1].clone() for w in p.actor.weights]
    norms = clip_grad_norm_per_agent(p, 0.5)
    assert norms[0] > 0.5 > norms[1]
    after = torch.sqrt(sum(w.grad[0].pow(2).sum() + b.grad[0].pow(2).sum()
                           for w, b in zip(p.actor.weights, p.actor.biases)))
    assert float(after) == pytest.approx(0.5, rel=1e-4)
    assert all(torch.equal(b, w.grad[1]) for b, w in zip(before_b, p.actor.weights))


def test_batched_losses_reduce_per_agent_row() -> None:
    logits = torch.zeros(2, 3, 2)
    acts = torch.zeros(2, 3, dtype=torch.long)
    assert expert_loss(logits, acts).tolist() == pytest.approx([math.log(2)] * 2)
    ppo = torch.tensor([1.0, 2.0])
    assert mixed_loss(ppo, torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.5])).tolist() == [1.0, 2.5]
