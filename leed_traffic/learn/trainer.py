"""The training loop: rollouts -> GAE -> DTW expert weights -> per-agent PPO(+expert) updates.

Read top to bottom, one update is:

1. ``collect``: every worker steps its environment with the current stochastic policies until the
   rollout is full (``rollout_steps`` decision steps, or one whole episode per worker); rewards are
   normalised per agent, truncations are bootstrapped, finished episodes are logged to
   ``metrics.csv`` and the worker is reset with a seed derived from (config.seed, worker, episode).
2. GAE per agent (``buffer.py``).
3. ``expert_weights``: per agent, DTW between the agent's latest trajectory (worker 0's latest
   complete episode) and its expert trajectories -> w_i (``expert_weight.py``), with the return
   decay and, for RELED, the per-demo mask and the neighbour-volatility factor.
4. ``optimize``: ``update_epochs`` x ``num_minibatches`` Adam steps per agent on
   L_i = L_PPO,i + w_i * L_E,i (IPPO/MAPPO: w = 0; BC: L_E only).
5. every ``checkpoint_interval`` updates an atomic checkpoint (``checkpoint.py``).

Exact resume: the checkpoint stores all RNG states and each worker's episode seed plus the actions
taken so far in its current episode; on resume each environment is reset with that seed and the
actions are replayed (SUMO is deterministic for a seed), so the next update is bit-identical to the
one the interrupted run would have made.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from leed_traffic.dataset import DemoDataset
from leed_traffic.learn import checkpoint as ckpt
from leed_traffic.learn.buffer import RolloutBuffer
from leed_traffic.learn.config import TrainConfig
from leed_traffic.learn.dtw import dtw_distances, subsample, trajectory_features
from leed_traffic.learn.expert_weight import (
    WeightInfo,
    discounted_returns,
    expert_weight,
    neighbour_volatility,
    reled_mask,
)
from leed_traffic.learn.loss import expert_loss, mixed_loss, ppo_loss
from leed_traffic.learn.policy import (AgentSpec, MultiAgentPolicy, PolicyController,
                                       clip_grad_norm_per_agent)
from leed_traffic.learn.rollout import EnvFactory, EnvSpec, WorkerPool

METRICS_FIELDS = (
    "episode", "update", "worker", "seed", "env_steps", "sim_time", "wall_time", "return",
    "mean_delay", "expert_weight",
)
UPDATE_FIELDS = (
    "update", "env_steps", "wall_time", "lr", "pg_loss", "v_loss", "entropy", "expert_loss",
    "approx_kl", "clipfrac", "expert_weight", "dtw_distance", "return_decay", "reled_kept",
    "steps_per_s", "sim_s_per_wall_s",
)
# Where the env's info may report the network delay; the first key found is used.
log = logging.getLogger(__name__)

DELAY_KEYS = ("mean_delay", "mean_trip_delay", "system_mean_delay", "delay", "system_mean_waiting_time",
              "mean_waiting_time")
SIM_TIME_KEYS = ("sim_time", "time", "step")


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


def episode_seed(seed: int, worker: int, number: int) -> int:
    """SUMO seed of a worker's n-th episode: reproducible and distinct per worker/episode."""
    return int(np.random.SeedSequence([seed, worker, number]).generate_state(1)[0] & 0x7FFFFFFF)


def _find(info: Any, keys: tuple[str, ...]) -> float | None:
    """First numeric value under one of ``keys`` in a flat or per-agent info dict."""
    if not isinstance(info, dict):
        return None
    for k in keys:
        if k in info and isinstance(info[k], (int, float, np.floating, np.integer)):
            return float(info[k])
    for v in info.values():
        if isinstance(v, dict):
            found = _find(v, keys)
            if found is not None:
                return found
    return None


@dataclass
class AgentDemoTensors:
    """One agent's demonstrations, ready for the DTW weight and the RELED mask."""

    obs: np.ndarray
    actions: np.ndarray
    returns_to_go: np.ndarray
    features: list[np.ndarray]  # per expert trajectory, DTW features
    per_step_return: float
    obs_mean: np.ndarray
    obs_std: np.ndarray


@dataclass
class DemoBatch:
    """All agents' demos padded into [A, N_max, ...] tensors for the batched expert loss."""

    obs: torch.Tensor  # [A, N, max_obs]
    actions: torch.Tensor  # [A, N]
    counts: torch.Tensor  # [A] real rows per agent (>= 1; agents without demos get w = 0)
    mask: torch.Tensor  # [A, N] RELED mask (ones unless RELED)


