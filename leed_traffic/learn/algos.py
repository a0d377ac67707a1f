"""The learners as small strategy objects: what sets IPPO, MAPPO, BC, LEED and RELED apart.

Every learner runs the same loop (``trainer.py``) and minimises, per agent i,

    L_i = L_PPO,i + w_i * L_E,i        (L_E: the expert loss on agent i's demonstrations)

An algorithm says what differs:

=========  ==========  =================  =========  ==========================================
algo       demos       critic (default)   PPO term   w_i per update
=========  ==========  =================  =========  ==========================================
``ippo``   no          own observation    yes        0
``mappo``  no          all observations   yes        0
``bc``     yes         own observation    no         1 where the agent has demos (L = w * L_E)
``leed``   yes         own observation    yes        DTW weight form x return decay, gated
``reled``  yes         own observation    yes        LEED's x 1/(1 + kappa v_i), gated
=========  ==========  =================  =========  ==========================================

"Gated": the expert loss weights each demo sample by the gate's mask m_j (``expert_gate``,
``Algorithm.gate``): imitate (o_e, a_e) only where the demonstration did better than the agent's
critic expects, so the expert term cannot pull an agent towards a demonstrator it already beats
(issue 12). ``expert_gate="none"`` gives LEED as before; RELED always gates (its original mask is
``return``). (``TrainConfig.centralized_critic`` overrides the critic for any algorithm.) The weight
forms, the return decay, the gate and RELED's volatility factor are in ``expert_weight.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import torch

from leed_traffic.learn.config import ALGOS
from leed_traffic.learn.dtw import dtw_distances, subsample, trajectory_features
from leed_traffic.learn.expert_weight import WeightInfo, expert_weight, neighbour_volatility
from leed_traffic.learn.loss import mixed_loss

if TYPE_CHECKING:
    from leed_traffic.learn.buffer import RolloutBuffer
    from leed_traffic.learn.config import TrainConfig
    from leed_traffic.learn.demo_batch import Demonstrations
    from leed_traffic.learn.policy import MultiAgentPolicy


@dataclass
class UpdateInputs:
    """What an algorithm may look at to weight the expert loss of one update."""

    agents: list[str]
    rollout: "RolloutBuffer"
    demos: "Demonstrations | None"
    trajectory: Callable[[str], tuple[np.ndarray, np.ndarray, bool]]
    """Worker 0's latest trajectory of an agent: (obs, actions, partial)."""
    n_actions: dict[str, int]
    neighbours: dict[str, list[str]]
    env_steps: int
    policy: "MultiAgentPolicy"
    reward_std: np.ndarray
    """Per agent, what the reward normaliser divides raw rewards by (RELED compares the expert's
    return-to-go with the critic's value in the critic's units)."""

    def has_demos(self, agent: str) -> bool:
        return self.demos is not None and agent in self.demos


