"""Every hyperparameter of the learner, named once (CleanRL style).

One frozen-at-start dataclass: it is written to ``config.json`` in the run directory, enters the
checkpoint fingerprint (so a checkpoint trained under other settings is refused), and is the only
place a default lives. Field docstrings say what the knob does and why the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Algo = Literal["leed", "ippo", "mappo", "bc"]
WeightMode = Literal["similarity", "distance", "annealed", "constant"]
DTWFeatures = Literal["phase", "obs"]

ALGOS: tuple[str, ...] = ("leed", "ippo", "mappo", "bc")
WEIGHT_MODES: tuple[str, ...] = ("similarity", "distance", "annealed", "constant")

# Fields that only set the budget, the bookkeeping or the machine, not what one update computes:
# changing them between an interrupted run and its resume is allowed (e.g. extend the budget).
NON_FINGERPRINT_FIELDS: frozenset[str] = frozenset(
    {"total_env_steps", "checkpoint_interval", "eval_episodes", "eval_seeds", "progress",
     "torch_threads", "start_method"}
)


@dataclass
class TrainConfig:
    """Hyperparameters of LEED and its baselines (IPPO, MAPPO, behaviour cloning)."""

    algo: str = "leed"
    """Learner: ``leed`` (PPO + dynamically weighted expert loss), ``ippo`` (PPO, w = 0),
    ``mappo`` (PPO, w = 0, centralized critic), ``bc`` (expert loss only, no PPO term)."""

    # --- budget and rollouts -------------------------------------------------------------------
    total_env_steps: int = 200_000
    """Budget in environment (decision) steps summed over workers; one step = every agent acts
    once, ``delta_time`` simulated seconds. Not in the fingerprint: a resumed run may extend it."""
    rollout_steps: int = 0
    """Decision steps per worker per update. 0 = one whole episode per worker per update: traffic
    episodes are short (hundreds of steps) and whole episodes give DTW a full trajectory to compare
    with the expert's. With >0 the env persists across updates (GAE bootstraps at the cut)."""
    n_workers: int = 1
    """Rollout worker processes, one SUMO each (libsumo runs one simulation per process).
    1 = in-process (no subprocess). Part of the fingerprint: it changes the data of an update."""
    start_method: str = "spawn"
    """multiprocessing start method for workers (``spawn`` or ``forkserver``; never ``fork``:
    libsumo and torch threads do not survive a fork)."""

    # --- PPO (CleanRL defaults unless noted) ----------------------------------------------------
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Minibatches per epoch (per agent)."""
    learning_rate: float = 3e-4
    """Adam step size."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over ``total_env_steps`` (CleanRL default)."""
    gamma: float = 0.99
    """Discount per decision step (with delta_time=5 s, ~100 steps ~ 8 min horizon)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clip."""
    clip_vloss: bool = True
    """Clip the value loss around the old value (CleanRL default)."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip per agent update."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    normalize_rewards: bool = True
    """Scale each agent's rewards by a running std of its discounted return (gymnasium's
    NormalizeReward): SUMO waiting-time rewards are in the hundreds and would swamp the value loss.
    Returns logged to metrics.csv are always the raw ones."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """MLP hidden layers of actor and critic (separate networks, tanh, orthogonal init)."""
    torch_threads: int = 1
    """torch intra-op threads; networks are tiny, more threads only contend with SUMO."""

    # --- multi-agent structure -----------------------------------------------------------------
    share_parameters: bool = False
    """One network for all intersections: observations zero-padded to the largest, a one-hot agent
    id appended, actions beyond an agent's own count masked. Fewer parameters and more data per
    parameter (large cities), at the cost of interference between unlike intersections."""
    centralized_critic: bool | None = None
    """Critic over all agents' observations concatenated (MAPPO). None = True for ``mappo`` only."""

    # --- expert loss (LEED) ----------------------------------------------------------------------
    expert_weight_mode: str = "similarity"
    """Map from DTW distance to expert weight: ``similarity`` (w0*exp(-d/tau)), ``distance``
    (w0*(1-exp(-d/tau))), ``annealed`` (w0*max(0, 1-steps/anneal)), ``constant`` (w0).
    See docs/leed.md for the default's rationale."""
    expert_weight_init: float = 1.0
    """w0: scale of the expert loss relative to the PPO loss (both are O(1) per sample)."""
    expert_tau: float = 0.25
    """tau of the similarity/distance forms, in DTW-distance units (phase features: fraction of
    mismatched aligned steps, in [0, 1])."""
    expert_anneal_steps: int = 100_000
    """Env steps over which ``annealed`` (and the ``anneal_all`` factor) decays w0 to 0."""
    expert_return_decay: bool = True
    """Multiply w by exp(-max(0, r_agent - r_expert) / (beta*|r_expert| + eps)), per-step mean
    rewards: once the agent's own return overtakes the demonstrator's the imitation fades, so a
    weak demonstrator is not a ceiling."""
    expert_return_beta: float = 0.1
    """Relative margin of the return decay: surpassing the expert by beta*|r_expert| divides w by e."""
    dtw_features: str = "phase"
    """Feature sequence compared by DTW: ``phase`` (one-hot chosen phase: the behaviour itself,
    cost 0/1 per aligned step) or ``obs`` (observations z-scored by the demo statistics)."""
    dtw_band: float | None = 0.1
    """Sakoe-Chiba band as a fraction of the longer sequence (None = unconstrained, O(nm))."""
    dtw_max_len: int = 512
    """Sequences longer than this are uniformly subsampled before DTW (caps the O(nm) cost)."""
    expert_batch_size: int = 0
    """Demo samples per minibatch for the expert loss; 0 = same as the PPO minibatch size."""
    bc_pretrain_steps: int = 500
    """Behaviour-cloning warm start (leed, bc): Adam steps on the expert loss alone before the first
    rollout. The mixed loss alone gives the demonstrations only update_epochs x num_minibatches
    small steps per update (on cologne8 the expert loss barely moved in 8 updates), so without a
    warm start the expert's knowledge arrives too slowly to save environment steps. 0 = off."""
    bc_pretrain_lr: float = 1e-3
    """Adam step size of the warm start (its own optimizer; PPO's state is untouched)."""
    bc_pretrain_batch: int = 256
    """Demo rows per agent per warm-start step."""

    # --- RELED hybrid balancing -------------------------------------------------------------------
    reled: bool = False
    """RELED hybrid: imitate only demo states where the expert's discounted return-to-go beats the
    agent's critic value V(o_e), and down-weight agents whose neighbours' rewards are volatile."""
    reled_volatility_coef: float = 1.0
    """kappa in w *= 1/(1 + kappa * v_i), v_i = std of neighbour rewards relative to the median."""

    # --- bookkeeping ----------------------------------------------------------------------------
    seed: int = 0
    """Seeds torch, numpy and every episode's SUMO seed (derived per worker and episode)."""
    checkpoint_interval: int = 1
    """Write a checkpoint every N updates (and always at the end)."""
    eval_episodes: int = 5
    """Evaluation episodes per seed for the final policy (read by the evaluation command)."""
    eval_seeds: tuple[int, ...] = (1000, 1001, 1002)
    """Held-out SUMO seeds for evaluation (disjoint from training seeds, which are derived)."""
    progress: bool = True
    """Show the rich progress bar."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes copied into config.json (not interpreted)."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.expert_weight_mode not in WEIGHT_MODES:
            raise ValueError(
                f"unknown expert_weight_mode {self.expert_weight_mode!r}; "
                f"choose one of {', '.join(WEIGHT_MODES)}"
            )
        if self.dtw_features not in ("phase", "obs"):
            raise ValueError(f"dtw_features must be 'phase' or 'obs', not {self.dtw_features!r}")
        if self.start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver'")
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        self.eval_seeds = tuple(int(s) for s in self.eval_seeds)
        if self.n_workers < 1 or self.update_epochs < 1 or self.num_minibatches < 1:
            raise ValueError("n_workers, update_epochs and num_minibatches must be >= 1")

    @property
    def uses_demos(self) -> bool:
        """LEED and BC need demonstrations; IPPO and MAPPO do not."""
        return self.algo in ("leed", "bc")

    @property
    def use_centralized_critic(self) -> bool:
        return self.algo == "mappo" if self.centralized_critic is None else self.centralized_critic

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["eval_seeds"] = list(self.eval_seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)

    def fingerprint_dict(self) -> dict[str, Any]:
        """The fields that define what an update computes (see NON_FINGERPRINT_FIELDS)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_FINGERPRINT_FIELDS}