class Trainer:
    """One training run in one run directory (see module docstring for the loop)."""

    def __init__(
        self,
        city: str,
        config: TrainConfig,
        run_dir: Path,
        demos: DemoDataset | None,
        resume: bool,
        env_factory: Callable[[], Any] | None = None,
        env_options: dict[str, Any] | None = None,
    ):
        self.city, self.cfg, self.run_dir = city, config, Path(run_dir)
        self.resume = resume
        if config.uses_demos and demos is None:
            raise ValueError(
                f"algo {config.algo!r} needs demonstrations; generate them with `leed-traffic "
                "demos` (or train with --algo ippo/mappo, which need none)"
            )
        self.demos = demos if config.algo in ("leed", "bc") else None
        self.factory = env_factory or EnvFactory(city, dict(env_options or {}))
        self._check_run_dir()

    # ------------------------------------------------------------------ set-up
    def _check_run_dir(self) -> None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None and not self.resume:
            raise ckpt.CheckpointError(
                f"{self.run_dir} already holds a run (last checkpoint {latest.name}); pass "
                "resume=True (--resume) to continue it, or choose another run directory"
            )

    def _setup(self) -> None:
        cfg = self.cfg
        torch.set_num_threads(cfg.torch_threads)
        # all learner randomness (action sampling, minibatch permutations, demo sampling) is
        # torch's; episode seeds derive from cfg.seed via SeedSequence; python's is seeded too
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        self.pool = WorkerPool.make(self.factory, cfg.n_workers, cfg.start_method)
        self.spec: EnvSpec = self.pool.spec()
        self.agents = self.spec.agents
        self.W = len(self.pool)
        self.fingerprint = {
            "city": self.spec.city or self.city,
            "scenario_hash": self.spec.scenario_hash,
            "net_hash": self.spec.net_hash,
            "agents": list(self.agents),
            "obs_dims": dict(self.spec.obs_dims),
            "n_actions": dict(self.spec.n_actions),
            "env_config": dict(self.spec.env_config),
            "demos_hash": ckpt.demos_hash(self.demos),
            "config": cfg.fingerprint_dict(),
        }
        specs = [AgentSpec(a, self.spec.obs_dims[a], self.spec.n_actions[a]) for a in self.agents]
        self.policy = MultiAgentPolicy(
            specs, cfg.hidden_sizes, cfg.share_parameters, cfg.use_centralized_critic
        )
        # one Adam over the stacked per-agent parameters == one Adam per agent (element-wise)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.rnorm = RunningMeanStd(len(self.agents))
        self.ret_acc = np.zeros((len(self.agents), self.W))  # discounted returns (rnorm), [A, W]
        self.demo_batch: DemoBatch | None = None
        self.demo = self._prepare_demos()
        self.update_n = 0
        self.env_steps = 0
        self.episodes = 0
        self.metrics_rows = 0
        self.update_rows = 0
        self.wall_offset = 0.0
        self.last_weights: dict[str, WeightInfo] = {}
        # worker 0's latest complete episode and its current one: (obs, actions) per agent
        self.last_traj: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.cur_obs_hist: dict[str, list[np.ndarray]] = {a: [] for a in self.agents}
        self.cur_act_hist: dict[str, list[int]] = {a: [] for a in self.agents}
        self.last_info: dict[str, float] = {}

    def _prepare_demos(self) -> dict[str, AgentDemoTensors]:
        if self.demos is None:
            return {}
        cfg, out = self.cfg, {}
        if not any(len(d) for d in self.demos.agents.values()):
            # a weak demonstrator whose trajectories never beat fixed time leaves nothing to
            # imitate: that is a result, not an error (LEED then trains exactly as IPPO)
            log.warning("the demonstrations are empty (no intersection's demonstrations were kept: "
                        "none beat fixed time); training without imitation, i.e. as IPPO. Use a "
                        "stronger demonstrator (--llm claude, max-pressure) to give LEED something to learn from")
            return {}
        missing = [a for a in self.agents if a not in self.demos.agents]
        if missing and len(missing) == len(self.agents):
            raise ValueError(
                "the demonstrations share no agent with this environment (demos for "
                f"{sorted(self.demos.agents)[:5]}..., env agents {self.agents[:5]}...): they were "
                "generated for another network; regenerate them with `leed-traffic demos`"
            )
        for a in self.agents:
            if a not in self.demos.agents or len(self.demos.agents[a]) == 0:
                continue  # this agent learns without imitation (w = 0)
            d = self.demos.agents[a]
            if d.obs.shape[1] != self.spec.obs_dims[a]:
                raise ValueError(
                    f"demonstrations for {a} have observation size {d.obs.shape[1]}, the env has "
                    f"{self.spec.obs_dims[a]}: regenerate them for this scenario"
                )
            if d.actions.max() >= self.spec.n_actions[a] or d.actions.min() < 0:
                raise ValueError(f"demonstrations for {a} contain actions outside the action space")
            mean, std = d.obs.mean(0), d.obs.std(0) + 1e-6
            feats = [
                subsample(trajectory_features(cfg.dtw_features, tr.obs, tr.actions,
                                              self.spec.n_actions[a], mean, std), cfg.dtw_max_len)
                for tr in d.trajectories()
            ]
            out[a] = AgentDemoTensors(
                obs=np.asarray(d.obs, np.float32),
                actions=np.asarray(d.actions, np.int64),
                returns_to_go=discounted_returns(d.rewards, d.episode, cfg.gamma),
                features=feats,
                per_step_return=float(np.mean(d.rewards)),
                obs_mean=mean,
                obs_std=std,
            )
        if cfg.reled and cfg.use_centralized_critic:
            lengths = {len(self.demos.agents[a]) for a in self.agents if a in self.demos.agents}
            if missing or len(lengths) != 1:
                raise ValueError("RELED with a centralized critic needs time-aligned demos of all agents")
        A, P = len(self.agents), self.policy.max_obs
        N = max([len(dm.actions) for dm in out.values()] or [1])
        obs, acts = torch.zeros(A, N, P), torch.zeros(A, N, dtype=torch.int64)
        counts = torch.ones(A, dtype=torch.int64)
        for i, a in enumerate(self.agents):
            if a in out:
                n, dim = out[a].obs.shape
                obs[i, :n, :dim] = torch.as_tensor(out[a].obs)
                acts[i, :n] = torch.as_tensor(out[a].actions)
                counts[i] = n
        self.demo_batch = DemoBatch(obs, acts, counts, torch.ones(A, N))
        return out

    # ------------------------------------------------------------------ main loop
    def run(self) -> Path:
        self._setup()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            latest = ckpt.latest_checkpoint(self.run_dir) if self.resume else None
            if latest is not None:
                self._restore(ckpt.load_checkpoint(latest, self.fingerprint))
            else:
                self._start_fresh()
            self.t0 = time.time() - self.wall_offset
            with self._progress() as progress:
                self.progress = progress
                while self.env_steps < self.cfg.total_env_steps:
                    t_start, steps0, sim0 = time.time(), self.env_steps, self._sim_total
                    buf = self.collect()
                    self.update_n += 1
                    stats = self.optimize(buf)
                    dt = max(time.time() - t_start, 1e-9)
                    stats["steps_per_s"] = (self.env_steps - steps0) / dt
                    stats["sim_s_per_wall_s"] = (self._sim_total - sim0) / dt
                    self._log_update(stats)
                    done = self.env_steps >= self.cfg.total_env_steps
                    if done or self.update_n % self.cfg.checkpoint_interval == 0:
                        self.save()
            self._save_final_policy()
        finally:
            self.pool.close()
        return self.run_dir

    def _start_fresh(self) -> None:
        (self.run_dir / "config.json").write_text(
            json.dumps({"city": self.city, "config": self.cfg.to_dict(),
                        "env": self.spec.to_dict(), "fingerprint": self.fingerprint},
                       indent=2, sort_keys=True)
        )
        _write_csv_header(self.run_dir / "metrics.csv", METRICS_FIELDS)
        _write_csv_header(self.run_dir / "updates.csv", UPDATE_FIELDS)
        self._sim_total = 0.0
        self.eps = [EpisodeState(seed=episode_seed(self.cfg.seed, w, 0), number=0)
                    for w in range(self.W)]
        self.obs = [self._reset_worker(w) for w in range(self.W)]
        self._pretrain()

    def _pretrain(self) -> None:
        """Behaviour-cloning warm start on the demonstrations (``bc_pretrain_steps``).

        Runs once, before the first rollout of a fresh run (a resumed run restores its result
        from the checkpoint). Agents without demonstrations are left untouched. Writes
        ``pretrain.json`` (expert loss and action agreement before and after).
        """
        cfg = self.cfg
        if cfg.algo not in ("leed", "bc") or not self.demo or cfg.bc_pretrain_steps <= 0:
            return
        db = self.demo_batch
        A = len(self.agents)
        has = torch.tensor([a in self.demo for a in self.agents], dtype=torch.float32)
        rows = torch.arange(db.obs.shape[1])[None, :] < db.counts[:, None]

        def agreement() -> tuple[float, float]:
            with torch.no_grad():
                logits = self.policy.logits(db.obs)
                le = expert_loss(logits, db.actions, rows.float()) * db.obs.shape[1] / db.counts
                hit = ((logits.argmax(-1) == db.actions) & rows).float().sum(1) / db.counts
            keep = has > 0
            return float(le[keep].mean()), float(hit[keep].mean())

        before = agreement()
        opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.bc_pretrain_lr, eps=1e-5)
        for _ in range(cfg.bc_pretrain_steps):
            j = (torch.rand(A, cfg.bc_pretrain_batch) * db.counts[:, None]).long()
            le = expert_loss(
                self.policy.logits(db.obs.gather(1, j[..., None].expand(-1, -1, db.obs.shape[-1]))),
                db.actions.gather(1, j),
            )
            opt.zero_grad()
            (le * has).sum().backward()
            clip_grad_norm_per_agent(self.policy, cfg.max_grad_norm)
            opt.step()
        after = agreement()
        (self.run_dir / "pretrain.json").write_text(json.dumps({
            "steps": cfg.bc_pretrain_steps, "agents": int(has.sum()),
            "expert_loss": {"before": before[0], "after": after[0]},
            "action_agreement": {"before": before[1], "after": after[1]},
        }, indent=2))
        log.info("BC warm start: expert loss %.3f -> %.3f, agreement %.2f -> %.2f",
                 before[0], after[0], before[1], after[1])

    def _reset_worker(self, w: int) -> dict[str, np.ndarray]:
        ep = self.eps[w]
        obs, _ = self.pool.reset(w, ep.seed)
        ep.returns = np.zeros(len(self.agents))
        if w == 0:
            self.cur_obs_hist = {a: [] for a in self.agents}
            self.cur_act_hist = {a: [] for a in self.agents}
        return {a: np.asarray(obs[a], np.float32).reshape(-1) for a in self.agents}

    # ------------------------------------------------------------------ 1. rollouts
    def collect(self) -> RolloutBuffer:
        """Step every worker with the batched policy until the rollout is complete.

        Per decision step the Python work is O(agents) list building and a few [A, W] array
        operations; the policy runs once for all agents and workers (see policy.act_padded).
        """
        cfg, W, agents = self.cfg, self.W, self.agents
        A = len(agents)
        buf = RolloutBuffer(agents, self.policy.obs_dims)
        finished = np.zeros(W, bool)
        while True:
            obs_p = self._padded_obs()
            actions, logps, values = self.policy.act_padded(torch.from_numpy(obs_p))
            act_lists = actions.T.tolist()  # [W][A]
            acts = [dict(zip(agents, row)) for row in act_lists]
            results = self.pool.step(acts)

            raw = np.zeros((A, W), np.float32)
            dones, truncs, next_obs = np.zeros(W, bool), np.zeros(W, bool), []
            for w, (obs2, rew, term, trunc, info) in enumerate(results):
                ep = self.eps[w]
                ep.steps += 1
                ep.actions.append(act_lists[w])
                if w == 0:
                    for a, act in zip(agents, act_lists[0]):
                        self.cur_obs_hist[a].append(self.obs[0][a])
                        self.cur_act_hist[a].append(act)
                raw[:, w] = [rew.get(a, 0.0) for a in agents]
                ep.returns += raw[:, w]
                ended = [bool(term.get(a, False) or trunc.get(a, False)) for a in agents]
                dones[w] = all(ended) or not obs2
                truncs[w] = dones[w] and not any(bool(term.get(a, False)) for a in agents)
                if dones[w]:  # the env reports its running trip statistics at the episode's end
                    delay = _find(info, DELAY_KEYS)
                    if delay is not None:
                        ep.delay_sum, ep.delay_n = ep.delay_sum + delay, ep.delay_n + 1
                if self.spec.delta_time > 0:
                    ep.sim_time = ep.steps * self.spec.delta_time
                else:
                    t = _find(info, SIM_TIME_KEYS)
                    ep.sim_time = t if t is not None else float(ep.steps)
                next_obs.append(obs2)

            # per-agent reward normalisation (running std of the discounted return), all agents
            if cfg.normalize_rewards:
                self.ret_acc = self.ret_acc * cfg.gamma + raw
                self.rnorm.update(self.ret_acc)
                norm = raw / np.sqrt(self.rnorm.var + 1e-8)[:, None]
                self.ret_acc[:, dones] = 0.0
            else:
                norm = raw.copy()
            norm = norm.astype(np.float32)
            # time-limit truncation: bootstrap with V(final observation)
            boot = [w for w in range(W) if truncs[w] and all(a in next_obs[w] for a in agents)]
            if boot:
                fin = self._padded_obs([{a: next_obs[w][a] for a in agents} for w in boot])
                _, _, v_fin = self.policy.act_padded(torch.from_numpy(fin))
                norm[:, boot] += cfg.gamma * v_fin
            buf.add(obs=obs_p, actions=actions, logprobs=logps, values=values, rewards=norm,
                    raw_rewards=raw, dones=dones.copy())
            self.env_steps += W
            self._sim_total += W * (self.spec.delta_time or 1.0)

            for w in range(W):
                if dones[w]:
                    self._end_episode(w)
                    finished[w] = True
                    self.obs[w] = self._reset_worker(w)
                else:
                    self.obs[w] = {a: np.asarray(next_obs[w][a], np.float32).reshape(-1) for a in agents}
            self.progress.advance(self.task, W)
            if cfg.rollout_steps > 0 and len(buf) >= cfg.rollout_steps:
                break
            if cfg.rollout_steps == 0 and finished.all():
                break
        # bootstrap the rollout's end from the current observations
        _, _, next_v = self.policy.act_padded(torch.from_numpy(self._padded_obs()))
        buf.finish(next_v, cfg.gamma, cfg.gae_lambda)
        return buf

    def _padded_obs(self, obs: list[dict[str, np.ndarray]] | None = None) -> np.ndarray:
        """Workers' per-agent observations -> [A, W, max_obs] float32, zero-padded."""
        obs = self.obs if obs is None else obs
        out = np.zeros((len(self.agents), len(obs), self.policy.max_obs), np.float32)
        for w, o in enumerate(obs):
            for i, a in enumerate(self.agents):
                x = o[a]
                out[i, w, : x.shape[-1]] = x
        return out

    def _end_episode(self, w: int) -> None:
        ep = self.eps[w]
        self.episodes += 1
        w_mean = (float(np.mean([i.weight for i in self.last_weights.values()]))
                  if self.last_weights else 0.0)
        row = {
            "episode": self.episodes, "update": self.update_n + 1, "worker": w, "seed": ep.seed,
            "env_steps": self.env_steps, "sim_time": round(ep.sim_time, 3),
            "wall_time": round(time.time() - self.t0, 3),
            "return": round(float(np.sum(ep.returns)), 6),
            "mean_delay": round(ep.delay_sum / ep.delay_n, 6) if ep.delay_n else "",
            "expert_weight": round(w_mean, 6),
        }
        _append_csv(self.run_dir / "metrics.csv", METRICS_FIELDS, row)
        self.metrics_rows += 1
        self.last_info = {"episode": self.episodes, "sim_time": ep.sim_time,
                          "return": row["return"], "delay": ep.delay_sum / max(ep.delay_n, 1),
                          "w": w_mean}
        self.progress.update(self.task, description=self._describe())
        if w == 0:
            self.last_traj = {a: (np.stack(self.cur_obs_hist[a]), np.asarray(self.cur_act_hist[a]))
                              for a in self.agents}
        self.eps[w] = EpisodeState(seed=episode_seed(self.cfg.seed, w, ep.number + 1),
                                   number=ep.number + 1)

    # ------------------------------------------------------------------ 3. expert weights
    def expert_weights(self, buf: RolloutBuffer) -> dict[str, WeightInfo]:
        cfg = self.cfg
        if cfg.algo in ("ippo", "mappo"):
            return {a: WeightInfo(0.0) for a in self.agents}
        if cfg.algo == "bc":
            return {a: WeightInfo(1.0 if a in self.demo else 0.0) for a in self.agents}
        vol: dict[str, float] = {}
        if cfg.reled:
            neighbours = self.spec.neighbours or {a: [b for b in self.agents if b != a]
                                                  for a in self.agents}
            vol = neighbour_volatility({a: buf.data[a].raw_rewards.reshape(-1)
                                        for a in self.agents}, neighbours)
            self._refresh_reled_masks()
        # one batched DTW call for every (agent, expert trajectory) pair: see dtw.dtw_distances
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        owner: list[str] = []
        for a in self.agents:
            if a not in self.demo:
                continue
            dm = self.demo[a]
            if self.last_traj is not None:
                obs, acts, partial = *self.last_traj[a], False
            else:
                obs, acts, partial = (np.stack(self.cur_obs_hist[a]),
                                      np.asarray(self.cur_act_hist[a]), True)
            feats = trajectory_features(cfg.dtw_features, obs, acts, self.spec.n_actions[a],
                                        dm.obs_mean, dm.obs_std)
            feats = subsample(feats, cfg.dtw_max_len)
            for ef in dm.features:
                pairs.append((feats, ef[: len(feats)] if partial else ef))
                owner.append(a)
        dists: dict[str, float] = {}
        for a, d in zip(owner, dtw_distances(pairs, cfg.dtw_band) if pairs else []):
            dists[a] = min(dists.get(a, np.inf), float(d))
        out = {}
        for a in self.agents:
            if a not in self.demo:
                out[a] = WeightInfo(0.0)
                continue
            dm = self.demo[a]
            out[a] = expert_weight(
                cfg.expert_weight_mode, dists[a], w0=cfg.expert_weight_init, tau=cfg.expert_tau,
                env_steps=self.env_steps, anneal_steps=cfg.expert_anneal_steps,
                agent_return=float(buf.data[a].raw_rewards.mean()) if cfg.expert_return_decay
                else None,
                expert_return=dm.per_step_return if cfg.expert_return_decay else None,
                beta=cfg.expert_return_beta,
                relative_volatility=vol.get(a) if cfg.reled else None,
                kappa=cfg.reled_volatility_coef,
            )
        return out

    @torch.no_grad()
    def _refresh_reled_masks(self) -> None:
        """RELED: keep demo states where the expert's return-to-go beats V_i (same units)."""
        db = self.demo_batch
        values = self.policy.value(self.policy.critic_input(db.obs)).numpy()  # [A, N]
        for i, a in enumerate(self.agents):
            if a not in self.demo:
                continue
            dm, n = self.demo[a], int(db.counts[i])
            scale = np.sqrt(self.rnorm.var[i] + 1e-8) if self.cfg.normalize_rewards else 1.0
            db.mask[i, :n] = torch.as_tensor(reled_mask(dm.returns_to_go / scale, values[i, :n]))

    # ------------------------------------------------------------------ 4. optimisation
    def optimize(self, buf: RolloutBuffer) -> dict[str, float]:
        """update_epochs x num_minibatches Adam steps on sum_i L_i, all agents in one batch.

        The agents' parameters are disjoint, so the gradient of the sum is each agent's own
        gradient; gradient norms are clipped per agent.
        """
        cfg = self.cfg
        weights = self.expert_weights(buf)
        self.last_weights = weights
        lr = cfg.learning_rate
        if cfg.anneal_lr:
            lr = cfg.learning_rate * max(0.0, 1.0 - (self.env_steps - len(buf) * self.W)
                                         / cfg.total_env_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        A = len(self.agents)
        B = len(buf) * self.W
        obs = torch.from_numpy(buf.stacked["obs"])  # [A, B, P], padded
        stack = {k: torch.from_numpy(buf.stacked[k])
                 for k in ("actions", "logprobs", "values", "advantages", "returns")}
        critic_in = self.policy.critic_input(obs)  # [A, B, C]
        w = torch.tensor([weights[a].weight for a in self.agents], dtype=torch.float32)
        imitate = cfg.algo == "bc" or bool((w > 0).any())
        db = self.demo_batch if self.demo else None
        mb = max(1, B // cfg.num_minibatches)
        eb = cfg.expert_batch_size or mb
        logs: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy",
                                                         "expert_loss", "approx_kl", "clipfrac")}
        for _epoch in range(cfg.update_epochs):
            perm = torch.argsort(torch.rand(A, B), dim=1)  # an independent permutation per agent
            for start in range(0, B, mb):
                idx = perm[:, start:start + mb]
                loss = torch.zeros(A)
                if cfg.algo != "bc":
                    o = obs.gather(1, idx[..., None].expand(-1, -1, obs.shape[-1]))
                    c = critic_in.gather(1, idx[..., None].expand(-1, -1, critic_in.shape[-1]))
                    pick = {k: v.gather(1, idx) for k, v in stack.items()}
                    dist = self.policy.dist(o)
                    terms = ppo_loss(
                        dist.log_prob(pick["actions"]), pick["logprobs"], pick["advantages"],
                        self.policy.value(c), pick["values"], pick["returns"], dist.entropy(),
                        clip_coef=cfg.clip_coef, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                        clip_vloss=cfg.clip_vloss, norm_adv=cfg.norm_adv,
                    )
                    loss = terms.loss
                    for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac"):
                        logs[k].append(float(getattr(terms, k).detach().mean()))
                if imitate and db is not None:
                    j = (torch.rand(A, eb) * db.counts[:, None]).long()  # per-agent demo rows
                    le = expert_loss(
                        self.policy.logits(db.obs.gather(1, j[..., None].expand(-1, -1, db.obs.shape[-1]))),
                        db.actions.gather(1, j),
                        db.mask.gather(1, j) if cfg.reled else None,
                    )
                    has = w > 0
                    logs["expert_loss"].append(float(le.detach()[has].mean()) if has.any() else 0.0)
                    loss = w * le if cfg.algo == "bc" else mixed_loss(loss, le, w)
                self.optimizer.zero_grad()
                loss.sum().backward()
                clip_grad_norm_per_agent(self.policy, cfg.max_grad_norm)
                self.optimizer.step()
        stats = {k: float(np.mean(v)) if v else float("nan") for k, v in logs.items()}
        ws = [i for a, i in weights.items() if a in self.demo] or list(weights.values())
        dists = [i.distance for i in ws if np.isfinite(i.distance)]
        stats.update(
            lr=lr,
            expert_weight=float(np.mean([i.weight for i in weights.values()])),
            dtw_distance=float(np.mean(dists)) if dists else float("nan"),
            return_decay=float(np.mean([i.decay for i in ws])),
            reled_kept=float(np.mean([float(db.mask[i, :int(db.counts[i])].mean())
                                      for i, a in enumerate(self.agents) if a in self.demo]))
            if cfg.reled and self.demo else float("nan"),
        )
        return stats

    # ------------------------------------------------------------------ logging
    def _describe(self) -> str:
        i = self.last_info
        if not i:
            return f"{self.cfg.algo} {self.city}"
        return (f"{self.cfg.algo} {self.city} | ep {i['episode']} | sim {i['sim_time']:.0f}s | "
                f"return {i['return']:.1f} | delay {i['delay']:.1f}s | w {i['w']:.3f}")

    def _progress(self) -> Any:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), disable=not self.cfg.progress, transient=False)
        self.task = p.add_task(self._describe(), total=self.cfg.total_env_steps,
                               completed=self.env_steps)
        return p

    def _log_update(self, stats: dict[str, float]) -> None:
        row = {"update": self.update_n, "env_steps": self.env_steps,
               "wall_time": round(time.time() - self.t0, 3), **stats}
        _append_csv(self.run_dir / "updates.csv", UPDATE_FIELDS, row)
        self.update_rows += 1

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        state = {
            "format": ckpt.CHECKPOINT_FORMAT,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
            "update": self.update_n,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "sim_total": self._sim_total,
            "metrics_rows": self.metrics_rows,
            "update_rows": self.update_rows,
            "wall_time": time.time() - self.t0,
            "policy": self.policy.state_dict(),
            "optimizers": [self.optimizer.state_dict()],
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
            },
            "rnorm": {a: self.rnorm.state(i) for i, a in enumerate(self.agents)},
            "ret_acc": {a: torch.as_tensor(self.ret_acc[i]) for i, a in enumerate(self.agents)},
            "workers": [
                {"seed": e.seed, "number": e.number, "steps": e.steps,
                 "returns": dict(zip(self.agents, np.asarray(e.returns, float).tolist())),
                 "delay_sum": e.delay_sum, "delay_n": e.delay_n, "sim_time": e.sim_time,
                 "actions": torch.as_tensor(np.asarray(e.actions, np.int64).reshape(
                     len(e.actions), len(self.agents)))}
                for e in self.eps
            ],
            "last_traj": None if self.last_traj is None else {
                a: [torch.as_tensor(o), torch.as_tensor(x)] for a, (o, x) in self.last_traj.items()
            },
            "last_weights": {a: [i.weight, i.distance, i.base, i.decay, i.volatility]
                             for a, i in self.last_weights.items()},
        }
        return ckpt.save_checkpoint(_plain(state), ckpt.checkpoint_path(self.run_dir, self.update_n))

    def _restore(self, s: dict[str, Any]) -> None:
        self.update_n, self.env_steps, self.episodes = s["update"], s["env_steps"], s["episodes"]
        self._sim_total = float(s["sim_total"])
        self.metrics_rows, self.update_rows = s["metrics_rows"], s["update_rows"]
        self.wall_offset = float(s["wall_time"])
        self.policy.load_state_dict(s["policy"])
        self.optimizer.load_state_dict(s["optimizers"][0])
        rs = s["rng"]
        random.setstate(_to_tuple(rs["python"]))
        torch.set_rng_state(rs["torch"])
        for i, a in enumerate(self.agents):
            self.rnorm.load(i, s["rnorm"][a])
            self.ret_acc[i] = s["ret_acc"][a].numpy().astype(np.float64)
        self.last_traj = None if s["last_traj"] is None else {
            a: (v[0].numpy(), v[1].numpy()) for a, v in s["last_traj"].items()}
        self.last_weights = {a: WeightInfo(*v) for a, v in s["last_weights"].items()}
        _truncate_csv(self.run_dir / "metrics.csv", METRICS_FIELDS, self.metrics_rows)
        _truncate_csv(self.run_dir / "updates.csv", UPDATE_FIELDS, self.update_rows)
        # put every environment back where it was: reset with the episode's seed, replay actions
        self.eps, self.obs = [], []
        for w, ws in enumerate(s["workers"]):
            ep = EpisodeState(seed=int(ws["seed"]), number=int(ws["number"]))
            self.eps.append(ep)
            obs = self._reset_worker(w)
            for row in ws["actions"].tolist():
                act = dict(zip(self.agents, (int(x) for x in row)))
                if w == 0:
                    for a in self.agents:
                        self.cur_obs_hist[a].append(obs[a])
                        self.cur_act_hist[a].append(act[a])
                obs2, *_ = self.pool.workers[w].step(act)
                obs = {a: np.asarray(obs2[a], np.float32).reshape(-1) for a in self.agents}
            ep.steps = int(ws["steps"])
            ep.returns = np.array([float(ws["returns"][a]) for a in self.agents])
            ep.delay_sum, ep.delay_n = float(ws["delay_sum"]), int(ws["delay_n"])
            ep.sim_time, ep.actions = float(ws["sim_time"]), ws["actions"].tolist()
            self.obs.append(obs)

    def _save_final_policy(self) -> None:
        state = {"format": ckpt.CHECKPOINT_FORMAT,
                 "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
                 "spec": json.dumps(self.spec.to_dict()),
                 "config": json.dumps(self.cfg.to_dict()),
                 "policy": self.policy.state_dict(), "update": self.update_n,
                 "env_steps": self.env_steps}
        path = self.run_dir / "policy.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        tmp.replace(path)


