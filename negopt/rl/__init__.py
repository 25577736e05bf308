"""Reinforcement learning of the negative-prompt policy on image rewards.

Pure maths (tested by hand): :mod:`advantages` (KL-penalised rewards, RLOO baseline, weighted reward),
:mod:`reward_stats` (term centre and scale), :mod:`loss` (RLOO and PPO-clip). Model-facing: :mod:`policy`
(sampling, decoder log-probs), :mod:`rewards` (the weighted reward over ``negopt.reward_terms``' registry,
its calibration, scoring triples), ``negopt.sharding`` (sharding over accelerate processes), :mod:`loop`
(``run_rl``), :mod:`checkpoint` (resumable state), :mod:`live` (dvclive files on resume), :mod:`evaluate`
(SFT vs RL on test prompts, paired), :mod:`health`, :mod:`card`.
"""

from negopt.rl.advantages import kl_penalised_rewards, rloo_advantages, weighted_reward
from negopt.rl.loss import policy_loss, ppo_clip_loss, rloo_loss
from negopt.rl.reward_stats import TermStats

__all__ = ["TermStats", "kl_penalised_rewards", "policy_loss", "ppo_clip_loss", "rloo_advantages", "rloo_loss",
           "weighted_reward"]
