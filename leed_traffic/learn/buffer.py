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
    """Generalised advantage estimation over [T, ...] arrays; returns (advantages, returns).

    Any trailing shape works ([T, W] for one agent, [T, A, W] for all agents at once); ``dones``
    broadcasts against ``rewards`` (e.g. [T, 1, W]: an episode ends for every agent together).
    """
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
    """One agent's rollout as [T, W(, d)] arrays (views into the buffer's stacked arrays)."""

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


class RolloutBuffer:
    """Append one step of all agents and workers at a time; ``finish`` stacks and computes GAE.

    Steps are stored as agent-stacked arrays (obs padded to the largest agent: [A, W, P], the
    rest [A, W], dones [W]) because that is the layout the batched policy reads and writes: a
    decision step costs a handful of array copies, not one per agent.
    """

    FIELDS = ("obs", "actions", "logprobs", "values", "rewards", "raw_rewards")

    def __init__(self, agents: list[str], obs_dims: list[int] | None = None):
        self.agents = list(agents)
        self.obs_dims = obs_dims
        self._steps: dict[str, list[np.ndarray]] = {f: [] for f in (*self.FIELDS, "dones")}
        self.stacked: dict[str, np.ndarray] = {}
        """After ``finish``: [A, T*W, ...] per field (+ advantages, returns), the optimiser's input."""
        self.data: dict[str, AgentRollout] = {}

    def __len__(self) -> int:
        return len(self._steps["dones"])

    def add(self, *, dones: np.ndarray, **step: np.ndarray) -> None:
        """One decision step: obs [A, W, P], actions/logprobs/values/rewards/raw_rewards [A, W]."""
        for f in self.FIELDS:
            self._steps[f].append(np.asarray(step[f]))
        self._steps["dones"].append(np.asarray(dones, bool))

    def finish(self, next_values: np.ndarray, gamma: float, gae_lambda: float) -> None:
        """Stack the steps and compute GAE for every agent at once (next_values [A, W])."""
        s = self._steps
        arr = {  # [T, A, W, ...]
            "obs": np.stack(s["obs"]).astype(np.float32),
            "actions": np.stack(s["actions"]).astype(np.int64),
            "logprobs": np.stack(s["logprobs"]).astype(np.float32),
            "values": np.stack(s["values"]).astype(np.float32),
            "rewards": np.stack(s["rewards"]).astype(np.float32),
            "raw_rewards": np.stack(s["raw_rewards"]).astype(np.float32),
        }
        dones = np.stack(s["dones"])  # [T, W]
        arr["advantages"], arr["returns"] = compute_gae(
            arr["rewards"], arr["values"], dones[:, None, :], np.asarray(next_values, np.float32),
            gamma, gae_lambda,
        )
        T, A, W = arr["actions"].shape
        self.stacked = {k: np.ascontiguousarray(np.moveaxis(v, 1, 0)).reshape(A, T * W, *v.shape[3:])
                        for k, v in arr.items()}
        dims = self.obs_dims or [arr["obs"].shape[-1]] * A
        for i, a in enumerate(self.agents):
            r = AgentRollout(**{k: arr[k][:, i] for k in self.FIELDS}, dones=dones)
            r.obs = r.obs[..., : dims[i]]
            r.advantages, r.returns = arr["advantages"][:, i], arr["returns"][:, i]
            self.data[a] = r