class Algorithm:
    """Base: PPO with no imitation (w = 0). Subclasses override the class flags and methods."""

    name: ClassVar[str]
    uses_demos: ClassVar[bool] = False
    """Needs a demonstration dataset (and gets the behaviour-cloning warm start)."""
    centralized_critic: ClassVar[bool] = False
    """The critic's default input: all agents' observations (True) or the agent's own."""
    ppo_term: ClassVar[bool] = True
    """L_PPO is part of the loss (False: behaviour cloning)."""
    masks_demos: ClassVar[bool] = False
    """The expert loss weights each demo row by the gate's mask whatever ``expert_gate`` says
    (RELED)."""

    def gate(self, cfg: "TrainConfig") -> str:
        """The effective ``expert_gate`` of this learner ("none": imitate every demo sample)."""
        return "none"

    def warm_start_gate(self, cfg: "TrainConfig") -> str:
        """The effective ``bc_pretrain_gate``: ``auto`` filters nothing for learners without a gate
        (BC imitates every demonstration: it is the imitation baseline)."""
        return "none" if cfg.bc_pretrain_gate == "auto" else cfg.bc_pretrain_gate

    def expert_weights(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, WeightInfo]:
        """w_i of this update, per agent (with its ingredients, for the logs)."""
        return {a: WeightInfo(0.0) for a in x.agents}

    def imitates(self, w: torch.Tensor) -> bool:
        """Whether this update computes the expert loss at all (given the weights [A])."""
        return bool((w > 0).any())

    def combine(self, ppo: torch.Tensor, expert: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Per-agent loss [A] from L_PPO [A] (zeros without a PPO term), L_E [A] and w [A]."""
        return mixed_loss(ppo, expert, w)

    def __repr__(self) -> str:
        return f"<algorithm {self.name}>"


class IPPO(Algorithm):
    """Independent PPO: every agent learns from its own observations and rewards."""

    name = "ippo"


class MAPPO(IPPO):
    """PPO with a centralized critic (all agents' observations); actors stay decentralized."""

    name = "mappo"
    centralized_critic = True


class BC(Algorithm):
    """Behaviour cloning: the expert loss alone (w = 1 where an agent has demonstrations)."""

    name = "bc"
    uses_demos = True
    ppo_term = False

    def expert_weights(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, WeightInfo]:
        return {a: WeightInfo(1.0 if x.has_demos(a) else 0.0) for a in x.agents}

    def imitates(self, w: torch.Tensor) -> bool:
        return True

    def combine(self, ppo: torch.Tensor, expert: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * expert


class LEED(Algorithm):
    """PPO + expert loss weighted by the DTW distance between the agent's latest trajectory
    (worker 0's latest complete episode) and its expert trajectories, times the return decay."""

    name = "leed"
    uses_demos = True

    def gate(self, cfg: "TrainConfig") -> str:
        return cfg.expert_gate

    def warm_start_gate(self, cfg: "TrainConfig") -> str:
        return cfg.warm_start_gate

    def volatility(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, float]:
        """Per-agent relative neighbour volatility (RELED); {} = no volatility factor."""
        return {}

    def distances(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, float]:
        """Per agent with demos: the smallest DTW distance to one of its expert trajectories.

        One batched DTW call for every (agent, expert trajectory) pair (``dtw.dtw_distances``).
        Before worker 0's first episode ends, the episode so far is compared with the experts'
        prefixes of the same length.
        """
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        owner: list[str] = []
        for a in x.agents:
            if not x.has_demos(a):
                continue
            dm = x.demos[a]
            obs, acts, partial = x.trajectory(a)
            feats = trajectory_features(cfg.dtw_features, obs, acts, x.n_actions[a], dm.obs_mean, dm.obs_std)
            feats = subsample(feats, cfg.dtw_max_len)
            for ef in dm.features:
                pairs.append((feats, ef[: len(feats)] if partial else ef))
                owner.append(a)
        dists: dict[str, float] = {}
        for a, d in zip(owner, dtw_distances(pairs, cfg.dtw_band) if pairs else []):
            dists[a] = min(dists.get(a, np.inf), float(d))
        return dists

    def expert_weights(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, WeightInfo]:
        vol = self.volatility(cfg, x)
        kept: dict[str, float] = {}
        trust: dict[str, float] = {}
        if x.demos is not None and x.demos.gated:
            # the gate, under the critic as it is before this update's PPO epochs
            x.demos.refresh_mask(x.policy, x.reward_std, baseline={
                a: float(x.rollout.data[a].advantages.mean()) for a in x.agents})
            kept, trust = x.demos.kept(), x.demos.trust
        dists = self.distances(cfg, x)
        out = {}
        for a in x.agents:
            if not x.has_demos(a):
                out[a] = WeightInfo(0.0)
                continue
            decay = cfg.expert_return_decay
            out[a] = expert_weight(
                cfg.expert_weight_mode, dists[a], w0=cfg.expert_weight_init, tau=cfg.expert_tau,
                env_steps=x.env_steps, anneal_steps=cfg.expert_anneal_steps,
                agent_return=float(x.rollout.data[a].raw_rewards.mean()) if decay else None,
                expert_return=x.demos[a].per_step_return if decay else None,
                beta=cfg.expert_return_beta,
                relative_volatility=vol.get(a),
                kappa=cfg.reled_volatility_coef,
            )
            out[a].kept = kept.get(a, float("nan"))
            out[a].trust = trust.get(a, float("nan"))
        return out


class RELED(LEED):
    """LEED + RELED's hybrid balancing: the expert loss keeps only demo states that pass the gate
    (always on: ``expert_gate``, or with ``none`` RELED's original ``return`` mask, the expert
    return-to-go beating the agent's critic value), and w_i is divided by
    1 + kappa * (relative volatility of the agent's neighbours' rewards)."""

    name = "reled"
    masks_demos = True

    def gate(self, cfg: "TrainConfig") -> str:
        return "return" if cfg.expert_gate == "none" else cfg.expert_gate

    def volatility(self, cfg: "TrainConfig", x: UpdateInputs) -> dict[str, float]:
        neighbours = x.neighbours or {a: [b for b in x.agents if b != a] for a in x.agents}
        return neighbour_volatility({a: x.rollout.data[a].raw_rewards.reshape(-1) for a in x.agents},
                                    neighbours)


ALGORITHMS: dict[str, Algorithm] = {cls.name: cls() for cls in (LEED, IPPO, MAPPO, BC, RELED)}
"""One instance per name of ``config.ALGOS`` (the strategies hold no state)."""


def get_algorithm(name: str) -> Algorithm:
    """The strategy object of ``TrainConfig.algo``."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algo {name!r}; choose one of {', '.join(ALGOS)}") from None
