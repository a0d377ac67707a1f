"""Every hyperparameter of the learner, named once (CleanRL style).

One frozen-at-start dataclass: it is the ``train`` section of the experiment (``config.json`` in
the run directory), enters the
checkpoint fingerprint (so a checkpoint trained under other settings is refused), and is the only
place a default lives. Field docstrings say what the knob does and why the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Algo = Literal["leed", "ippo", "mappo", "bc", "reled"]
WeightMode = Literal["similarity", "distance", "annealed", "constant"]
DTWFeatures = Literal["phase", "obs"]
ExpertGate = Literal["none", "return", "advantage"]

ALGOS: tuple[str, ...] = ("leed", "ippo", "mappo", "bc", "reled")
"""The learners (``learn.algos`` holds one strategy class per name)."""
WEIGHT_MODES: tuple[str, ...] = ("similarity", "distance", "annealed", "constant")
EXPERT_GATES: tuple[str, ...] = ("none", "return", "advantage")
"""Per-sample filters of the expert loss (``expert_weight.py``, docs/leed.md "Imitate only what helps")."""
WARM_START_GATES: tuple[str, ...] = ("auto", "none", "queue")
EXPERT_TRUSTS: tuple[str, ...] = ("none", "mean", "measured")

# Fields that only set the budget, the bookkeeping or the machine, not what one update computes:
# changing them between an interrupted run and its resume is allowed (e.g. extend the budget).
NON_FINGERPRINT_FIELDS: frozenset[str] = frozenset(
    {"total_env_steps", "episodes", "checkpoint_interval", "progress", "torch_threads", "start_method",
     "backend", "ray_address"}
)
# Keys of earlier versions that ``from_dict`` still reads: evaluation settings (now the experiment's
# ``eval`` section) are dropped; ``reled: true`` (RELED was a flag on algo leed) becomes algo reled.
LEGACY_KEYS: frozenset[str] = frozenset({"eval_episodes", "eval_seeds", "reled"})


@dataclass
class TrainConfig:
    """Hyperparameters of LEED and its baselines (IPPO, MAPPO, behaviour cloning, RELED)."""

    algo: str = "leed"
    """Learner: ``leed`` (PPO + dynamically weighted expert loss), ``ippo`` (PPO, w = 0),
    ``mappo`` (PPO, w = 0, centralized critic), ``bc`` (expert loss only, no PPO term),
    ``reled`` (LEED + RELED's hybrid balancing: imitate only demo states where the expert's
    discounted return-to-go beats the agent's critic value V(o_e), and down-weight agents whose
    neighbours' rewards are volatile). See ``learn.algos``."""

    # --- budget and rollouts -------------------------------------------------------------------
    total_env_steps: int = 200_000
    """Budget in environment (decision) steps summed over workers; one step = every agent acts
    once, ``delta_time`` simulated seconds. Not in the fingerprint: a resumed run may extend it."""
    episodes: int = 40
    """Budget in episodes (``leed-traffic train --episodes``): the experiment pipeline sets
    ``total_env_steps`` = episodes x decision steps per episode of its scenario (episode length //
    decision interval); 0 = ``total_env_steps`` as given. 40 one-hour episodes keep the main job
    within minutes on 2 cores. The trainer reads only ``total_env_steps``. Not in the fingerprint."""
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
    backend: str = "auto"
    """Where whole-episode rollout workers run (``learn.workers``): ``inprocess`` (this process,
    episodes one after another), ``process`` (one local child process per worker) or ``ray`` (Ray
    actors, on this machine or a cluster: ``pip install -e '.[ray]'``); ``auto`` = inprocess for
    one worker, process otherwise. Not in the fingerprint: every backend gives the same episodes
    for the same seeds. ``rollout_steps`` > 0 always steps in lockstep (inprocess/process)."""
    ray_address: str | None = None
    """The Ray cluster to join (``auto`` or HOST:PORT of ``ray start --head``); None = start a
    private local Ray. Only read by the ray backend; not in the fingerprint."""

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
    policy: str = "mlp"
    """Network: ``mlp`` (an actor-critic per intersection over its own observation, any
    observation) or ``phase`` (one phase-scoring actor-critic shared by all intersections, needs
    the ``phase`` observation; ``learn.policy.PhasePolicy``): the same weights act at any junction
    of any city, which is what makes a pretrained policy transfer (issue 10)."""
    init_policy: str = ""
    """Start from these weights instead of a random init (``phase`` policy only): ``pretrained``
    (the policy shipped with leed-traffic, ``learn.pretrained``) or a path to a pretrained-policy
    file or a run's policy.pt of a phase policy. Fine-tuning = training from there."""
    share_parameters: bool = False
    """One network for all intersections: observations zero-padded to the largest, a one-hot agent
    id appended, actions beyond an agent's own count masked. Fewer parameters and more data per
    parameter (large cities), at the cost of interference between unlike intersections."""
    centralized_critic: bool | None = None
    """Critic that sees the whole city (MAPPO): all agents' observations concatenated for the
    ``mlp`` policy, a city-wide summary for the ``phase`` policy (``PhasePolicy.city_context``).
    None = True for ``mappo`` only."""

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
    """Behaviour-cloning warm start (leed, reled, bc): Adam steps on the expert loss alone before
    the first rollout. The mixed loss alone gives the demonstrations only update_epochs x num_minibatches
    small steps per update (on cologne8 the expert loss barely moved in 8 updates), so without a
    warm start the expert's knowledge arrives too slowly to save environment steps. 0 = off."""
    bc_pretrain_lr: float = 1e-3
    """Adam step size of the warm start (its own optimizer; PPO's state is untouched)."""
    bc_pretrain_batch: int = 256
    """Demo rows per agent per warm-start step."""
    expert_label_smoothing: float = 0.0
    """eps of the expert loss (the warm start's and the mixed loss's): the target is the
    demonstrated phase with 1 - eps and the junction's legal phases uniformly with eps
    (``loss.expert_loss``). 0 = plain cross-entropy (every run before 2026-12-01). Why: a clone
    of a deterministic demonstrator has entropy ~0 (max-pressure on the RESCO maps: 0.02), so
    PPO samples only the demonstrator's phase, its gradients vanish (approximate KL ~1e-5 per
    update) and the teacher becomes a ceiling; a smoothed clone still tries the other phases."""
    bc_pretrain_margin: float = 0.05
    """With ``expert_trust=measured`` and demonstrations that record their honest delay, the warm
    start waits until the first update and clones only if the demonstrations' delay is at least
    this fraction below that of the fresh policy's own first episodes (``pretrain.json`` records
    both). A fresh network is a near-random controller: on helsinki a random demonstrator 'beats'
    fixed time city-wide (74 s against 108 s), and cloning it left PPO stuck at 70 s on all three
    seeds, against IPPO's 47 s from the same fresh start."""

    # --- imitate only what helps (issue 12) -------------------------------------------------------
    expert_gate: str = "advantage"
    """Which demo samples the expert loss of ``leed`` and ``reled`` may imitate, refreshed every
    update under the agent's current critic (docs/leed.md, "Imitate only what helps"):
    ``advantage`` (default): (o_e, a_e) only where the demonstration's GAE(lambda) advantage under
    the agent's critic is positive, i.e. following the demonstrator from o_e earned more than the
    agent expects to earn from o_e (Q-filter / self-imitation test, bootstrapped); ``return``: the
    demonstration's Monte-Carlo discounted return-to-go beats V(o_e) (RELED's original mask);
    ``none``: imitate every sample (LEED before issue 12; bit-identical numbers). The fraction of
    an agent's demo states that pass is its trust in the demonstrator (``expert_kept``): the
    expert loss averages over all samples, so the effective weight is w_i x kept_i. RELED always
    gates (``none`` gives it ``return``, its original mask); BC never does."""
    expert_trust: str = "measured"
    """Per-intersection trust in the demonstrator, on top of the gate (any ``expert_gate`` but
    ``none``): ``mean``: agent i imitates nothing in an update where the mean of its demo samples'
    gate margins is not positive -- with ``advantage`` that mean estimates J(demonstrator) -
    J(agent) at that intersection (performance-difference lemma), so a demonstrator the agent
    already beats is not imitated at all, not even in the states where noise made it look better;
    ``measured`` (default): ``mean``, and nobody imitates once the agent's own training episodes
    (mean honest delay of the last ``expert_trust_window``) beat the demonstrations' measured
    honest delay (the dataset's ``quality.city.delay``): a test the critic cannot fool (a max-pressure
    teacher that gridlocks ingolstadt7 at 216 s was still imitated by a policy at 50 s);
    ``none``: the per-sample gate alone. Logged as ``expert_trust`` (share of the agents with
    demos trusted in the update)."""
    expert_trust_window: int = 3
    """Training episodes whose mean honest delay is the agent's side of ``measured`` trust."""
    bc_pretrain_gate: str = "auto"
    """Which agents the behaviour-cloning warm start imitates (leed, reled): ``queue``: only those
    whose kept demonstrations had a lower mean queue than fixed time at that intersection, or whose
    demonstrator beat fixed time on the city's summed mean queue (the dataset's ``quality``
    metadata, written by ``leed-traffic demos``; a dataset without it warm-starts every agent);
    ``none``: every agent with demonstrations; ``auto`` (default): ``queue`` unless
    ``expert_gate`` is ``none``. The warm start runs before any critic exists, so the return gate
    cannot protect it."""

    # --- RELED hybrid balancing (algo reled) ------------------------------------------------------
    reled_volatility_coef: float = 1.0
    """kappa in w *= 1/(1 + kappa * v_i), v_i = std of neighbour rewards relative to the median."""

    # --- bookkeeping ----------------------------------------------------------------------------
    seed: int = 0
    """Seeds torch, numpy and every episode's SUMO seed (derived per worker and episode)."""
    checkpoint_interval: int = 1
    """Write a checkpoint every N updates (and always at the end)."""
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
        if self.expert_gate not in EXPERT_GATES:
            raise ValueError(f"unknown expert_gate {self.expert_gate!r}; choose one of {', '.join(EXPERT_GATES)}")
        if self.expert_trust not in EXPERT_TRUSTS:
            raise ValueError(f"unknown expert_trust {self.expert_trust!r}; choose one of {', '.join(EXPERT_TRUSTS)}")
        if self.bc_pretrain_gate not in WARM_START_GATES:
            raise ValueError(f"unknown bc_pretrain_gate {self.bc_pretrain_gate!r}; "
                             f"choose one of {', '.join(WARM_START_GATES)}")
        if self.policy not in ("mlp", "phase"):
            raise ValueError(f"unknown policy {self.policy!r}; choose mlp or phase")
        if self.init_policy and self.policy != "phase":
            raise ValueError("init_policy needs policy=phase (only the phase policy transfers between networks)")
        if self.dtw_features not in ("phase", "obs"):
            raise ValueError(f"dtw_features must be 'phase' or 'obs', not {self.dtw_features!r}")
        if self.start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver'")
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if self.episodes < 0:
            raise ValueError("episodes must be >= 0 (0: the budget is total_env_steps)")
        if self.n_workers < 1 or self.update_epochs < 1 or self.num_minibatches < 1:
            raise ValueError("n_workers, update_epochs and num_minibatches must be >= 1")

    @property
    def uses_demos(self) -> bool:
        """LEED, RELED and BC need demonstrations; IPPO and MAPPO do not."""
        from leed_traffic.learn.algos import get_algorithm

        return get_algorithm(self.algo).uses_demos

    @property
    def warm_start_gate(self) -> str:
        """``bc_pretrain_gate`` with ``auto`` resolved: ``queue`` unless ``expert_gate`` is none."""
        if self.bc_pretrain_gate != "auto":
            return self.bc_pretrain_gate
        return "none" if self.expert_gate == "none" else "queue"

    @property
    def use_centralized_critic(self) -> bool:
        """``centralized_critic``, or when None the algorithm's own choice (MAPPO's)."""
        if self.centralized_critic is not None:
            return self.centralized_critic
        from leed_traffic.learn.algos import get_algorithm

        return get_algorithm(self.algo).centralized_critic

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """A config from ``to_dict`` output, also of earlier versions (see ``LEGACY_KEYS``)."""
        d = dict(d)
        if d.pop("reled", False):
            d["algo"] = "reled"
        for k in LEGACY_KEYS:
            d.pop(k, None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)

    def fingerprint_dict(self) -> dict[str, Any]:
        """The fields that define what an update computes (see NON_FINGERPRINT_FIELDS)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_FINGERPRINT_FIELDS}
