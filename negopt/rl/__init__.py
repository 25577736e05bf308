"""Reinforcement learning of the negative-prompt policy on image rewards.

Pure maths (tested by hand): :mod:`advantages` (KL-penalised rewards, RLOO baseline, term statistics),
:mod:`loss` (RLOO and PPO-clip). Model-facing: :mod:`policy` (sampling, decoder log-probs),
:mod:`rewards` (plug-in reward functions), ``negopt.sharding`` (sharding over accelerate processes),
:mod:`loop` (``run_rl``), :mod:`evaluate` (SFT vs RL on test prompts, paired).
"""

from negopt.rl.advantages import TermStats, kl_penalised_rewards, rloo_advantages, weighted_reward
from negopt.rl.loss import policy_loss, ppo_clip_loss, rloo_loss

__all__ = ["TermStats", "kl_penalised_rewards", "policy_loss", "ppo_clip_loss", "rloo_advantages", "rloo_loss",
           "weighted_reward"]
