"""The training loop: rollouts -> GAE -> expert weights -> per-agent PPO(+expert) updates.

Read top to bottom, one update is:

1. ``collect``: the rollout workers (``workers.py``: in this process, in local processes or on
   Ray) get the current weights and each plays one whole episode with its seeds derived from
   (config.seed, worker, episode); back come complete trajectories. Rewards are normalised per
   agent, truncations are bootstrapped, finished episodes are logged to ``metrics.csv``.
   (``rollout_steps`` > 0: ``collect_lockstep`` steps every environment from here instead, until
   ``rollout_steps`` decision steps per worker; episodes then span updates.)
2. GAE per agent (``buffer.py``).
3. ``optimize``: the algorithm (``algos.py``: ippo, mappo, bc, leed, reled) sets each agent's
   expert weight w_i (LEED: DTW between worker 0's latest episode and the expert's trajectories,
   with the return decay; RELED: also its per-demo mask and neighbour-volatility factor), then
   ``update_epochs`` x ``num_minibatches`` Adam steps per agent on L_i = L_PPO,i + w_i * L_E,i
   (IPPO/MAPPO: w = 0; BC: L_E only).
4. every ``checkpoint_interval`` updates an atomic checkpoint (``checkpoint.py``).

Around the loop: ``demo_batch.py`` (the demonstrations as tensors, the behaviour-cloning warm
start), ``episodes.py`` (per-worker episodes, reward normalisation), ``runlog.py`` (the CSV logs
and the progress bar), and the run directory (``leed_traffic.rundir.RunDir``) for every file.

Exact resume: the checkpoint stores all RNG states and each worker's next episode (its number,
hence its SUMO and action-sampling seeds); with whole-episode rollouts checkpoints fall between
episodes, so the next update is bit-identical to the one the interrupted run would have made. In
lockstep mode the checkpoint also holds the actions taken so far in each worker's current episode;
on resume each environment is reset with its seed and the actions are replayed (SUMO is
deterministic for a seed).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from leed_traffic.dataset import DemoDataset
from leed_traffic.errors import UserError
from leed_traffic.learn import checkpoint as ckpt
from leed_traffic.learn.algos import UpdateInputs, get_algorithm
from leed_traffic.learn.buffer import RolloutBuffer
from leed_traffic.learn.config import TrainConfig
from leed_traffic.learn.demo_batch import Demonstrations, warm_start
from leed_traffic.learn.episodes import EpisodeBook, EpisodeState, RewardNormalizer
from leed_traffic.learn.expert_weight import WeightInfo
from leed_traffic.learn.loss import expert_loss, ppo_loss
from leed_traffic.learn.policy import build_policy, clip_grad_norm_per_agent
from leed_traffic.learn.rollout import EnvSpec, WorkerPool
from leed_traffic.learn.runlog import TrainLog, mean_weight, weight_columns
from leed_traffic.learn.workers import Trajectory, make_backend, resolve_backend
from leed_traffic.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run did (the pipeline records ``spec`` and ``fingerprint`` in config.json)."""

    run: RunDir
    spec: EnvSpec
    fingerprint: dict[str, Any]
    env_steps: int
    updates: int
    episodes: int
    wall_s: float
    """Training wall time, summed over the interrupted runs this one resumed."""


def train(config: TrainConfig, run: RunDir | str | Path, env_factory: Callable[[], Any],
          demos: DemoDataset | None = None, resume: bool = False) -> TrainResult:
    """Train ``config.algo`` on the environments ``env_factory`` builds; every file goes to ``run``.

    ``env_factory`` (e.g. ``rollout.EnvFactory(scenario, options)``) must be picklable for the
    ``process`` and ``ray`` backends (``config.backend``). ``resume=True`` continues from the run's
    last checkpoint (refusing one of another city/network/config, or a corrupt one); without it a
    run that has checkpoints is refused.
    """
    return Trainer(config, run, env_factory, demos, resume).run()


