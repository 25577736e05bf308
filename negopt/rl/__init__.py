"""The RL stage: the loop and its parts.

Pure maths (tested by hand): :mod:`advantages` (KL-penalised rewards, the RLOO baseline), :mod:`loss` (RLOO
and PPO-clip). The loop: :mod:`loop` (``run_rl``: calibrate, then step after step), :mod:`selection` (which
step's weights ship), :mod:`checkpoint` (resumable state), :mod:`live` (dvclive files on resume). After
training: :mod:`heldout` (SFT vs RL on the test prompts, paired), :mod:`health`, :mod:`card`.
"""
