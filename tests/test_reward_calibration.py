"""Reward calibration on hand-made terms: degenerate spreads are floored or refused, never divided by ~0.

Groups are rows ``g*k .. g*k+k-1`` (k images sharing a prompt and a seed), as in the RL loop.
"""

from __future__ import annotations

import math

import pytest
import torch

from negopt.images.scorers import ImageScorer
from negopt.reward.calibration import fit_term_stats
from negopt.reward.term_stats import DegenerateTermError, TermStats


def stats_of(values: list[float], k: int, floor: float, name: str = "t") -> TermStats:
    s = TermStats(names=(name,), floor=floor)
    s.update({name: torch.tensor(values, dtype=torch.float64)}, group_size=k)
    return s


def test_zero_within_group_spread_is_floored_to_a_share_of_the_global_std():
    # 3 groups of k=2, each group constant: within-group std 0; values 0,0,2,2,4,4 have mean 2 and
    # population std sqrt((4+4+0+0+4+4)/6) = sqrt(8/3)
    s = stats_of([0, 0, 2, 2, 4, 4], k=2, floor=0.1)
    g = math.sqrt(8 / 3)
    assert s.within_std("t") == 0.0 and s.std("t") == pytest.approx(g)
    assert s.scale("t") == pytest.approx(0.1 * g) and s.floored("t")
    z = s.standardise({"t": torch.tensor([4.0])})["t"]
    assert z.item() == pytest.approx(2 / (0.1 * g))  # ~12 scales, not 2e8 (the old eps=1e-8 rule)
    report = s.report()
    assert report["floored_t"] is True and report["scale_t"] == pytest.approx(0.1 * g)
    assert report["within_std_t"] == 0.0 and report["std_t"] == pytest.approx(g)


def test_zero_within_group_spread_without_a_floor_is_refused_naming_the_term():
    s = stats_of([0, 0, 2, 2, 4, 4], k=2, floor=0.0, name="clip")
    with pytest.raises(DegenerateTermError, match=r"'clip'.*no spread within.*reward\.scale_floor"):
        s.check_scales({"clip": 1.0})
    s.check_scales({"clip": 0.0})  # a dropped term needs no scale


def test_tiny_within_group_spread_is_floored_and_a_normal_one_is_not():
    # within-group differences of 1e-6 against a global spread of ~1: ratio 1e-6 < floor 0.05
    tiny = stats_of([0, 1e-6, 1, 1 + 1e-6, 2, 2 + 1e-6], k=2, floor=0.05)
    assert tiny.within_std("t") == pytest.approx(math.sqrt(3 * 0.5e-12 / 3), rel=1e-3)
    assert tiny.floored("t") and tiny.scale("t") == pytest.approx(0.05 * tiny.std("t"))
    # within-group std 1 (pairs 0/2 around means 1, 3, 5... ) is above 0.05 x the global std: kept as is
    normal = stats_of([0, 2, 2, 4, 4, 6], k=2, floor=0.05)
    assert normal.within_std("t") == pytest.approx(math.sqrt(2.0))  # each pair: ss 2, df 1
    assert not normal.floored("t") and normal.scale("t") == pytest.approx(math.sqrt(2.0))


def test_a_constant_term_is_refused_naming_its_weight_and_dropped_at_weight_zero():
    # the clamped CLIP score of long real prompts: every calibration image scores max(100 cos, 0) = 0
    s = stats_of([0.0] * 8, k=4, floor=0.05, name="clip")
    assert s.is_constant("clip") and s.scale("clip") == math.inf
    with pytest.raises(DegenerateTermError, match=r"'clip' is constant.*reward\.weights\.clip: 0.*reward\.calibration\.prompts"):
        s.check_scales({"clip": 1.0})
    # weight 0: the term is dropped, its z is 0 (finite), not (x - mean) / eps
    s.check_scales({"clip": 0.0})
    assert s.standardise({"clip": torch.tensor([5.0])})["clip"].item() == 0.0


def test_mostly_clamped_term_is_floored_and_the_cosine_keeps_its_spread():
    # unclamped 100 cos of two groups of k=4: all negative in group 1, barely positive in group 2
    cos = [-30.0, -20.0, -25.0, -10.0, 1.0, 1.01, 1.0, 1.01]
    clamped = [max(c, 0.0) for c in cos]  # [0, 0, 0, 0, 1, 1.01, 1, 1.01]: group 1's differences erased
    c = stats_of(clamped, k=4, floor=0.05)
    # within: group 2 only, ss = 4 x 0.005^2 = 1e-4 over df 2 x 3 = 6; global: mean 4.02 / 8 = 0.5025,
    # E[x^2] = (2 + 2 x 1.0201) / 8 = 0.505025, var = 0.505025 - 0.5025^2 = 0.25251875
    assert c.within_std("t") == pytest.approx(math.sqrt(1e-4 / 6), rel=1e-4)
    assert c.std("t") == pytest.approx(math.sqrt(0.25251875), rel=1e-4)
    assert c.floored("t") and c.scale("t") == pytest.approx(0.05 * c.std("t"))
    u = stats_of(cos, k=4, floor=0.05)
    # the cosine keeps group 1's spread: mean -21.25, ss 76.5625 + 1.5625 + 14.0625 + 126.5625 = 218.75
    assert u.within_std("t") == pytest.approx(math.sqrt((218.75 + 1e-4) / 6), rel=1e-5)
    assert not u.floored("t")


def test_reward_terms_clip_variants_by_hand():
    # 2-d embeddings: cos = -0.6 for row 0, 0.8 for row 1
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[-0.6, 0.8], [0.8, 0.6]])
    assert torch.allclose(ImageScorer.clip_cosine_from_embeddings(img, txt), torch.tensor([-60.0, 80.0]))
    assert torch.allclose(ImageScorer.clip_from_embeddings(img, txt), torch.tensor([0.0, 80.0]))


def test_calibrate_refuses_a_weighted_constant_term_before_training():
    probs = torch.full((4, 2), 0.5)
    terms = {"aesthetic": torch.tensor([1.0, 2.0, 3.0, 5.0]), "clip": torch.zeros(4),
             "fidelity": torch.tensor([0.1, 0.2, 0.1, 0.3])}
    with pytest.raises(DegenerateTermError, match="'clip'"):
        fit_term_stats(probs, lambda m: terms, group_size=2, floor=0.05,
                  weights={"aesthetic": 1.0, "clip": 1.0, "fidelity": 1.0})
    _, stats = fit_term_stats(probs, lambda m: terms, group_size=2, floor=0.05,
                         weights={"aesthetic": 1.0, "clip": 0.0, "fidelity": 1.0})
    assert stats.floor == 0.05 and stats.report()["constant_clip"] is True


def test_non_finite_calibration_values_are_refused():
    s = TermStats(names=("t",), floor=0.05)
    with pytest.raises(ValueError, match="'t': non-finite"):
        s.update({"t": torch.tensor([1.0, float("nan")])}, group_size=2)


def test_floor_round_trips_through_a_checkpoint_state():
    s = stats_of([0, 0, 2, 2], k=2, floor=0.2)
    t = TermStats()
    t.load_state_dict(s.state_dict())
    assert t.floor == 0.2 and t.scale("t") == pytest.approx(s.scale("t"))
