"""Episode bookkeeping: every worker's episode in progress, reward normalisation, exact resume.

Two ways to collect use it. Whole episodes (``rollout_steps`` = 0, the default): rollout workers
(``workers.py``) play entire episodes and return ``Trajectory`` objects; the book only hands out
each worker's next episode (``tasks``) and takes back the finished ones (``finish``): checkpoints
fall between episodes, so nothing has to be replayed on resume. Lockstep (``rollout_steps`` > 0):
the learner steps every environment itself, and the book follows the episodes step by step.

``EpisodeBook`` knows, per worker, the episode's SUMO seed, the actions taken so far, the raw
returns and the delay/sim-time the env reported, plus worker 0's trajectory (what LEED's DTW
compares with the expert's). Its ``state_dict`` goes into every checkpoint; ``load_state_dict``
resets each environment with the episode's seed and replays the actions (SUMO is deterministic
for a seed), so a resumed run continues from exactly where the interrupted one stood.

``RewardNormalizer`` scales each agent's rewards by a running std of its discounted return
(gymnasium's NormalizeReward), for all agents and workers in three vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from leed_traffic.learn.rollout import StepResult, WorkerPool

if TYPE_CHECKING:
    from leed_traffic.learn.workers import EpisodeTask, Trajectory

# Where the env's info may report the network delay / the simulation time; first key found wins.
DELAY_KEYS = ("mean_delay", "mean_trip_delay", "system_mean_delay", "delay", "system_mean_waiting_time",
              "mean_waiting_time")
SIM_TIME_KEYS = ("sim_time", "time", "step")

Obs = dict[str, np.ndarray]


def episode_seed(seed: int, worker: int, number: int) -> int:
    """SUMO seed of a worker's n-th episode: reproducible and distinct per worker/episode."""
    return int(np.random.SeedSequence([seed, worker, number]).generate_state(1)[0] & 0x7FFFFFFF)


def validation_seeds(seed: int, n: int) -> list[int]:
    """SUMO seeds that choose a trained policy's deployed mode (``pipeline.select_mode``): the
    first ``n`` episodes worker 0 trained on. Training seeds on purpose, so the choice never sees
    the held-out seeds it is then reported on."""
    return [episode_seed(seed, 0, k) for k in range(n)]


def action_seed(seed: int, worker: int, number: int) -> int:
    """Seed of the torch RNG stream that samples the actions of a worker's n-th episode (the
    worker seeds a forked torch RNG with it, ``workers.EpisodeRunner.run``): derived from the
    episode's SUMO seed, so an episode is the same wherever (on whichever backend, process or
    machine) it is played, and independent of the learner's own RNG."""
    return int(np.random.SeedSequence([episode_seed(seed, worker, number), 1]).generate_state(1)[0] & 0x7FFFFFFF)


def step_outcome(agents: list[str], result: StepResult, steps: int, delta_time: float
                 ) -> tuple[np.ndarray, bool, bool, float | None, float]:
    """One env step in the learner's terms: raw rewards [A] (float32), done, truncated (done by
    the time limit: bootstrap with V), the delay the env reported at the episode's end (or None)
    and the episode's simulated time after ``steps`` steps. Shared by the lockstep book and the
    episode workers, so both read an env the same way."""
    obs2, rew, term, trunc, info = result
    raw = np.asarray([rew.get(a, 0.0) for a in agents], np.float32)
    ended = [bool(term.get(a, False) or trunc.get(a, False)) for a in agents]
    done = all(ended) or not obs2
    truncated = done and not any(bool(term.get(a, False)) for a in agents)
    delay = find_number(info, DELAY_KEYS) if done else None  # running trip statistics at the end
    if delta_time > 0:
        sim_time = steps * delta_time
    else:
        t = find_number(info, SIM_TIME_KEYS)
        sim_time = t if t is not None else float(steps)
    return raw, done, truncated, delay, sim_time