# ---------------------------------------------------------------------- public API
def train(
    city: str,
    config: TrainConfig,
    run_dir: Path,
    demos: DemoDataset | None = None,
    resume: bool = False,
    *,
    env_options: dict[str, Any] | None = None,
    env_factory: Callable[[], Any] | None = None,
) -> Path:
    """Train ``config.algo`` on ``city``; everything goes to ``run_dir``; returns ``run_dir``.

    ``env_options`` are passed to ``leed_traffic.env.make_env(city, **env_options)`` in every
    worker (e.g. ``seconds=``, ``delta_time=``); ``env_factory`` replaces that factory entirely
    (must be picklable when ``n_workers > 1``). ``resume=True`` continues from the last checkpoint
    in ``run_dir`` (refusing one from another city/network/config, or a corrupt one).
    """
    return Trainer(city, config, Path(run_dir), demos, resume, env_factory, env_options).run()


def load_policies(run_dir: Path) -> PolicyController:
    """The trained policies of a run as a deterministic controller (``act(obs) -> {agent: phase}``).

    Uses ``policy.pt`` (written at the end of training) or else the latest checkpoint, so an
    interrupted run can be evaluated too.
    """
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text()) if (
        run_dir / "config.json").exists() else None
    final = run_dir / "policy.pt"
    if final.exists():
        try:
            s = torch.load(final, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ckpt.CheckpointCorrupt(f"{final} is corrupt or unreadable ({e})") from e
        spec = EnvSpec.from_dict(json.loads(s["spec"]))
        cfg = TrainConfig.from_dict(json.loads(s["config"]))
    else:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None or meta is None:
            raise FileNotFoundError(f"{run_dir} holds no trained policy (no policy.pt or checkpoint)")
        s = ckpt.load_checkpoint(latest)
        spec = EnvSpec.from_dict(meta["env"])
        cfg = TrainConfig.from_dict(meta["config"])
    specs = [AgentSpec(a, spec.obs_dims[a], spec.n_actions[a]) for a in spec.agents]
    policy = MultiAgentPolicy(specs, cfg.hidden_sizes, cfg.share_parameters,
                              cfg.use_centralized_critic)
    policy.load_state_dict(s["policy"])
    return PolicyController(policy, {"city": spec.city, "algo": cfg.algo, "update": s["update"],
                                     "env_steps": s["env_steps"], "scenario_hash": spec.scenario_hash})


# ---------------------------------------------------------------------- csv helpers
def _write_csv_header(path: Path, fields: tuple[str, ...]) -> None:
    with path.open("w", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writeheader()


def _append_csv(path: Path, fields: tuple[str, ...], row: dict[str, Any]) -> None:
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(row)


def _truncate_csv(path: Path, fields: tuple[str, ...], rows: int) -> None:
    """Drop rows written after the checkpoint (they will be produced again on resume)."""
    if not path.exists():
        _write_csv_header(path, fields)
        return
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    with path.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(fields)
        wr.writerows(lines[1 : 1 + rows])


def _plain(x: Any) -> Any:
    """numpy scalars -> Python numbers, recursively (weights_only loading accepts no numpy)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    return x


def _to_tuple(x: Any) -> Any:
    """random.setstate needs tuples (a checkpoint round trip may give lists)."""
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
