"""Policy-gradient losses for the sequence-level policy ``pi(y | x)``.

Notation: ``x`` prompt, ``y`` sampled negative, ``log pi(y|x)`` summed over generated tokens,
``A`` the advantage from :mod:`negopt.rl.advantages` (KL-penalised reward minus the RLOO baseline).

RLOO (default, one gradient step per batch)::

    L = -mean_i( A_i * log pi(y_i | x_i) )         A_i treated as a constant

PPO-clip (``rl.algo: ppo``, ``rl.ppo.epochs`` steps per batch)::

    rho_i = exp(log pi(y_i|x_i) - log pi_old(y_i|x_i))
    L = mean_i( max(-A_i * rho_i, -A_i * clip(rho_i, 1 - eps, 1 + eps)) )

The KL to the frozen SFT reference is **not** in these losses: it is the k1 estimator
``log pi(y|x) - log pi_ref(y|x)`` subtracted from the reward (``kl_penalised_rewards``), as in trl's
RLOO. GRPO instead adds a per-token KL estimator to the loss; one place for the KL keeps it simple.
"""

from __future__ import annotations

import torch


def rloo_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE with the RLOO baseline. logp, advantages: [N]. Returns a scalar."""
    return -(advantages.detach() * logp).mean()


def ppo_clip_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate on sequence log-probs. All inputs [N]; returns (scalar loss, stats).

    stats: ``clip_frac`` (share of samples whose ratio left [1-eps, 1+eps]) and ``approx_kl``
    (``mean(log pi_old - log pi)``, the k1 estimate of KL(pi_old || pi) drift since the rollout).
    """
    adv = advantages.detach()
    log_ratio = logp - logp_old.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "clip_frac": ((ratio - 1.0).abs() > clip_range).float().mean().item(),
            "approx_kl": (-log_ratio).mean().item(),
        }
    return loss, stats


def policy_loss(
    algo: str,
    logp: torch.Tensor,
    advantages: torch.Tensor,
    logp_old: torch.Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Dispatch on ``rl.algo`` (``rloo`` | ``ppo``)."""
    if algo == "rloo":
        return rloo_loss(logp, advantages), {}
    if algo == "ppo":
        if logp_old is None:
            raise ValueError("rl.algo=ppo needs logp_old, the log-probs recorded at rollout time")
        return ppo_clip_loss(logp, logp_old, advantages, clip_range)
    raise ValueError(f"rl.algo: unknown algorithm {algo!r}; use rloo or ppo")
