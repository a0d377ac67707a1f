"""Rollout storage per agent and GAE (CleanRL's ppo.py, with time-limit bootstrapping).

Steps are appended (the rollout length may be "one whole episode", unknown in advance) and
stacked into [T, W] arrays (decision steps x workers) per agent. ``dones[t]`` means "the episode
ended after step t"; on a *truncation* (the scenario's end is a time limit, not a terminal state)
the trainer adds gamma * V(final observation) to ``rewards[t]`` before marking it done, so the
last steps' advantages are not biased toward zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    next_value: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over [T, W] arrays; returns (advantages, returns)."""
    T = rewards.shape[0]
    adv = np.zeros(rewards.shape, dtype=np.float32)
    last = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(T)):
        next_v = next_value if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t].astype(np.float32)
        delta = rewards[t] + gamma * next_v * nonterminal - values[t]
        last = delta + gamma * gae_lambda * nonterminal * last
        adv[t] = last
    return adv, (adv + values).astype(np.float32)


@dataclass
class AgentRollout:
    """One agent's rollout as [T, W(, d)] arrays."""

    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    """Normalised rewards (+ truncation bootstrap): what PPO learns from."""
    raw_rewards: np.ndarray
    """The environment's rewards (for returns, the return decay and RELED volatility)."""
    dones: np.ndarray
    advantages: np.ndarray | None = None
    returns: np.ndarray | None = None

    def flat(self, name: str) -> np.ndarray:
        x = getattr(self, name)
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class RolloutBuffer:
    """Append one step of all workers at a time; ``finish`` stacks and computes GAE."""

    FIELDS = ("obs", "actions", "logprobs", "values", "rewards", "raw_rewards", "dones")

    def __init__(self, agents: list[str]):
        self.agents = list(agents)
        self._steps: dict[str, dict[str, list[np.ndarray]]] = {
            a: {f: [] for f in self.FIELDS} for a in self.agents
        }
        self.data: dict[str, AgentRollout] = {}

    def __len__(self) -> int:
        return len(self._steps[self.agents[0]]["actions"])

    def add(self, agent: str, **step: np.ndarray) -> None:
        """One step for all workers: obs [W, d], the others [W]."""
        for f in self.FIELDS:
            self._steps[agent][f].append(np.asarray(step[f]))

    def set_reward(self, agent: str, t: int, worker: int, value: float) -> None:
        """Patch a stored (normalised) reward: used for the truncation bootstrap."""
        self._steps[agent]["rewards"][t][worker] = value

    def finish(self, next_values: dict[str, np.ndarray], gamma: float, gae_lambda: float) -> None:
        for a in self.agents:
            s = self._steps[a]
            r = AgentRollout(
                obs=np.stack(s["obs"]).astype(np.float32),
                actions=np.stack(s["actions"]).astype(np.int64),
                logprobs=np.stack(s["logprobs"]).astype(np.float32),
                values=np.stack(s["values"]).astype(np.float32),
                rewards=np.stack(s["rewards"]).astype(np.float32),
                raw_rewards=np.stack(s["raw_rewards"]).astype(np.float32),
                dones=np.stack(s["dones"]).astype(bool),
            )
            r.advantages, r.returns = compute_gae(
                r.rewards, r.values, r.dones, next_values[a], gamma, gae_lambda
            )
            self.data[a] = r