def find_number(info: Any, keys: tuple[str, ...]) -> float | None:
    """First numeric value under one of ``keys`` in a flat or per-agent info dict."""
    if not isinstance(info, dict):
        return None
    for k in keys:
        if k in info and isinstance(info[k], (int, float, np.floating, np.integer)):
            return float(info[k])
    for v in info.values():
        if isinstance(v, dict):
            found = find_number(v, keys)
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------- reward normalisation
class RunningMeanStd:
    """Running mean/variance per agent (parallel algorithm, as gymnasium's NormalizeReward).

    ``update(x)`` takes [A, W]: one new sample per agent and worker; every agent sees the same
    number of samples, so the count is shared. Kept as arrays so a decision step costs three
    vector operations, not a Python call per agent.
    """

    def __init__(self, n: int) -> None:
        self.mean, self.var, self.count = np.zeros(n), np.ones(n), 1e-4

    def update(self, x: np.ndarray) -> None:
        bm, bv, bc = x.mean(-1), x.var(-1), x.shape[-1]
        delta, tot = bm - self.mean, self.count + bc
        m2 = self.var * self.count + bv * bc + delta**2 * self.count * bc / tot
        self.mean, self.var, self.count = self.mean + delta * bc / tot, m2 / tot, tot

    def state(self, i: int) -> list[float]:
        return [float(self.mean[i]), float(self.var[i]), float(self.count)]

    def load(self, i: int, s: list[float]) -> None:
        self.mean[i], self.var[i], self.count = float(s[0]), float(s[1]), float(s[2])


