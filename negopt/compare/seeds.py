"""The diffusion seeds of the comparison: each a hash of (seed, prompt index, j), the same for every method, so
images differ only by their negative; and stable when counts change (prompt 3's seeds do not move when a fifth
prompt is added)."""

from __future__ import annotations

import numpy as np


def image_seed(seed: int, prompt_idx: int, j: int) -> int:
    """The j-th diffusion seed of a prompt: a hash of (seed, prompt_idx, j), stable when counts change."""
    return int(np.random.SeedSequence([seed, prompt_idx, j]).generate_state(1)[0] & 0x7FFFFFFF)


def prompt_seeds(seed: int, num_prompts: int, seeds_per_prompt: int) -> list[list[int]]:
    return [[image_seed(seed, i, j) for j in range(seeds_per_prompt)] for i in range(num_prompts)]
