"""The demonstrations as the learner uses them: per-agent arrays for DTW and one padded batch.

``Demonstrations.prepare`` checks a ``DemoDataset`` against the environment (agents, observation
sizes, action ranges) and turns it into

- per agent (``AgentDemoTensors``): the expert's DTW feature sequences, its discounted
  return-to-go per row (RELED's mask) and its mean reward per step (LEED's return decay);
- for all agents (``DemoBatch``): [A, N_max, ...] tensors padded across agents, so that one
  expert minibatch of every agent is a single ``gather`` (``sample``).

``refresh_mask`` is the gate (``TrainConfig.expert_gate``): before every update of a gated learner
it re-evaluates, under the agent's current critic, which demo states are worth imitating.
``warm_start`` is the behaviour-cloning warm start (``bc_pretrain_steps``) run once before the
first rollout of a fresh LEED, RELED or BC run, for the agents ``warm_start_agents`` lets through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from leed_traffic.errors import DemonstrationError
from leed_traffic.learn.dtw import subsample, trajectory_features
from leed_traffic.learn.expert_weight import discounted_returns, lambda_returns, reled_mask
from leed_traffic.learn.loss import expert_loss
from leed_traffic.learn.policy import MultiAgentPolicy, clip_grad_norm_per_agent

if TYPE_CHECKING:
    from leed_traffic.dataset import DemoDataset
    from leed_traffic.learn.config import TrainConfig
    from leed_traffic.learn.rollout import EnvSpec

log = logging.getLogger(__name__)


@dataclass
class AgentDemoTensors:
    """One agent's demonstrations, ready for the DTW weight and the RELED mask."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray  # raw, as recorded
    episode: np.ndarray  # trajectory id per row
    returns_to_go: np.ndarray
    features: list[np.ndarray]  # per expert trajectory, DTW features
    per_step_return: float
    obs_mean: np.ndarray
    obs_std: np.ndarray
    warm: bool = True
    """The behaviour-cloning warm start imitates this agent (``warm_start_agents``)."""
    warm_reason: str = ""


@dataclass
class DemoBatch:
    """All agents' demos padded into [A, N_max, ...] tensors for the batched expert loss."""

    obs: torch.Tensor  # [A, N, max_obs]
    actions: torch.Tensor  # [A, N]
    counts: torch.Tensor  # [A] real rows per agent (>= 1; agents without demos get w = 0)
    mask: torch.Tensor  # [A, N] the gate's mask (ones while ungated)


