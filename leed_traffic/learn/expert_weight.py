"""The expert-loss weight w_i of LEED (and RELED's hybrid balancing).

The papers describe the mechanism (DTW similarity between the agent's and the expert's
trajectories sets the imitation weight, which fades as the agent overtakes the expert) but publish
no equations; these are our forms, each a named option of ``TrainConfig.expert_weight_mode``:

``similarity``  w = w0 * exp(-d / tau)
    Imitate hard while the agent behaves like the expert (the demos are on its state
    distribution, so their gradients are informative) and let go when it has found its own way.
``distance``    w = w0 * (1 - exp(-d / tau))
    The opposite reading: pull the agent back the further it drifts (a behavioural trust region).
``annealed``    w = w0 * max(0, 1 - steps / anneal_steps)
    Distance-free schedule (DQfD/"LLM-guided then anneal" style baseline).
``constant``    w = w0
    Fixed mixing (the classic PPO+BC auxiliary loss).

Return decay (``expert_return_decay``), multiplied on any form:
    g = exp(-max(0, r_agent - r_expert) / (beta * |r_expert| + eps))
with r the *mean reward per decision step* (robust to episode-length differences between the
demos and the rollouts): g = 1 while the agent is at or below the demonstrator, decays once it
overtakes it, so a weak demonstrator is not a ceiling.

RELED hybrid (``reled``):
    * per demo sample, an indicator 1[G_e(o_e) > V_i(o_e)]: imitate only states where the expert's
      own discounted return-to-go beats what the agent's critic expects from that state (the
      self-imitation-learning test; the critic has no Q, and the expert's realised return is the
      honest estimate of Q(o_e, a_e)). The expert loss is the mean over *all* demo samples of
      mask * NLL, so the effective weight also shrinks with the fraction of states where the expert
      is still better.
    * per agent, a non-stationarity factor 1 / (1 + kappa * v_i), with v_i the mean std of the
      neighbours' recent rewards divided by the median of that quantity over all agents: demos of an
      intersection whose surroundings are volatile describe a moving target and are trusted less;
      relative (not absolute) so that reward scale does not matter.

The gate (``expert_gate``, issue 12 "imitate only what helps"; RELED's mask generalised to LEED):
    m_j = 1[target_j > V_i(o_e,j)] per demo sample, with the target in the critic's units
    (raw rewards / the reward normaliser's std) and refreshed every update:
    ``return``     target = G_e, the Monte-Carlo return-to-go above (RELED's mask);
    ``advantage``  target = G^lambda_e, the TD(lambda) return of the demonstration bootstrapped with
                   the agent's own critic (``lambda_returns``), so m_j = 1[GAE_j > 0]: the
                   demonstrated action, followed by the demonstrator for a few steps, earned more
                   than the agent expects from o_e -- its advantage under the agent's critic.
    The kept fraction of an agent's demo states is the share of its demonstrations worth imitating.
    Trust (``expert_trust="mean"``): an agent imitates nothing in an update where the *mean* margin
    over its demo samples is not positive; for ``advantage`` that mean estimates
    J(demonstrator) - J(agent) by the performance-difference lemma (Kakade & Langford 2002), so
    the noisy tail of a worse demonstrator's samples is not imitated either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-8


def base_weight(
    mode: str, distance: float, w0: float, tau: float, env_steps: int, anneal_steps: int
) -> float:
    """The weight before return decay and RELED factors."""
    if mode == "similarity":
        return w0 * math.exp(-distance / tau)
    if mode == "distance":
        return w0 * (1.0 - math.exp(-distance / tau))
    if mode == "annealed":
        return w0 * max(0.0, 1.0 - env_steps / max(anneal_steps, 1))
    if mode == "constant":
        return w0
    raise ValueError(f"unknown expert weight mode {mode!r}")


def return_decay(agent_return: float, expert_return: float, beta: float) -> float:
    """1 while the agent's per-step return is at or below the expert's, exp decay once above."""
    surplus = max(0.0, agent_return - expert_return)
    return math.exp(-surplus / (beta * abs(expert_return) + EPS)) if surplus > 0 else 1.0


def volatility_factor(relative_volatility: float, kappa: float) -> float:
    """RELED non-stationarity discount 1 / (1 + kappa * v)."""
    return 1.0 / (1.0 + kappa * max(0.0, relative_volatility))


def neighbour_volatility(
    rewards: dict[str, np.ndarray], neighbours: dict[str, list[str]]
) -> dict[str, float]:
    """v_i = mean over i's neighbours of std(recent rewards), divided by the median over agents.

    Agents without neighbours get 0 (nothing around them moves). All-zero volatility -> all 0.
    """
    std = {a: float(np.std(r)) if len(r) else 0.0 for a, r in rewards.items()}
    raw = {}
    for a in rewards:
        nb = [n for n in neighbours.get(a, []) if n in std and n != a]
        raw[a] = float(np.mean([std[n] for n in nb])) if nb else 0.0
    positive = [v for v in raw.values() if v > 0]
    ref = float(np.median(positive)) if positive else 0.0
    return {a: (v / ref if ref > 0 else 0.0) for a, v in raw.items()}


def discounted_returns(rewards: np.ndarray, episode: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return-to-go of every demo row, within its trajectory (no bootstrap at the end:
    the demos stop at the scenario's end, where the return really is truncated)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if t == len(rewards) - 1 or episode[t] != episode[t + 1]:
            running = 0.0
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def lambda_returns(rewards: np.ndarray, values: np.ndarray, episode: np.ndarray, gamma: float,
                   lam: float) -> np.ndarray:
    """TD(lambda) return of every demo row under the agent's critic (``values`` = V(o_e), same units
    as ``rewards``): G_t = V_t + A_t with A_t the GAE of the demonstration,
    A_t = delta_t + gamma*lam*A_{t+1}, delta_t = r_t + gamma*V_{t+1} - V_t, within each trajectory.
    The demos do not record the observation after their last step; the last row bootstraps with its
    own V (the trainer bootstraps a scenario-end truncation with V(final obs) alike), so the end
    of a demonstration is not mistaken for the end of all costs. lam = 1: the Monte-Carlo return
    plus the bootstrap; lam = 0: the one-step TD target r_t + gamma*V_{t+1}."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    adv = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        last = t == len(rewards) - 1 or episode[t] != episode[t + 1]
        v_next = values[t] if last else values[t + 1]
        delta = rewards[t] + gamma * v_next - values[t]
        running = delta + (0.0 if last else gamma * lam * running)
        adv[t] = running
    return adv + values