class RewardNormalizer:
    """Per-agent reward scaling by the running std of the discounted return (``normalize_rewards``)."""

    def __init__(self, n_agents: int, n_workers: int, gamma: float, enabled: bool) -> None:
        self.gamma, self.enabled = gamma, enabled
        self.rms = RunningMeanStd(n_agents)
        self.ret_acc = np.zeros((n_agents, n_workers))  # discounted returns so far, [A, W]

    def __call__(self, raw: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Raw rewards [A, W] -> what PPO learns from (float32); ``dones`` [W] restart the returns."""
        if self.enabled:
            self.ret_acc = self.ret_acc * self.gamma + raw
            self.rms.update(self.ret_acc)
            norm = raw / np.sqrt(self.rms.var + 1e-8)[:, None]
            self.ret_acc[:, dones] = 0.0
        else:
            norm = raw.copy()
        return norm.astype(np.float32)

    def episodes(self, raws: list[np.ndarray]) -> list[np.ndarray]:
        """Whole episodes, one per worker (raw rewards [T_w, A]) -> normalised rewards [T_w, A].

        Replays the episodes step by step across workers, as if they had been stepped in
        lockstep: with equal lengths this is exactly ``__call__`` per step (an episode that is
        already over contributes no more samples)."""
        out = [np.zeros(r.shape, np.float32) for r in raws]
        for t in range(max((len(r) for r in raws), default=0)):
            live = [w for w, r in enumerate(raws) if t < len(r)]
            raw = np.stack([raws[w][t] for w in live], axis=1)  # [A, live]
            if self.enabled:
                acc = self.ret_acc[:, live] * self.gamma + raw
                self.rms.update(acc)
                norm = raw / np.sqrt(self.rms.var + 1e-8)[:, None]
                self.ret_acc[:, live] = acc
                ended = [w for w in live if t == len(raws[w]) - 1]
                self.ret_acc[:, ended] = 0.0
            else:
                norm = raw
            for j, w in enumerate(live):
                out[w][t] = norm[:, j]
        return out

    def std(self) -> np.ndarray:
        """Per agent: what a raw reward is divided by (1 when rewards are not normalised)."""
        return np.sqrt(self.rms.var + 1e-8) if self.enabled else np.ones(len(self.rms.var))

    def state_dict(self, agents: list[str]) -> dict[str, Any]:
        return {"rnorm": {a: self.rms.state(i) for i, a in enumerate(agents)},
                "ret_acc": {a: torch.as_tensor(self.ret_acc[i]) for i, a in enumerate(agents)}}

    def load_state_dict(self, state: dict[str, Any], agents: list[str]) -> None:
        for i, a in enumerate(agents):
            self.rms.load(i, state["rnorm"][a])
            self.ret_acc[i] = state["ret_acc"][a].numpy().astype(np.float64)


# ---------------------------------------------------------------------- episodes
@dataclass
class EpisodeState:
    """One worker's current episode: enough to log it and to replay it on resume."""

    seed: int
    number: int  # this worker's episode counter (seeds derive from it)
    steps: int = 0
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per agent, raw
    delay_sum: float = 0.0
    delay_n: int = 0
    sim_time: float = 0.0
    actions: list[list[int]] = field(default_factory=list)  # per step, in agent order

    @property
    def mean_delay(self) -> float | None:
        return self.delay_sum / self.delay_n if self.delay_n else None


@dataclass
class Step:
    """What one decision step of all workers returned, in the learner's layout."""

    raw: np.ndarray  # [A, W] float32 rewards as the env gave them
    dones: np.ndarray  # [W] the episode ended
    truncs: np.ndarray  # [W] ... by the time limit (bootstrap with V)
    next_obs: list[Obs]  # per worker, the env's observations


class EpisodeBook:
    """Every worker's episode in progress, its current observations, and worker 0's trajectory."""

    def __init__(self, agents: list[str], n_workers: int, seed: int) -> None:
        self.agents, self.n_workers, self.seed = list(agents), n_workers, seed
        self.states: list[EpisodeState] = []
        self.obs: list[Obs] = []  # per worker, float32 vectors
        self.last_traj: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        """Worker 0's latest complete episode: (obs [T, d], actions [T]) per agent."""
        self._obs_hist: dict[str, list[np.ndarray]] = {a: [] for a in self.agents}
        self._act_hist: dict[str, list[int]] = {a: [] for a in self.agents}

    def start(self, pool: WorkerPool | None = None) -> None:
        """Every worker's first episode (a fresh run); lockstep (``pool``): reset the envs too."""
        self.states = [EpisodeState(seed=episode_seed(self.seed, w, 0), number=0)
                       for w in range(self.n_workers)]
        if pool is not None:
            self.obs = [self.reset(pool, w) for w in range(self.n_workers)]

    # ------------------------------------------------------------------ whole episodes
    def tasks(self) -> list["EpisodeTask"]:
        """Every worker's next episode, to be played by the rollout workers (one per worker)."""
        from leed_traffic.learn.workers import EpisodeTask

        return [EpisodeTask(worker=w, number=e.number, seed=e.seed,
                            sample_seed=action_seed(self.seed, w, e.number))
                for w, e in enumerate(self.states)]

    def finish(self, trajectories: list["Trajectory"]) -> list[EpisodeState]:
        """The workers' episodes came back complete: book them (worker 0's is the trajectory LEED's
        DTW compares), move every worker on to its next episode; returns the finished episodes."""
        done = []
        for w, tr in enumerate(trajectories):
            ep = self.states[w]
            assert (tr.seed, tr.number) == (ep.seed, ep.number), "a trajectory of another episode"
            ep.steps, ep.sim_time = tr.steps, tr.sim_time
            ep.returns = np.cumsum(tr.raw_rewards, axis=0, dtype=np.float64)[-1]  # as summed step by step
            if tr.delay is not None:
                ep.delay_sum, ep.delay_n = tr.delay, 1
            if w == 0:
                self.last_traj = {a: (tr.obs[:, i, : tr.obs_dims[i]].copy(), tr.actions[:, i].copy())
                                  for i, a in enumerate(self.agents)}
            self.states[w] = EpisodeState(seed=episode_seed(self.seed, w, ep.number + 1), number=ep.number + 1)
            done.append(ep)
        return done

    # ------------------------------------------------------------------ lockstep

    def reset(self, pool: WorkerPool, w: int) -> Obs:
        """Reset worker ``w`` with its episode's seed; returns the first observations."""
        ep = self.states[w]
        obs, _ = pool.reset(w, ep.seed)
        ep.returns = np.zeros(len(self.agents))
        if w == 0:
            self._obs_hist = {a: [] for a in self.agents}
            self._act_hist = {a: [] for a in self.agents}
        return self._vectors(obs)

    def padded(self, max_obs: int, obs: list[Obs] | None = None) -> np.ndarray:
        """Workers' per-agent observations -> [A, W, max_obs] float32, zero-padded."""
        obs = self.obs if obs is None else obs
        out = np.zeros((len(self.agents), len(obs), max_obs), np.float32)
        for w, o in enumerate(obs):
            for i, a in enumerate(self.agents):
                x = o[a]
                out[i, w, : x.shape[-1]] = x
        return out

    def record(self, results: list[StepResult], actions: list[list[int]], delta_time: float) -> Step:
        """Book one step of every worker (actions [W][A]); the observations are not advanced yet."""
        agents = self.agents
        W = len(results)
        raw = np.zeros((len(agents), W), np.float32)
        dones, truncs, next_obs = np.zeros(W, bool), np.zeros(W, bool), []
        for w, result in enumerate(results):
            ep = self.states[w]
            ep.steps += 1
            ep.actions.append(actions[w])
            if w == 0:
                for a, act in zip(agents, actions[0]):
                    self._obs_hist[a].append(self.obs[0][a])
                    self._act_hist[a].append(act)
            raw[:, w], dones[w], truncs[w], delay, ep.sim_time = step_outcome(agents, result, ep.steps,
                                                                              delta_time)
            ep.returns += raw[:, w]
            if delay is not None:
                ep.delay_sum, ep.delay_n = ep.delay_sum + delay, ep.delay_n + 1
            next_obs.append(result[0])
        return Step(raw, dones, truncs, next_obs)

    def advance(self, w: int, obs: Obs) -> None:
        """Worker ``w`` continues its episode from ``obs``."""
        self.obs[w] = self._vectors(obs)

    def next_episode(self, pool: WorkerPool, w: int) -> EpisodeState:
        """Worker ``w``'s episode ended: start its next one; returns the finished one."""
        ep = self.states[w]
        if w == 0:
            self.last_traj = {a: (np.stack(self._obs_hist[a]), np.asarray(self._act_hist[a]))
                              for a in self.agents}
        self.states[w] = EpisodeState(seed=episode_seed(self.seed, w, ep.number + 1), number=ep.number + 1)
        self.obs[w] = self.reset(pool, w)
        return ep

    def trajectory(self, agent: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Worker 0's latest complete trajectory of ``agent`` (obs, actions, False), or the
        episode so far (..., True) before the first one ended (``rollout_steps`` > 0)."""
        if self.last_traj is not None:
            return (*self.last_traj[agent], False)
        return np.stack(self._obs_hist[agent]), np.asarray(self._act_hist[agent]), True

    def _vectors(self, obs: Obs) -> Obs:
        return {a: np.asarray(obs[a], np.float32).reshape(-1) for a in self.agents}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        A = len(self.agents)
        return {
            "workers": [
                {"seed": e.seed, "number": e.number, "steps": e.steps,
                 "returns": dict(zip(self.agents, np.asarray(e.returns, float).tolist())),
                 "delay_sum": e.delay_sum, "delay_n": e.delay_n, "sim_time": e.sim_time,
                 "actions": torch.as_tensor(np.asarray(e.actions, np.int64).reshape(len(e.actions), A))}
                for e in self.states
            ],
            "last_traj": None if self.last_traj is None else {
                a: [torch.as_tensor(o), torch.as_tensor(x)] for a, (o, x) in self.last_traj.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any], pool: WorkerPool | None = None) -> None:
        """Put every environment back where it was: reset with the episode's seed, replay actions
        (lockstep, ``pool``). Whole-episode checkpoints fall between episodes: nothing to replay."""
        self.last_traj = None if state["last_traj"] is None else {
            a: (v[0].numpy(), v[1].numpy()) for a, v in state["last_traj"].items()}
        self.states, self.obs = [], []
        for w, ws in enumerate(state["workers"]):
            ep = EpisodeState(seed=int(ws["seed"]), number=int(ws["number"]))
            self.states.append(ep)
            if pool is None:
                if len(ws["actions"]):
                    raise ValueError("a checkpoint taken mid-episode cannot resume whole-episode rollouts")
                continue
            obs = self.reset(pool, w)
            for row in ws["actions"].tolist():
                act = dict(zip(self.agents, (int(x) for x in row)))
                if w == 0:
                    for a in self.agents:
                        self._obs_hist[a].append(obs[a])
                        self._act_hist[a].append(act[a])
                obs2, *_ = pool.workers[w].step(act)
                obs = self._vectors(obs2)
            ep.steps = int(ws["steps"])
            ep.returns = np.array([float(ws["returns"][a]) for a in self.agents])
            ep.delay_sum, ep.delay_n = float(ws["delay_sum"]), int(ws["delay_n"])
            ep.sim_time, ep.actions = float(ws["sim_time"]), ws["actions"].tolist()
            self.obs.append(obs)
