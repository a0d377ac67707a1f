"""Test-boundary fakes for the learner: a tiny deterministic PettingZoo-style ParallelEnv.

Three intersections with different observation and action sizes (one id contains a dot, like
many SUMO ids). Each step every agent sees a fresh random vector; the rewarded ("best") action is
the argmax of its first ``n_actions`` entries, so one action is clearly best in every state, a
random policy earns 1/n per step, and the expert is known exactly. Deterministic for a seed
(needed by the exact-resume test, as SUMO is for a seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from gymnasium import spaces

from leed_traffic.dataset import AgentDemos, DemoDataset

SIZES = {"a": (3, 2), "b": (5, 3), "c.1": (4, 4)}  # agent -> (obs_dim, n_actions)


class FakeTrafficEnv:
    """ParallelEnv API: possible_agents, observation_space/action_space, reset, step, close."""

    metadata = {"name": "fake_traffic"}

    def __init__(self, episode_steps: int = 20, sizes: dict | None = None, net: str = "net-A",
                 crash_after: int = 0):
        self.crash_after, self.total_steps = crash_after, 0  # simulate Ctrl-C after N steps
        self.sizes = dict(sizes or SIZES)
        self.possible_agents = list(self.sizes)
        self.agents: list[str] = []
        self.episode_steps = episode_steps
        self.delta_time = 5.0
        self.scenario = SimpleNamespace(city="fakecity", hash=f"hash-{net}", net_hash=net)
        self._rng = np.random.default_rng(0)

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.sizes[agent][0],), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.sizes[agent][1])

    def best_action(self, agent: str, obs: np.ndarray) -> int:
        return int(np.argmax(obs[: self.sizes[agent][1]]))

    def _observe(self) -> dict[str, np.ndarray]:
        self._obs = {a: self._rng.random(self.sizes[a][0]).astype(np.float32)
                     for a in self.possible_agents}
        return {a: o.copy() for a, o in self._obs.items()}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]):
        self.total_steps += 1
        if self.crash_after and self.total_steps > self.crash_after:
            raise KeyboardInterrupt("simulated interruption")
        rewards = {a: float(int(actions[a]) == self.best_action(a, self._obs[a]))
                   for a in self.agents}
        self.t += 1
        done = self.t >= self.episode_steps
        obs = self._observe()
        delay = 10.0 * (1.0 - float(np.mean(list(rewards.values()))))
        infos = {a: {"mean_delay": delay} for a in self.agents}
        terms = {a: False for a in self.agents}
        truncs = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FakeFactory:
    """Picklable env factory (spawned workers import this module to rebuild it)."""

    episode_steps: int = 20
    net: str = "net-A"
    crash_after: int = 0

    def __call__(self) -> FakeTrafficEnv:
        return FakeTrafficEnv(self.episode_steps, net=self.net, crash_after=self.crash_after)


def expert_demos(n_episodes: int = 2, steps: int = 20, seed: int = 123) -> DemoDataset:
    """Demonstrations of the perfect expert on the fake env (reward 1 every step)."""
    env = FakeTrafficEnv(steps)
    rows: dict[str, dict[str, list]] = {a: {k: [] for k in ("obs", "actions", "rewards",
                                                           "episode")} for a in SIZES}
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        while env.agents:
            act = {a: env.best_action(a, obs[a]) for a in env.agents}
            nxt, rew, *_ = env.step(act)
            for a in SIZES:
                rows[a]["obs"].append(obs[a])
                rows[a]["actions"].append(act[a])
                rows[a]["rewards"].append(rew[a])
                rows[a]["episode"].append(ep)
            obs = nxt
    agents = {
        a: AgentDemos(np.asarray(r["obs"], np.float32), np.asarray(r["actions"], np.int64),
                      np.asarray(r["rewards"], np.float32), np.asarray(r["episode"], np.int64),
                      np.ones(len(r["actions"]), bool))
        for a, r in rows.items()
    }
    return DemoDataset(agents, {"city": "fakecity", "demonstrator": "oracle"})


def run_controller(act, episodes: int = 10, seed: int = 999) -> float:
    """Mean per-step reward (fraction of best actions) of a controller on the fake env."""
    env = FakeTrafficEnv()
    total, n = 0.0, 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        while env.agents:
            obs, rew, *_ = env.step(act(obs))
            total += sum(rew.values())
            n += len(rew)
    return total / n


def test_fake_env_is_deterministic_and_expert_is_perfect() -> None:
    a, b = FakeTrafficEnv(), FakeTrafficEnv()
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    assert all(np.array_equal(oa[k], ob[k]) for k in oa)
    demos = expert_demos(1)
    assert all(float(d.rewards.mean()) == 1.0 for d in demos.agents.values())