def reled_mask(expert_returns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1.0 where the expert's return-to-go beats the critic's value of the same state (the gate:
    ``expert_returns`` is the Monte-Carlo return-to-go, or the TD(lambda) return)."""
    return (np.asarray(expert_returns) > np.asarray(values)).astype(np.float32)


@dataclass
class WeightInfo:
    """One agent's weight and its ingredients (logged, and asserted on in tests)."""

    weight: float
    distance: float = float("nan")
    base: float = 0.0
    decay: float = 1.0
    volatility: float = 1.0
    kept: float = float("nan")
    """The gate's kept fraction of this agent's demo states (0 when its trust is 0; the expert loss
    averages over all samples, so the effective weight is weight x kept); nan = ungated."""
    trust: float = float("nan")
    """1/0: the agent trusted its demonstrator in this update (``expert_trust``); nan = no trust test."""


def expert_weight(
    mode: str,
    distance: float,
    *,
    w0: float,
    tau: float,
    env_steps: int = 0,
    anneal_steps: int = 1,
    agent_return: float | None = None,
    expert_return: float | None = None,
    beta: float = 0.1,
    relative_volatility: float | None = None,
    kappa: float = 1.0,
) -> WeightInfo:
    """w_i = base(mode, d) * return_decay * volatility_factor (factors = 1 when not given)."""
    base = base_weight(mode, distance, w0, tau, env_steps, anneal_steps)
    decay = (
        return_decay(agent_return, expert_return, beta)
        if agent_return is not None and expert_return is not None
        else 1.0
    )
    vol = volatility_factor(relative_volatility, kappa) if relative_volatility is not None else 1.0
    return WeightInfo(weight=base * decay * vol, distance=distance, base=base, decay=decay,
                      volatility=vol)
