"""Actor-critics for the intersections, evaluated for all agents in one batched call.

Observation and action sizes differ between intersections (a T-junction has 2 green phases, a big
crossing 4+), so by default every agent has its own actor-critic (separate actor and critic MLPs,
tanh, orthogonal init as in CleanRL: sqrt(2) hidden gain, 0.01 for the policy head so the initial
policy is near uniform, 1.0 for the value head).

Speed: a city has dozens of agents and the networks are tiny, so a Python loop over per-agent
``nn.Linear``s is dominated by call overhead (it made training 4-8x slower than the simulation).
The per-agent networks are therefore stored *stacked*: each layer is a [S, in, out] weight, and
all agents go through one batched matmul. The agents' parameters are still disjoint slices (no
sharing, independent gradients; Adam is element-wise, so one Adam over the stacks equals one Adam
per agent; the trainer clips gradient norms per agent). Observations are zero-padded to the
largest agent's size; the padded input rows of an agent's first layer only ever see zeros, so
they receive no gradient and do not change its function. Logits beyond an agent's own action
count are masked to -1e9.

``share_parameters``: S = 1, one network for all agents, with a one-hot agent id appended to the
(padded) input so the net can still specialise. Trade-off: far fewer parameters and every
intersection's data trains the same weights (scales to big cities, transfers between similar
junctions), but the padded encoding is not phase-invariant (feature k means different lanes at
different junctions), so unlike intersections interfere; per-agent nets are the safer default for
a few dozen signals.

``centralized critic`` (MAPPO): every agent's critic sees all agents' observations concatenated in
``agents`` order; actors stay decentralized (execution needs only the own observation). The value
function no longer treats the neighbours as a non-stationary part of the environment, at the price
of an input that grows with the city.

``PhasePolicy``'s centralized critic cannot concatenate (its weights must fit any city), so it sees
the city through a fixed-size, permutation-invariant summary instead: per agent the mean and max of
its phases' raw features, then the mean and max of those over all agents at the same time step
(``city_context``, 4 x features). Raw features, not learned embeddings, because the trainer calls
``critic_input`` once on the whole rollout and then samples each agent's minibatch at its own time
columns: everything a value needs from the other agents must already sit in its own row. The value
is the decentralized critic plus a city term, an MLP of [own pooled embeddings, city context]
whose output layer starts at zero: a centralized policy starts as the decentralized one, and the
two share every other weight, so a decentralized file (the shipped one) starts MAPPO with its actor
*and* critic, and a MAPPO file serves zero-shot and fine-tunes as IPPO (the city term is dropped;
``load_transferable``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

if TYPE_CHECKING:
    from leed_traffic.learn.config import TrainConfig
    from leed_traffic.learn.rollout import EnvSpec

MASKED_LOGIT = -1e9


@dataclass(frozen=True)
class AgentSpec:
    """What the policy needs to know about one intersection."""

    agent: str
    obs_dim: int
    n_actions: int


class StackedMLP(nn.Module):
    """S independent MLPs with the same layer sizes, applied as batched matmuls.

    Input [A, B, in] with S == A (one MLP per agent) or S == 1 (shared, broadcast).
    ``true_in[s]`` is stack s's real input size: CleanRL's orthogonal init is applied to the real
    [in_s, out] block so each agent starts exactly as a stand-alone ``nn.Linear`` net would.
    """

    def __init__(self, true_in: list[int], in_dim: int, hidden: tuple[int, ...], out_dim: int,
                 out_std: float):
        super().__init__()
        S = len(true_in)
        sizes = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k in range(len(sizes) - 1):
            w = torch.zeros(S, sizes[k], sizes[k + 1])
            std = out_std if k == len(sizes) - 2 else math.sqrt(2)
            for s in range(S):
                rows = true_in[s] if k == 0 else sizes[k]
                block = torch.empty(sizes[k + 1], rows)  # nn.Linear layout [out, in]
                nn.init.orthogonal_(block, std)
                w[s, :rows] = block.T
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(S, 1, sizes[k + 1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.weights)
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.matmul(x, w) + b
            if k < n - 1:
                x = torch.tanh(x)
        return x


class MultiAgentPolicy(nn.Module):
    """All agents' actor-critics; tensors are [A, B, ...] in ``agents`` order."""

    stacked = True
    """Parameters are [S, ...] stacks, one slice per agent (``clip_grad_norm_per_agent``)."""

    def __init__(
        self,
        specs: list[AgentSpec],
        hidden: tuple[int, ...] = (64, 64),
        share_parameters: bool = False,
        centralized_critic: bool = False,
    ):
        super().__init__()
        self.specs = {s.agent: s for s in specs}
        self.agents = [s.agent for s in specs]
        self.share = share_parameters
        self.centralized = centralized_critic
        A = len(specs)
        self.max_obs = max(s.obs_dim for s in specs)
        self.max_actions = max(s.n_actions for s in specs)
        self.global_dim = sum(s.obs_dim for s in specs)
        self.obs_dims = [s.obs_dim for s in specs]
        onehot = A if share_parameters else 0
        actor_in = self.max_obs + onehot
        critic_in = (self.global_dim if centralized_critic else self.max_obs) + onehot
        if share_parameters:
            true_actor, true_critic = [actor_in], [critic_in]
        else:
            true_actor = self.obs_dims
            true_critic = [self.global_dim] * A if centralized_critic else self.obs_dims
        self.actor = StackedMLP(true_actor, actor_in, hidden, self.max_actions, out_std=0.01)
        self.critic = StackedMLP(true_critic, critic_in, hidden, 1, out_std=1.0)
        mask = torch.zeros(A, 1, self.max_actions, dtype=torch.bool)
        for i, s in enumerate(specs):
            mask[i, :, s.n_actions:] = True
        self.register_buffer("action_mask", mask, persistent=False)
        self.register_buffer("onehot", torch.eye(A)[:, None, :], persistent=False)

    # --- encodings -----------------------------------------------------------------------------
    def pad(self, obs: dict[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Per-agent [B, d_i] observations -> padded [A, B, max_obs]."""
        first = obs[self.agents[0]]
        B = first.shape[0] if first.ndim > 1 else 1
        out = torch.zeros(len(self.agents), B, self.max_obs)
        for i, a in enumerate(self.agents):
            x = torch.as_tensor(obs[a], dtype=torch.float32).reshape(B, -1)
            out[i, :, : x.shape[-1]] = x
        return out

    def global_from_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """[A, B, max_obs] padded -> [B, sum d_i] concatenation (MAPPO critic input)."""
        return torch.cat([padded[i, :, :d] for i, d in enumerate(self.obs_dims)], dim=-1)

    def _with_id(self, x: torch.Tensor) -> torch.Tensor:
        if not self.share:
            return x
        return torch.cat([x, self.onehot.expand(-1, x.shape[1], -1)], dim=-1)

    def critic_input(self, padded: torch.Tensor, global_obs: torch.Tensor | None = None) -> torch.Tensor:
        if self.centralized:
            g = self.global_from_padded(padded) if global_obs is None else global_obs
            x = g.unsqueeze(0).expand(len(self.agents), -1, -1)
        else:
            x = padded
        return self._with_id(x)

    # --- heads ---------------------------------------------------------------------------------
    def logits(self, padded: torch.Tensor) -> torch.Tensor:
        """[A, B, max_obs] -> masked logits [A, B, max_actions]."""
        return self.actor(self._with_id(padded)).masked_fill(self.action_mask, MASKED_LOGIT)

    def dist(self, padded: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits(padded))

    def value(self, critic_in: torch.Tensor) -> torch.Tensor:
        """[A, B, critic_in] (from ``critic_input``) -> [A, B]."""
        return self.critic(critic_in).squeeze(-1)

    @torch.no_grad()
    def act_padded(
        self, padded: torch.Tensor, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, log-probs and values [A, B] for padded observations [A, B, max_obs].

        The rollout hot path: one actor and one critic pass for every agent, no per-agent Python
        and no ``Categorical`` object (its argument checks cost more than the tiny networks).
        Sampling is the same ``multinomial`` draw ``Categorical.sample`` makes.
        """
        logits = self.logits(padded)
        logp_all = torch.log_softmax(logits, -1)
        if deterministic:
            act = logits.argmax(-1)
        else:
            probs = torch.softmax(logits, -1)
            act = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).reshape(logits.shape[:-1])
        logp = logp_all.gather(-1, act[..., None]).squeeze(-1)
        val = self.value(self.critic_input(padded))
        return act.numpy(), logp.numpy(), val.numpy()

    def actor_module(self, agent: str, *, with_action: bool = False) -> "AgentActor":
        """``agent``'s actor as a stand-alone module (a copy of its current weights): obs
        [B, obs_dim] -> logits [B, n_actions] (and, ``with_action``, the argmax action [B]).

        What an exported model runs (ONNX / TorchScript); its logits equal ``logits`` for that
        agent, so a deployed controller decides as the trained policy's argmax does.
        """
        return AgentActor(self, agent, with_action=with_action).eval()

    def act_batch(
        self, obs: dict[str, np.ndarray], deterministic: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Actions, log-probs and values for a batch of observations per agent ([B, d_i])."""
        act_np, logp_np, val_np = self.act_padded(self.pad(obs), deterministic)
        return ({a: act_np[i] for i, a in enumerate(self.agents)},
                {a: logp_np[i] for i, a in enumerate(self.agents)},
                {a: val_np[i] for i, a in enumerate(self.agents)})


def _mlp(sizes: list[int], out_std: float | None) -> nn.Sequential:
    """tanh MLP with CleanRL's orthogonal init (sqrt(2) hidden gain, ``out_std`` on the last
    layer; ``out_std=None``: the last layer is hidden too, tanh after it)."""
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        last = k == len(sizes) - 2 and out_std is not None
        lin = nn.Linear(sizes[k], sizes[k + 1])
        nn.init.orthogonal_(lin.weight, out_std if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class PhasePolicy(nn.Module):
    """One actor-critic for every intersection of every city: it scores phases, not agents.

    FRAP/MPLight-style (issue 10): the ``phase`` observation gives each green phase the same
    ``PHASE_FEATURES`` features of the movements it serves, at any junction. The actor embeds
    each phase (MLP), appends the mean embedding of the junction's phases (the competition: a
    phase is worth serving relative to the others) and maps that to the phase's logit with a
    second MLP; the critic pools its own phase embeddings (mean and max) into V(s) (with
    ``centralized_critic``, MAPPO, plus a city term: see the module docstring). No agent id
    and no per-agent weights: the same parameters act at a T-junction with 2 phases and a
    crossing with 6, on a network the policy never saw (``pretrained``), and every intersection's
    data trains them (parameter sharing, the stability lever of issue 12). Phases beyond an
    agent's count are masked out of the logits and the pooling.

    Same interface as ``MultiAgentPolicy`` (the trainer, the demonstrations and serving do not
    know which they hold): observations are padded to ``max_obs`` = max phases x features.
    """

    stacked = False
    CITY_PREFIX = "critic_city."
    """State-dict keys of the centralized critic's city term (absent from decentralized files)."""

    def __init__(self, specs: list[AgentSpec], hidden: tuple[int, ...] = (64, 64),
                 centralized_critic: bool = False):
        super().__init__()
        from leed_traffic.observations import PHASE_FEATURES

        F = self.features = PHASE_FEATURES
        bad = [s.agent for s in specs if s.obs_dim != s.n_actions * F]
        if bad:
            raise ValueError(
                f"the phase policy needs the 'phase' observation ({F} features per green phase); "
                f"agents {bad[:3]} have other observation sizes: set env.observation=phase")
        self.specs = {s.agent: s for s in specs}
        self.agents = [s.agent for s in specs]
        self.share, self.centralized = True, bool(centralized_critic)
        self.max_actions = max(s.n_actions for s in specs)
        self.max_obs = self.max_actions * F
        self.obs_dims = [s.obs_dim for s in specs]
        self.hidden = tuple(hidden)
        H = hidden[-1]
        self.actor_embed = _mlp([F, *hidden], None)
        self.actor_head = _mlp([2 * H, H, 1], 0.01)
        self.critic_embed = _mlp([F, *hidden], None)
        self.critic_head = _mlp([2 * H, H, 1], 1.0)
        if self.centralized:
            # created only here, so a decentralized policy's init (torch RNG draws) is unchanged;
            # output layer 0: the centralized critic starts as the decentralized one
            self.critic_city = _mlp([2 * H + 4 * F, H, 1], 0.0)
        valid = torch.zeros(len(specs), 1, self.max_actions, dtype=torch.bool)
        for i, s in enumerate(specs):
            valid[i, :, : s.n_actions] = True
        self.register_buffer("valid", valid, persistent=False)

    pad = MultiAgentPolicy.pad

    def _phases(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(*padded.shape[:-1], self.max_actions, self.features)

    def _pool(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Masked mean over phases of [..., P, H] -> [..., H]."""
        m = valid.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(-2) / m.sum(-2).clamp(min=1.0)

    def _max(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Masked max over phases of [..., P, H] -> [..., H] (every agent has a phase)."""
        return h.masked_fill(~valid.unsqueeze(-1), MASKED_LOGIT).max(-2).values

    def city_context(self, padded: torch.Tensor) -> torch.Tensor:
        """[A, B, max_obs] -> [B, 4 F]: mean and max over agents of each agent's (mean, max) raw
        phase features at the same column. Fixed-size and invariant to the order of agents and
        phases, so it exists on any city; ``padded`` must hold all agents of the same instants."""
        valid = self.valid.expand(*padded.shape[:-1], -1)
        x = self._phases(padded)
        per_agent = torch.cat([self._pool(x, valid), self._max(x, valid)], -1)  # [A, B, 2F]
        return torch.cat([per_agent.mean(0), per_agent.max(0).values], -1)

    def critic_input(self, padded: torch.Tensor, global_obs: torch.Tensor | None = None) -> torch.Tensor:
        """Decentralized: the own observation. Centralized: [own observation, ``city_context``]
        per (agent, column), so a minibatch may take each agent's rows at different columns.
        (``global_obs``: ``MultiAgentPolicy``'s interface; unused.)"""
        if not self.centralized:
            return padded
        ctx = self.city_context(padded).unsqueeze(0).expand(padded.shape[0], -1, -1)
        return torch.cat([padded, ctx], -1)

    def logits(self, padded: torch.Tensor) -> torch.Tensor:
        valid = self.valid.expand(*padded.shape[:-1], -1)
        h = self.actor_embed(self._phases(padded))  # [A, B, P, H]
        ctx = self._pool(h, valid).unsqueeze(-2).expand_as(h)
        score = self.actor_head(torch.cat([h, ctx], -1)).squeeze(-1)
        return score.masked_fill(~valid, MASKED_LOGIT)

    def dist(self, padded: torch.Tensor) -> Categorical:
        return Categorical(logits=self.logits(padded))

    def value(self, critic_in: torch.Tensor) -> torch.Tensor:
        """[A, B, C] (from ``critic_input``) -> [A, B]."""
        valid = self.valid.expand(*critic_in.shape[:-1], -1)
        h = self.critic_embed(self._phases(critic_in[..., : self.max_obs]))
        own = torch.cat([self._pool(h, valid), self._max(h, valid)], -1)
        v = self.critic_head(own)
        if self.centralized:
            v = v + self.critic_city(torch.cat([own, critic_in[..., self.max_obs:]], -1))
        return v.squeeze(-1)

    act_padded = MultiAgentPolicy.act_padded
    act_batch = MultiAgentPolicy.act_batch

    def actor_module(self, agent: str, *, with_action: bool = False) -> "PhaseActor":
        """``agent``'s actor as a stand-alone module: obs [B, n_phases x features] -> logits."""
        return PhaseActor(self, agent, with_action=with_action).eval()

    def transferable_state(self) -> dict[str, torch.Tensor]:
        """The weights, which fit any set of agents (what ``pretrained`` files hold)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_transferable(self, state: dict[str, torch.Tensor]) -> None:
        """Load a phase policy's weights (a pretrained file, a run's policy.pt) whatever its critic:
        a decentralized file into a centralized policy leaves the city term at its fresh init
        (output 0: V starts as the file's critic), a centralized file into a decentralized policy
        drops it. Anything else must match exactly (``load_state_dict``'s errors)."""
        own = self.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.startswith(self.CITY_PREFIX)}
        fresh = [k for k in own if k not in state and k.startswith(self.CITY_PREFIX)]
        self.load_state_dict({**state, **{k: own[k] for k in fresh}})


class PhaseActor(nn.Module):
    """One agent's actor out of a ``PhasePolicy`` (exportable like ``AgentActor``)."""

    def __init__(self, policy: PhasePolicy, agent: str, with_action: bool = False):
        super().__init__()
        import copy

        self.embed = copy.deepcopy(policy.actor_embed).requires_grad_(False)
        self.head = copy.deepcopy(policy.actor_head).requires_grad_(False)
        self.n_actions = policy.specs[agent].n_actions
        self.features = policy.features
        self.with_action = with_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(obs.reshape(obs.shape[0], self.n_actions, self.features))
        ctx = h.mean(1, keepdim=True).expand_as(h)
        logits = self.head(torch.cat([h, ctx], -1)).squeeze(-1)
        if self.with_action:
            return logits, torch.argmax(logits, dim=-1)
        return logits


POLICIES: tuple[str, ...] = ("mlp", "phase")
"""``TrainConfig.policy``: per-agent MLPs (``MultiAgentPolicy``) or the shared phase scorer (``PhasePolicy``)."""


def build_policy(spec: "EnvSpec", config: "TrainConfig") -> MultiAgentPolicy | PhasePolicy:
    """A freshly initialised policy for the env ``spec`` with ``config``'s architecture (draws
    from torch's RNG: the orthogonal init); with ``config.init_policy`` its weights are then
    replaced by that file's (``pretrained``: the shipped policy; fine-tuning starts there)."""
    specs = [AgentSpec(a, spec.obs_dims[a], spec.n_actions[a]) for a in spec.agents]
    if config.policy == "phase":
        policy: MultiAgentPolicy | PhasePolicy = PhasePolicy(specs, config.hidden_sizes,
                                                             config.use_centralized_critic)
    else:
        policy = MultiAgentPolicy(specs, config.hidden_sizes, config.share_parameters,
                                  config.use_centralized_critic)
    if config.init_policy:
        from leed_traffic.learn.pretrained import load_weights

        if not isinstance(policy, PhasePolicy):
            raise ValueError("init_policy needs train.policy=phase (only the phase policy transfers between networks)")
        policy.load_transferable(load_weights(config.init_policy, config.hidden_sizes))
    return policy


class AgentActor(nn.Module):
    """One agent's actor out of a ``MultiAgentPolicy`` (see ``MultiAgentPolicy.actor_module``).

    Plain tensor operations on the agent's slice of the stacked weights (pad the observation to
    the policy's width, append the one-hot agent id when parameters are shared, MLP with tanh,
    keep the agent's own actions), so ``torch.onnx.export`` and ``torch.jit.trace`` handle it.
    """

    def __init__(self, policy: MultiAgentPolicy, agent: str, with_action: bool = False):
        super().__init__()
        i = policy.agents.index(agent)
        spec = policy.specs[agent]
        s = 0 if policy.share else i
        self.weights = nn.ParameterList([nn.Parameter(w[s].detach().clone(), requires_grad=False)
                                         for w in policy.actor.weights])
        self.biases = nn.ParameterList([nn.Parameter(b[s, 0].detach().clone(), requires_grad=False)
                                        for b in policy.actor.biases])
        self.pad = policy.max_obs - spec.obs_dim
        self.share = bool(policy.share)
        onehot = torch.zeros(len(policy.agents))
        onehot[i] = 1.0
        self.register_buffer("onehot", onehot)
        self.n_actions = spec.n_actions
        self.with_action = with_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.pad(obs, (0, self.pad))
        if self.share:
            x = torch.cat([x, self.onehot.expand(x.shape[0], -1)], dim=-1)
        n = len(self.weights)
        for k in range(n):
            x = torch.matmul(x, self.weights[k]) + self.biases[k]
            if k < n - 1:
                x = torch.tanh(x)
        logits = x[:, : self.n_actions]
        if self.with_action:
            return logits, torch.argmax(logits, dim=-1)
        return logits


def clip_grad_norm_per_agent(policy: MultiAgentPolicy, max_norm: float) -> torch.Tensor:
    """Clip each agent's gradient norm separately (what per-agent optimizers would do).

    Shared parameters (S = 1) are one network: their norm is clipped as a whole.
    Returns the per-stack norms before clipping.
    """
    if not getattr(policy, "stacked", True):
        return torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm).reshape(1)
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    S = grads[0].shape[0]
    sq = torch.zeros(S)
    for g in grads:
        sq += g.pow(2).reshape(S, -1).sum(1)
    norms = sq.sqrt()
    scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.reshape(S, *([1] * (g.dim() - 1))))
    return norms