class Demonstrations:
    """The agents' demonstrations (``in`` tells which agents have any) and their padded batch.

    ``gate`` is the learner's effective ``expert_gate`` (``Algorithm.gate``): when it is not
    ``none``, ``sample`` always returns the mask and ``refresh_mask`` recomputes it."""

    def __init__(self, agents: list[str], per_agent: dict[str, AgentDemoTensors], batch: DemoBatch,
                 gate: str = "none", gamma: float = 0.99, lam: float = 0.95, warm_gate: str = "none",
                 trust: str = "none", shared: bool = False):
        self.agents = list(agents)  # the env's agents, in the policy's order
        self.per_agent = per_agent
        self.batch = batch
        self.gate, self.gamma, self.lam = gate, gamma, lam
        self.warm_gate = warm_gate  # the warm start's filter (``warm_start_agents``), for pretrain.json
        self.trust_mode = trust  # ``TrainConfig.expert_trust`` ("none" while ungated or legacy RELED)
        self.shared = shared  # one network for all agents: trust is decided city-wide (``refresh_mask``)
        self.city_beats_fixed = True
        """Shared networks: the demonstrator beat fixed time city-wide (dataset quality); if not, never trusted."""
        self.trust: dict[str, float] = {}
        """Per agent, 1.0 when the latest ``refresh_mask`` trusted its demonstrator, else 0.0."""
        self.demo_delay: float | None = None
        """``measured`` trust: the demonstrations' honest mean delay (s/veh; None: not recorded)."""
        self.agent_delays: list[float] = []
        """``measured`` trust: honest mean delay of the agent's training episodes, oldest first."""
        self.window = 3

    def observe_delay(self, delay: float | None) -> None:
        """Record one finished training episode's honest delay (``measured`` trust)."""
        if delay is not None and np.isfinite(delay):
            self.agent_delays = (self.agent_delays + [float(delay)])[-max(self.window, 1):]

    @property
    def defers_warm_start(self) -> bool:
        """``measured`` trust with a recorded demo delay: the warm start waits for the fresh
        policy's first episodes and clones only a demonstrator measurably better than them
        (``Trainer._measured_warm_start``)."""
        return (self.trust_mode == "measured" and self.demo_delay is not None
                and any(dm.warm for dm in self.per_agent.values()))

    @property
    def agent_beats_demos(self) -> bool:
        """``measured`` trust: the agent's recent training episodes have a lower honest delay than
        the demonstrations (False while either side is unknown)."""
        if self.trust_mode != "measured" or self.demo_delay is None or not self.agent_delays:
            return False
        return float(np.mean(self.agent_delays[-self.window:])) < self.demo_delay

    @property
    def gated(self) -> bool:
        return self.gate != "none"

    def __contains__(self, agent: object) -> bool:
        return agent in self.per_agent

    def __getitem__(self, agent: str) -> AgentDemoTensors:
        return self.per_agent[agent]

    @classmethod
    def prepare(cls, dataset: "DemoDataset | None", spec: "EnvSpec", max_obs: int, cfg: "TrainConfig",
                *, aligned: bool = False) -> "Demonstrations | None":
        """Check ``dataset`` against the env and build the tensors; None when there is nothing to
        imitate (no dataset, or no agent kept any demonstration). ``aligned``: every agent needs
        time-aligned demos (RELED with a centralized critic)."""
        if dataset is None:
            return None
        from leed_traffic.learn.algos import get_algorithm

        algo = get_algorithm(cfg.algo)
        gate, warm_gate = algo.gate(cfg), algo.warm_start_gate(cfg)
        # the gate evaluates the critic on demo rows: a centralized critic needs all agents'
        # observations of the same instant, i.e. time-aligned demos (as RELED always did)
        aligned = aligned or (gate != "none" and cfg.use_centralized_critic)
        agents = spec.agents
        if not any(len(d) for d in dataset.agents.values()):
            # a weak demonstrator whose trajectories never beat fixed time leaves nothing to
            # imitate: that is a result, not an error (LEED then trains exactly as IPPO)
            log.warning("the demonstrations are empty (no intersection's demonstrations were kept: "
                        "none beat fixed time); training without imitation, i.e. as IPPO. Use a "
                        "stronger demonstrator (--llm claude, max-pressure) to give LEED something to learn from")
            return None
        missing = [a for a in agents if a not in dataset.agents]
        if missing and len(missing) == len(agents):
            raise DemonstrationError(
                "the demonstrations share no agent with this environment (demos for "
                f"{sorted(dataset.agents)[:5]}..., env agents {agents[:5]}...): they were "
                "generated for another network; regenerate them with `leed-traffic demos`"
            )
        out: dict[str, AgentDemoTensors] = {}
        for a in agents:
            if a not in dataset.agents or len(dataset.agents[a]) == 0:
                continue  # this agent learns without imitation (w = 0)
            d = dataset.agents[a]
            if d.obs.shape[1] != spec.obs_dims[a]:
                raise DemonstrationError(
                    f"demonstrations for {a} have observation size {d.obs.shape[1]}, the env has "
                    f"{spec.obs_dims[a]}: regenerate them for this scenario"
                )
            if d.actions.max() >= spec.n_actions[a] or d.actions.min() < 0:
                raise DemonstrationError(f"demonstrations for {a} contain actions outside the action space")
            mean, std = d.obs.mean(0), d.obs.std(0) + 1e-6
            feats = [
                subsample(trajectory_features(cfg.dtw_features, tr.obs, tr.actions,
                                              spec.n_actions[a], mean, std), cfg.dtw_max_len)
                for tr in d.trajectories()
            ]
            out[a] = AgentDemoTensors(
                obs=np.asarray(d.obs, np.float32),
                actions=np.asarray(d.actions, np.int64),
                rewards=np.asarray(d.rewards, np.float64),
                episode=np.asarray(d.episode),
                returns_to_go=discounted_returns(d.rewards, d.episode, cfg.gamma),
                features=feats,
                per_step_return=float(np.mean(d.rewards)),
                obs_mean=mean,
                obs_std=std,
            )
        if aligned:
            lengths = {len(dataset.agents[a]) for a in agents if a in dataset.agents}
            if missing or len(lengths) != 1:
                raise DemonstrationError(
                    "the expert gate (RELED, or expert_gate != none) with a centralized critic needs "
                    "time-aligned demos of all agents; use the agents' own critics, or "
                    "train.expert_gate=none with algo leed")
        if not out:
            return None
        warm_start_agents(out, dataset.metadata, warm_gate,
                          shared=cfg.policy == "phase" or cfg.share_parameters, init=cfg.init_policy)
        A = len(agents)
        N = max(len(dm.actions) for dm in out.values())
        obs, acts = torch.zeros(A, N, max_obs), torch.zeros(A, N, dtype=torch.int64)
        counts = torch.ones(A, dtype=torch.int64)
        for i, a in enumerate(agents):
            if a in out:
                n, dim = out[a].obs.shape
                obs[i, :n, :dim] = torch.as_tensor(out[a].obs)
                acts[i, :n] = torch.as_tensor(out[a].actions)
                counts[i] = n
        # the trust rides on the gate; RELED under expert_gate="none" keeps its original mask alone
        trust = cfg.expert_trust if gate != "none" and cfg.expert_gate != "none" else "none"
        shared = cfg.policy == "phase" or cfg.share_parameters
        demos = cls(agents, out, DemoBatch(obs, acts, counts, torch.ones(A, N)), gate=gate,
                    gamma=cfg.gamma, lam=cfg.gae_lambda, warm_gate=warm_gate, trust=trust, shared=shared)
        demos.window = cfg.expert_trust_window
        delay = (city_quality(dataset.metadata) or {}).get("delay")
        demos.demo_delay = float(delay) if delay is not None else None
        city_wins = city_beats_fixed(dataset.metadata)
        if shared and trust in ("mean", "measured") and city_wins is not None:
            # a measured score that does not telescope, where the critic's test can be fooled (a
            # pretrained critic under a fresh reward normaliser trusted the embedded model's
            # demonstrations for 4 updates on helsinki and took the policy from 41 s to 80 s)
            demos.city_beats_fixed = city_wins
        return demos

    def sample(self, n: int, masked: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``n`` demo rows per agent, drawn uniformly with replacement: obs [A, n, P], actions
        [A, n] and (``masked``, or whenever the demos are gated) the gate's mask [A, n]. One
        ``torch.rand`` draw."""
        db = self.batch
        j = (torch.rand(len(self.agents), n) * db.counts[:, None]).long()  # per-agent demo rows
        obs = db.obs.gather(1, j[..., None].expand(-1, -1, db.obs.shape[-1]))
        return obs, db.actions.gather(1, j), db.mask.gather(1, j) if masked or self.gated else None

    @torch.no_grad()
    def refresh_mask(self, policy: MultiAgentPolicy, reward_std: np.ndarray, gate: str | None = None,
                     baseline: dict[str, float] | None = None) -> None:
        """The gate: keep the demo states whose target beats V_i(o_e) under the current critic, in
        the critic's units (raw rewards divided by the reward normaliser's std). ``gate`` (default
        ``self.gate``; ``none`` is treated as ``return``, RELED's original mask):

        - ``return``: the Monte-Carlo return-to-go G_e > V_i(o_e);
        - ``advantage``: the demonstration's GAE under V_i (``expert_weight.lambda_returns`` minus
          V_i) beats ``baseline[a]``, the mean GAE of the agent's own latest rollout under the same
          critic (0 when not given). Centring cancels the critic's common bias: an under-fitted
          critic makes every GAE, the agent's and the demonstration's alike, look positive.

        With ``trust_mode == "mean"`` an agent whose margins (target - V_i - baseline) average
        <= 0 keeps nothing (``trust[a] = 0``): by the performance-difference lemma the mean
        advantage of the demonstrator's actions over its own states estimates J(demonstrator) -
        J(agent), so the agent imitates only a demonstrator that is better than it *on average*.
        With ``shared`` parameters (the phase policy) the test is city-wide: the margins of every
        agent's demo states are pooled, and every agent imitates (through its gate) or none does,
        since imitation at a few intersections changes the one network all of them run (on
        helsinki the embedded model's demonstrations, trusted at 1-3 of 12 intersections per
        update, left LEED at 49.1 s where IPPO reached 45.4), and only a demonstrator whose
        demonstrations beat fixed time city-wide (``city_beats_fixed``, the dataset's measured
        mean queue) can pass it. ``measured`` adds a test on what the evaluation counts: once the
        agent's recent training episodes have a lower honest delay than the demonstrations
        (``agent_beats_demos``) no agent imitates, whatever its margins.
        """
        gate = gate or self.gate
        baseline = baseline or {}
        db = self.batch
        values = policy.value(policy.critic_input(db.obs)).numpy()  # [A, N]
        self.trust = {}
        margins: list[np.ndarray] = []
        for i, a in enumerate(self.agents):
            if a not in self.per_agent:
                continue
            dm, n = self.per_agent[a], int(db.counts[i])
            if gate == "advantage":
                v = values[i, :n].astype(np.float64)
                target = lambda_returns(dm.rewards / reward_std[i], v, dm.episode, self.gamma, self.lam)
                target = target - float(baseline.get(a, 0.0))
            else:
                v = values[i, :n]
                target = dm.returns_to_go / reward_std[i]
            mask = reled_mask(target, v)
            if self.trust_mode in ("mean", "measured"):
                self.trust[a] = float(np.mean(target - v) > 0 and not self.agent_beats_demos)
                margins.append(target - v)
                if not self.shared:
                    mask = mask * self.trust[a]
            db.mask[i, :n] = torch.as_tensor(mask)
        if self.trust_mode in ("mean", "measured") and self.shared and margins:
            # one network for every intersection: trust the demonstrator city-wide or nowhere
            city = float(np.mean(np.concatenate(margins)) > 0 and self.city_beats_fixed
                         and not self.agent_beats_demos)
            self.trust = {a: city for a in self.trust}
            db.mask.mul_(city)

    def kept(self) -> dict[str, float]:
        """Per agent with demos: the fraction of its demo states the gate keeps (its trust)."""
        db = self.batch
        return {a: float(db.mask[i, :int(db.counts[i])].mean())
                for i, a in enumerate(self.agents) if a in self.per_agent}

    def kept_fraction(self) -> float:
        """Mean over agents with demos of the fraction of demo states the gate (RELED's mask) keeps."""
        return float(np.mean(list(self.kept().values())))


def city_quality(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dataset's city-wide ``quality`` record (``demos.demo_quality``), or None without one."""
    quality = (metadata or {}).get("quality")
    city = quality.get("city") if isinstance(quality, dict) else None
    return city if isinstance(city, dict) else None


def city_beats_fixed(metadata: dict[str, Any] | None) -> bool | None:
    """Whether the demonstrations beat fixed time city-wide (the dataset's ``quality`` metadata
    written by ``leed-traffic demos``); None when the dataset has none.

    On the honest mean delay when both were recorded, else on the summed mean queue. The queue
    misses what the delay counts: on ingolstadt1 max-pressure's demonstrations queued less than
    fixed time (1.6 against 4.8 vehicles) with a higher delay (33.1 against 29.8 s), and two of
    three seeds cloned them and ended at 27.6 and 32.4 s where the third, which did not, reached
    19.1 (docs/learning.md, "Phase policy: RESCO maps")."""
    city = city_quality(metadata)
    if city is None:
        return None
    if city.get("delay") is not None and city.get("fixed_delay") is not None:
        return float(city["delay"]) <= float(city["fixed_delay"])
    return bool(city.get("beats_fixed", False))


def warm_start_agents(per_agent: dict[str, AgentDemoTensors], metadata: dict[str, Any], gate: str, *,
                      shared: bool = False, init: str = "") -> None:
    """Set each agent's ``warm`` flag: whether the behaviour-cloning warm start imitates it.

    ``none``: every agent with demonstrations. ``queue``: only where the demonstrations beat fixed
    time on a score that does not telescope -- the mean queue at the intersection over the kept
    episodes, recorded by ``leed-traffic demos`` in the dataset's ``quality`` metadata
    (``demos.demo_quality``) -- either at the agent itself or summed over the city (a demonstrator
    that wins city-wide is trusted at every intersection, as ``select_best`` does). A dataset
    without that metadata (older, or built by hand) warm-starts every agent, as before.

    Two more rules under ``queue`` (measured on helsinki, docs/leed.md "The phase policy"):
    ``shared`` parameters (the phase policy) learn one behaviour for every intersection, so only a
    demonstrator that beats fixed time city-wide may shape them (the embedded model's demos won at
    9 of 12 intersections, and cloning them into the shared network started all 35 at ~120 s,
    worse than the 70 s of a random init); and a policy that starts from ``init`` weights (a
    pretrained policy) is not warm-started at all: it is already a better prior than the cloning.
    """
    if gate == "none":
        return
    if init:
        for dm in per_agent.values():
            dm.warm, dm.warm_reason = False, f"starts from {init}"
        log.info("BC warm start skipped: the policy starts from %s", init)
        return
    quality = (metadata or {}).get("quality")
    if not isinstance(quality, dict) or not isinstance(quality.get("agents"), dict):
        log.info("the demonstrations carry no quality metadata (generated before issue 12?): the "
                 "warm start imitates every agent's demonstrations")
        return
    city_wins = bool(city_beats_fixed(metadata))
    skipped = []
    for a, dm in per_agent.items():
        q = quality["agents"].get(a)
        if city_wins:
            dm.warm, dm.warm_reason = True, "demonstrator beats fixed time city-wide (mean queue)"
        elif shared:
            dm.warm, dm.warm_reason = False, "shared policy: the demonstrator does not beat fixed time city-wide"
            skipped.append(a)
        elif q is None or q.get("beats_fixed") is None:
            dm.warm, dm.warm_reason = True, "no per-intersection score recorded"
        elif q["beats_fixed"]:
            dm.warm, dm.warm_reason = True, "beats fixed time here (mean queue)"
        else:
            dm.warm, dm.warm_reason = False, "worse than fixed time here and city-wide (mean queue)"
            skipped.append(a)
    if skipped:
        why = ("the demonstrator does not beat fixed time city-wide (a shared network learns one "
               "behaviour for every intersection)" if shared else
               "their demonstrations queue more than fixed time")
        log.warning("BC warm start skips %d of %d intersections: %s (%s%s)", len(skipped), len(per_agent), why,
                    ", ".join(skipped[:5]), "..." if len(skipped) > 5 else "")


def warm_start(policy: MultiAgentPolicy, demos: Demonstrations, cfg: "TrainConfig") -> dict[str, Any]:
    """Behaviour-cloning warm start: ``bc_pretrain_steps`` Adam steps on the expert loss alone.

    Agents without demonstrations, and those ``warm_start_agents`` turned away, are left untouched
    (their loss is multiplied by 0); when no agent is left the warm start draws nothing and changes
    nothing. Has its own optimizer (PPO's state is untouched). Returns what ``pretrain.json``
    records: the expert loss and the action agreement with the expert (over the warm-started
    agents), before and after, and which agents were skipped and why.
    """
    db = demos.batch
    has = torch.tensor([a in demos and demos[a].warm for a in demos.agents], dtype=torch.float32)
    skipped = {a: demos[a].warm_reason for a in demos.agents if a in demos and not demos[a].warm}
    if not bool(has.any()):
        log.info("BC warm start skipped: no intersection's demonstrations beat fixed time")
        return {"steps": 0, "agents": 0, "skipped": skipped, "gate": demos.warm_gate}
    rows = torch.arange(db.obs.shape[1])[None, :] < db.counts[:, None]

    def agreement() -> tuple[float, float]:
        with torch.no_grad():
            logits = policy.logits(db.obs)
            le = expert_loss(logits, db.actions, rows.float()) * db.obs.shape[1] / db.counts
            hit = ((logits.argmax(-1) == db.actions) & rows).float().sum(1) / db.counts
        keep = has > 0
        return float(le[keep].mean()), float(hit[keep].mean())

    before = agreement()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.bc_pretrain_lr, eps=1e-5)
    for _ in range(cfg.bc_pretrain_steps):
        obs, actions, _ = demos.sample(cfg.bc_pretrain_batch)
        le = expert_loss(policy.logits(obs), actions, smoothing=cfg.expert_label_smoothing)
        opt.zero_grad()
        (le * has).sum().backward()
        clip_grad_norm_per_agent(policy, cfg.max_grad_norm)
        opt.step()
    after = agreement()
    log.info("BC warm start: expert loss %.3f -> %.3f, agreement %.2f -> %.2f",
             before[0], after[0], before[1], after[1])
    out: dict[str, Any] = {
        "steps": cfg.bc_pretrain_steps, "agents": int(has.sum()),
        "expert_loss": {"before": before[0], "after": after[0]},
        "action_agreement": {"before": before[1], "after": after[1]},
    }
    if demos.warm_gate != "none":
        out.update(skipped=skipped, gate=demos.warm_gate)
    return out