class Trainer:
    """One training run in one run directory (see the module docstring for the loop)."""

    def __init__(self, config: TrainConfig, run: RunDir | str | Path, env_factory: Callable[[], Any],
                 demos: DemoDataset | None = None, resume: bool = False):
        self.cfg, self.factory, self.resume = config, env_factory, resume
        self.run_dir = run if isinstance(run, RunDir) else RunDir(Path(run))
        self.algo = get_algorithm(config.algo)
        if self.algo.uses_demos and demos is None:
            raise ValueError(
                f"algo {config.algo!r} needs demonstrations; generate them with `leed-traffic "
                "demos` (or train with --algo ippo/mappo, which need none)"
            )
        self.dataset = demos if self.algo.uses_demos else None
        latest = self.run_dir.latest_checkpoint()
        if latest is not None and not resume:
            raise ckpt.CheckpointError(
                f"{self.run_dir.path} already holds a run (last checkpoint {latest.name}); pass "
                "resume=True (--resume) to continue it, or choose another run directory"
            )

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.cfg
        torch.set_num_threads(cfg.torch_threads)
        # all learner randomness (action sampling, minibatch permutations, demo sampling) is
        # torch's; episode seeds derive from cfg.seed via SeedSequence; python's is seeded too
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)

        # whole episodes: workers that own them (any backend); rollout_steps > 0: envs stepped from here
        self.lockstep = cfg.rollout_steps > 0
        if self.lockstep:
            if resolve_backend(cfg.backend, cfg.n_workers) == "ray":
                raise UserError("the ray backend plays whole episodes: set train.rollout_steps = 0 "
                                "(the default) or use --backend process.")
            self.pool: Any = WorkerPool.make(self.factory, cfg.n_workers, cfg.start_method)
        else:
            self.pool = make_backend(self.factory, cfg)
        self.spec: EnvSpec = self.pool.spec()
        self.agents = self.spec.agents
        self.W = cfg.n_workers
        self.city = self.spec.city or str(getattr(self.factory, "name", "") or "")
        self.fingerprint = ckpt.fingerprint(self.spec, cfg, self.dataset, self.city)
        self.policy = build_policy(self.spec, cfg)
        # one Adam over the stacked per-agent parameters == one Adam per agent (element-wise)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.rewards = RewardNormalizer(len(self.agents), self.W, cfg.gamma, cfg.normalize_rewards)
        self.demos = Demonstrations.prepare(self.dataset, self.spec, self.policy.max_obs, cfg,
                                            aligned=self.algo.masks_demos and cfg.use_centralized_critic)
        self.episodes = EpisodeBook(self.agents, self.W, cfg.seed)
        self.log = TrainLog(self.run_dir, f"{cfg.algo} {self.city}", cfg.progress)
        self.update = self.env_steps = self.n_episodes = 0
        self.sim_total = 0.0
        self._warm_pending = False  # a measured warm start waits for the first update
        self.last_weights: dict[str, WeightInfo] = {}

    # ------------------------------------------------------------------ main loop
    def run(self) -> TrainResult:
        cfg = self.cfg
        self._setup()
        try:
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
            latest = self.run_dir.latest_checkpoint() if self.resume else None
            if latest is not None:
                self._restore(ckpt.load_checkpoint(latest, self.fingerprint))
            else:
                self._start_fresh()
            self.log.start_clock()
            with self.log.progress(cfg.total_env_steps, self.env_steps):
                while self.env_steps < cfg.total_env_steps:
                    t_start, steps0, sim0 = time.time(), self.env_steps, self.sim_total
                    buf = self.collect()
                    t_opt = time.time()
                    self.update += 1
                    stats = self.optimize(buf)
                    if self._warm_pending:
                        self._measured_warm_start()
                    dt = max(time.time() - t_start, 1e-9)
                    stats["collect_s"], stats["optimize_s"] = t_opt - t_start, time.time() - t_opt
                    stats["steps_per_s"] = (self.env_steps - steps0) / dt
                    stats["sim_s_per_wall_s"] = (self.sim_total - sim0) / dt
                    self.log.update(self.update, self.env_steps, stats)
                    done = self.env_steps >= cfg.total_env_steps
                    if done or self.update % cfg.checkpoint_interval == 0:
                        self.save()
            self.save_policy()
        finally:
            self.pool.close()
        return TrainResult(self.run_dir, self.spec, self.fingerprint, self.env_steps, self.update,
                           self.n_episodes, self.log.elapsed())

    def _start_fresh(self) -> None:
        self.log.start()
        self.episodes.start(self.pool if self.lockstep else None)
        if self.demos is not None and self.cfg.bc_pretrain_steps > 0:
            if self.demos.defers_warm_start:
                self._warm_pending = True  # decided after the first update (_measured_warm_start)
            else:
                self.run_dir.write_pretrain(warm_start(self.policy, self.demos, self.cfg))

    def _measured_warm_start(self) -> None:
        """The warm start under ``measured`` trust, after the first update: clone the
        demonstrations only if their honest delay is ``bc_pretrain_margin`` below the fresh
        policy's own first episodes; ``pretrain.json`` says what was compared."""
        demos, cfg = self.demos, self.cfg
        self._warm_pending = False
        own = float(np.mean(demos.agent_delays)) if demos.agent_delays else None
        clone = own is None or demos.demo_delay < own * (1.0 - cfg.bc_pretrain_margin)
        if not clone:
            for dm in demos.per_agent.values():
                dm.warm, dm.warm_reason = False, (f"the demonstrations ({demos.demo_delay:.1f} s) are not "
                                                  f"{cfg.bc_pretrain_margin:.0%} better than the fresh policy "
                                                  f"({own:.1f} s)")
            log.info("BC warm start skipped: the demonstrations' delay %.1f s is not %.0f%% below the fresh "
                     "policy's %.1f s", demos.demo_delay, 100 * cfg.bc_pretrain_margin, own)
        info = warm_start(self.policy, demos, cfg)
        info["measured"] = {"demonstrations_delay": demos.demo_delay, "fresh_policy_delay": own,
                            "margin": cfg.bc_pretrain_margin, "cloned": bool(clone),
                            "after_update": self.update}
        self.run_dir.write_pretrain(info)

    # ------------------------------------------------------------------ 1. rollouts
    def collect(self) -> RolloutBuffer:
        """One whole episode per worker, played by the workers with the current weights.

        Only finished trajectories cross to the learner (no per-step round trip), so the workers
        may live in other processes or on other machines; everything that depends on several
        workers (reward normalisation, the buffer's layout) is done here, in worker order, so the
        update does not depend on which worker finished first."""
        if self.lockstep:
            return self.collect_lockstep()
        cfg = self.cfg
        trajs = self.pool.run(self.policy.state_dict(), self.episodes.tasks())
        # per-agent reward normalisation, replayed step by step across the workers' episodes
        rewards = self.rewards.episodes([t.raw_rewards for t in trajs])
        # time-limit truncation: bootstrap with V(final observation), as the worker computed it
        for t, r in zip(trajs, rewards):
            if t.bootstrap is not None:
                r[-1] += cfg.gamma * t.bootstrap
        buf = RolloutBuffer(self.agents, self.policy.obs_dims)
        columns = add_episodes(buf, trajs, rewards)
        steps = sum(t.steps for t in trajs)
        self.env_steps += steps
        self.sim_total += steps * (self.spec.delta_time or 1.0)
        self.log.advance(steps)
        for w, ep in enumerate(self.episodes.finish(trajs)):
            self._log_episode(w, ep)
        # every episode ended inside the rollout: nothing to bootstrap at its end
        buf.finish(np.zeros((len(self.agents), columns), np.float32), cfg.gamma, cfg.gae_lambda)
        return buf

    def collect_lockstep(self) -> RolloutBuffer:
        """``rollout_steps`` > 0: step every worker's env from here with the batched policy until
        the rollout is full; episodes continue across updates.

        Per decision step the Python work is O(agents) list building and a few [A, W] array
        operations; the policy runs once for all agents and workers (see policy.act_padded).
        """
        cfg, W, agents, eps, P = self.cfg, self.W, self.agents, self.episodes, self.policy.max_obs
        buf = RolloutBuffer(agents, self.policy.obs_dims)
        finished = np.zeros(W, bool)
        while True:
            obs_p = eps.padded(P)
            actions, logps, values = self.policy.act_padded(torch.from_numpy(obs_p))
            act_lists = actions.T.tolist()  # [W][A]
            step = eps.record(self.pool.step([dict(zip(agents, row)) for row in act_lists]),
                              act_lists, self.spec.delta_time)
            # per-agent reward normalisation (running std of the discounted return), all agents
            rewards = self.rewards(step.raw, step.dones)
            # time-limit truncation: bootstrap with V(final observation)
            boot = [w for w in range(W) if step.truncs[w] and all(a in step.next_obs[w] for a in agents)]
            if boot:
                fin = eps.padded(P, [{a: step.next_obs[w][a] for a in agents} for w in boot])
                _, _, v_fin = self.policy.act_padded(torch.from_numpy(fin))
                rewards[:, boot] += cfg.gamma * v_fin
            buf.add(obs=obs_p, actions=actions, logprobs=logps, values=values, rewards=rewards,
                    raw_rewards=step.raw, dones=step.dones.copy())
            self.env_steps += W
            self.sim_total += W * (self.spec.delta_time or 1.0)

            for w in range(W):
                if step.dones[w]:
                    self._log_episode(w, eps.next_episode(self.pool, w))
                    finished[w] = True
                else:
                    eps.advance(w, step.next_obs[w])
            self.log.advance(W)
            if cfg.rollout_steps > 0 and len(buf) >= cfg.rollout_steps:
                break
            if cfg.rollout_steps == 0 and finished.all():
                break
        # bootstrap the rollout's end from the current observations
        _, _, next_v = self.policy.act_padded(torch.from_numpy(eps.padded(P)))
        buf.finish(next_v, cfg.gamma, cfg.gae_lambda)
        return buf

    def _log_episode(self, w: int, ep: EpisodeState) -> None:
        self.n_episodes += 1
        if self.demos is not None:
            self.demos.observe_delay(ep.mean_delay)
        self.log.episode(ep, number=self.n_episodes, update=self.update + 1, worker=w,
                         env_steps=self.env_steps, expert_weight=mean_weight(self.last_weights))

    # ------------------------------------------------------------------ 3. optimisation
    def optimize(self, buf: RolloutBuffer) -> dict[str, float]:
        """update_epochs x num_minibatches Adam steps on sum_i L_i, all agents in one batch.

        The agents' parameters are disjoint, so the gradient of the sum is each agent's own
        gradient; gradient norms are clipped per agent.
        """
        cfg, algo, demos = self.cfg, self.algo, self.demos
        weights = algo.expert_weights(cfg, UpdateInputs(
            agents=self.agents, rollout=buf, demos=demos, trajectory=self.episodes.trajectory,
            n_actions=self.spec.n_actions, neighbours=self.spec.neighbours, env_steps=self.env_steps,
            policy=self.policy, reward_std=self.rewards.std()))
        self.last_weights = weights
        A, B = buf.stacked["actions"].shape  # B: this rollout's env steps, all workers
        lr = cfg.learning_rate
        if cfg.anneal_lr:
            lr = cfg.learning_rate * max(0.0, 1.0 - (self.env_steps - B) / cfg.total_env_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        obs = torch.from_numpy(buf.stacked["obs"])  # [A, B, P], padded
        stack = {k: torch.from_numpy(buf.stacked[k])
                 for k in ("actions", "logprobs", "values", "advantages", "returns")}
        critic_in = self.policy.critic_input(obs)  # [A, B, C]
        w = torch.tensor([weights[a].weight for a in self.agents], dtype=torch.float32)
        imitate = algo.imitates(w) and demos is not None
        mb = max(1, B // cfg.num_minibatches)
        eb = cfg.expert_batch_size or mb
        logs: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy",
                                                         "expert_loss", "approx_kl", "clipfrac")}
        for _epoch in range(cfg.update_epochs):
            perm = torch.argsort(torch.rand(A, B), dim=1)  # an independent permutation per agent
            for start in range(0, B, mb):
                idx = perm[:, start:start + mb]
                loss = torch.zeros(A)
                if algo.ppo_term:
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
                if imitate:
                    o_e, a_e, mask = demos.sample(eb, masked=algo.masks_demos)
                    le = expert_loss(self.policy.logits(o_e), a_e, mask, smoothing=cfg.expert_label_smoothing)
                    has = w > 0
                    logs["expert_loss"].append(float(le.detach()[has].mean()) if has.any() else 0.0)
                    loss = algo.combine(loss, le, w)
                self.optimizer.zero_grad()
                loss.sum().backward()
                clip_grad_norm_per_agent(self.policy, cfg.max_grad_norm)
                self.optimizer.step()
        stats = {k: float(np.mean(v)) if v else float("nan") for k, v in logs.items()}
        return {**stats, "lr": lr, **weight_columns(weights, demos, algo.masks_demos)}

    # ------------------------------------------------------------------ 4. checkpoints
    def save(self) -> None:
        state = ckpt.payload(
            fingerprint=self.fingerprint, spec=self.spec, config=self.cfg, policy=self.policy,
            optimizer=self.optimizer, update=self.update, env_steps=self.env_steps,
            episodes=self.n_episodes, sim_total=self.sim_total, **self.log.state_dict(),
            **self.rewards.state_dict(self.agents), **self.episodes.state_dict(),
            last_weights={a: [i.weight, i.distance, i.base, i.decay, i.volatility]
                          for a, i in self.last_weights.items()},
            agent_delays=list(self.demos.agent_delays) if self.demos is not None else [],
        )
        ckpt.save_checkpoint(self.run_dir, self.update, state)

    def _restore(self, s: dict[str, Any]) -> None:
        self.update, self.env_steps, self.n_episodes = s["update"], s["env_steps"], s["episodes"]
        self.sim_total = float(s["sim_total"])
        self.policy.load_state_dict(s["policy"])
        self.optimizer.load_state_dict(s["optimizers"][0])
        ckpt.restore_rng(s["rng"])
        self.rewards.load_state_dict(s, self.agents)
        self.last_weights = {a: WeightInfo(*v) for a, v in s["last_weights"].items()}
        self.log.resume(s["metrics_rows"], s["update_rows"], float(s["wall_time"]))
        self.episodes.load_state_dict(s, self.pool if self.lockstep else None)
        if self.demos is not None:  # checkpoints from before ``measured`` trust have none
            self.demos.agent_delays = [float(d) for d in s.get("agent_delays", [])]

    def save_policy(self) -> None:
        ckpt.save_policy(self.run_dir, ckpt.policy_payload(
            fingerprint=self.fingerprint, spec=self.spec, config=self.cfg, policy=self.policy,
            update=self.update, env_steps=self.env_steps))


def add_episodes(buf: RolloutBuffer, trajs: list[Trajectory], rewards: list[np.ndarray]) -> int:
    """Whole episodes into the buffer; returns its number of columns. Equal lengths (the usual
    case: a scenario's episodes have a fixed number of decision steps) give one column per worker,
    exactly the layout lockstep stepping produced; otherwise the episodes are laid end to end in
    one column (GAE stops at every episode's end either way)."""
    if len({t.steps for t in trajs}) == 1:
        groups = [(trajs, rewards)]
    else:
        groups = [([t], [r]) for t, r in zip(trajs, rewards)]
    for ts, rs in groups:
        for s in range(ts[0].steps):
            buf.add(obs=np.stack([t.obs[s] for t in ts], 1), actions=np.stack([t.actions[s] for t in ts], 1),
                    logprobs=np.stack([t.logprobs[s] for t in ts], 1),
                    values=np.stack([t.values[s] for t in ts], 1), rewards=np.stack([r[s] for r in rs], 1),
                    raw_rewards=np.stack([t.raw_rewards[s] for t in ts], 1),
                    dones=np.full(len(ts), s == ts[0].steps - 1))
    return len(groups[0][0])
