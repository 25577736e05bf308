"""Temperature + nucleus (top-p) sampling for ``model.generate``, without the argsort.

transformers' ``TopPLogitsWarper`` argsorts every step's scores to find the nucleus. On CPU
``torch.sort`` is slow because it also builds the indices, where sorting the values alone (numpy) is
many times cheaper, and the warper was a sizeable share of the RL rollout's ``generate`` on the tiny
profile (``bench/bench_rl_step.py`` in bench/RESULTS.md). The nucleus needs no indices:
the tokens cut are those scoring below the first sorted value kept, so one threshold per row does.

``nucleus_kwargs`` hands ``generate`` temperature 1 and top-p 1 (so it builds neither warper) and
this processor instead. transformers applies custom processors after its own (the repetition
penalty) and before the warpers it would have built, so the order is transformers' own: repetition
penalty, temperature, top-p. The samples equal transformers' token for token
(``tests/test_nucleus.py``) except where two tokens tie exactly at the nucleus' edge: transformers
cuts the one its unstable sort happens to put first, this keeps both.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList


class NucleusWarper(LogitsProcessor):
    """``scores / temperature``, then ``-inf`` below the nucleus of mass ``top_p`` (at least one token kept)."""

    def __init__(self, temperature: float, top_p: float) -> None:
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"NucleusWarper: temperature must be > 0 and top_p in (0, 1], got {temperature}, {top_p}")
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        ascending = sorted_values(scores)
        mass = ascending.softmax(dim=-1).cumsum(dim=-1)
        # positions transformers cuts: cumulative mass from the bottom <= 1 - top_p, never the top one
        cut = (mass <= 1 - self.top_p).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        return scores.masked_fill(scores < ascending.gather(-1, cut), -float("inf"))


def sorted_values(scores: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending, values only: numpy's sort on CPU (no indices to build), torch's elsewhere."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(scores.detach().numpy(), axis=-1))
    return torch.sort(scores, dim=-1).values


def nucleus_kwargs(temperature: float, top_p: float) -> dict:
    """``generate`` settings for temperature / nucleus sampling through ``NucleusWarper`` (top-k off)."""
    return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "logits_processor": LogitsProcessorList([NucleusWarper(temperature, top_p)])}
