"""Reward shaping against a cross-prompt collapse: one string sampled for many prompts pays for it.

``rl.diversity_coef`` (``advantages.duplicate_shares``) compares a sample with the other samples of
its *own* prompt, so it cannot see the collapse the real pairs showed (issue 12): one
prompt-independent string ("easynegative") that a random reward net happens to like, sampled for every
prompt of the step. This term compares a sample with the samples of the *other* prompts of the step.

Shapes as in ``advantages.py``: ``B`` prompts, ``k`` samples each, ``N = B * k``, prompt-major.
"""

from __future__ import annotations

from collections import Counter

import torch


def cross_prompt_shares(negatives: list[str], k: int) -> torch.Tensor:
    """Per sample, the share of the step's samples of *other* prompts that are the same string.

    ``c_i = #{j : group(j) != group(i), y_j == y_i} / (N - k)``, in [0, 1]: 0 when no other prompt
    sampled ``y_i``, 1 when every sample of every other prompt is ``y_i``. ``rl.cross_diversity_coef x c``
    is subtracted from the reward before the RLOO baseline, so within a group the sample that repeats
    what other prompts say loses advantage against its siblings that do not. A single prompt (``N == k``)
    has no others: all zeros. negatives: [N] prompt-major. Returns [N].
    """
    n = len(negatives)
    if k < 1 or n % k:
        raise ValueError(f"{n} negatives do not split into groups of k={k}")
    if n == k:
        return torch.zeros(n)
    everywhere = Counter(negatives)
    out = []
    for g in range(0, n, k):
        own = Counter(negatives[g:g + k])
        out += [(everywhere[y] - own[y]) / (n - k) for y in negatives[g:g + k]]
    return torch.tensor(out, dtype=torch.float32)
