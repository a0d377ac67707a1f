"""Losses: PPO (clipped surrogate + value + entropy), the expert loss, and LEED's mix.

Per agent i:   L_i = L_PPO,i + w_i * L_E,i,   L_E,i = -mean_j log pi_i(a_e,j | o_e,j)
over a minibatch of agent i's demonstrations. IPPO/MAPPO are w_i = 0; behaviour cloning is the
expert loss alone. Kept as pure functions of tensors so each term is testable by hand. Every
function reduces over the *last* dimension only, so [A, B] inputs give one loss per agent [A]
(the trainer evaluates all agents at once) and 1-D inputs give scalars.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from leed_traffic.learn.policy import MASKED_LOGIT


@dataclass
class PPOTerms:
    loss: torch.Tensor
    pg_loss: torch.Tensor
    v_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def ppo_loss(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip_coef: float,
    vf_coef: float,
    ent_coef: float,
    clip_vloss: bool = True,
    norm_adv: bool = True,
) -> PPOTerms:
    """CleanRL's PPO loss: pg_loss - ent_coef * entropy + vf_coef * v_loss (per row)."""
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean(-1)
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean(-1)
    if norm_adv and advantages.shape[-1] > 1:
        advantages = (advantages - advantages.mean(-1, keepdim=True)) / (
            advantages.std(-1, keepdim=True) + 1e-8)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg1, pg2).mean(-1)
    if clip_vloss:
        v_unclipped = (new_value - returns) ** 2
        v_clipped = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean(-1)
    else:
        v_loss = 0.5 * ((new_value - returns) ** 2).mean(-1)
    ent = entropy.mean(-1)
    loss = pg_loss - ent_coef * ent + vf_coef * v_loss
    return PPOTerms(loss, pg_loss, v_loss, ent, approx_kl, clipfrac)


def expert_loss(
    logits: torch.Tensor, expert_actions: torch.Tensor, sample_weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """-mean_j m_j [(1 - eps) log pi(a_e,j | o_e,j) + eps mean_{legal a} log pi(a | o_e,j)].

    m_j = 1 unless a gate or RELED masks the sample. The mean is over all samples (not over the
    unmasked ones), so masking shrinks the loss in proportion to the fraction of states where the
    expert is no longer better. ``smoothing`` (eps, ``TrainConfig.expert_label_smoothing``) is
    label smoothing over the legal phases (logits above ``MASKED_LOGIT / 2``): the clone's target
    keeps eps of its mass spread over every phase, so its entropy cannot collapse to 0 and PPO
    still samples (and can learn from) the phases the demonstrator never chose.
    """
    logsm = torch.log_softmax(logits, dim=-1)
    logp = logsm.gather(-1, expert_actions.long()[..., None]).squeeze(-1)
    if smoothing > 0.0:
        legal = (logits > MASKED_LOGIT / 2).float()
        uniform = (logsm * legal).sum(-1) / legal.sum(-1).clamp(min=1.0)
        logp = (1.0 - smoothing) * logp + smoothing * uniform
    if sample_weight is not None:
        logp = logp * sample_weight
    return -logp.mean(-1)


def mixed_loss(ppo: torch.Tensor, expert: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """LEED: L = L_PPO + w * L_E (w a float, or one weight per agent row)."""
    return ppo + weight * expert
