"""The cross-prompt diversity term (negopt/rl/shaping.py), by hand."""

from __future__ import annotations

import pytest
import torch

from negopt.rl.loop import compute_advantages
from negopt.rl.shaping import cross_prompt_shares

# two prompts, k=4: prompt 1 says "a" twice, prompt 2 once; "d" twice but only within prompt 2
NEGS = ["a", "a", "b", "c", "a", "d", "d", "e"]


def test_cross_prompt_shares_by_hand():
    # N - k = 4 samples of the other prompt. Prompt 1's "a": 1 "a" in prompt 2 -> 1/4; prompt 2's "a": 2/4.
    # "d" repeats only inside its own prompt: 0 (that is duplicate_shares' job, not this term's).
    assert cross_prompt_shares(NEGS, k=4).tolist() == pytest.approx([0.25, 0.25, 0, 0, 0.5, 0, 0, 0])
    assert cross_prompt_shares(["x"] * 6, k=2).tolist() == pytest.approx([1.0] * 6)  # one string everywhere
    assert cross_prompt_shares(["x", "x", "x"], k=3).tolist() == [0, 0, 0]  # one prompt: no others


def test_cross_prompt_shares_rejects_ragged_groups():
    with pytest.raises(ValueError, match="groups of k=3"):
        cross_prompt_shares(NEGS, k=3)


def test_cross_diversity_term_moves_the_rloo_advantages_by_hand():
    zero = torch.zeros(8)
    adv, pen, _ = compute_advantages(zero, zero, zero, kl_coef=0.0, k=4, negatives=NEGS, cross_diversity_coef=2.0)
    assert pen.tolist() == pytest.approx([-0.5, -0.5, 0, 0, -1.0, 0, 0, 0])
    # RLOO, prompt 1: each "a" -0.5 - (-0.5)/3 = -1/3, "b" and "c" 0 - (-1)/3 = +1/3;
    # prompt 2: its "a" -1 - 0 = -1, the others 0 - (-1)/3 = +1/3
    assert adv.tolist() == pytest.approx([-1 / 3, -1 / 3, 1 / 3, 1 / 3, -1.0, 1 / 3, 1 / 3, 1 / 3])
    # coefficient 0 leaves the rewards alone
    adv0, pen0, _ = compute_advantages(zero, zero, zero, kl_coef=0.0, k=4, negatives=NEGS)
    assert pen0.abs().max() == 0 and adv0.abs().max() == 0
