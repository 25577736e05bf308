"""Paired bootstrap intervals: crafted cases whose intervals are known without running a bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from negopt.compare.gains import add_intervals, compare_methods, gains_markdown
from negopt.compare.intervals import (
    excludes_zero,
    interval,
    resample_counts,
    resampled_inception_score,
    resampled_mean,
)
from negopt.images.scorers import inception_kl


def test_resample_counts_draw_p_prompts_with_replacement():
    w = resample_counts(5, 200, seed=3)
    assert w.shape == (200, 5) and (w.sum(axis=1) == 5).all() and (w >= 0).all()
    assert (w == resample_counts(5, 200, seed=3)).all() and not (w == resample_counts(5, 200, seed=4)).all()
    assert (w != 1).any()  # some prompt drawn twice: with replacement


def test_two_prompt_mean_interval_by_hand():
    """Prompts with means 0 and 2: a resample draws (0,0), (0,2) or (2,2) -> means 0, 1, 2 with
    probabilities 1/4, 1/2, 1/4, so the 95% percentile interval is [0, 2]."""
    w = resample_counts(2, 4000, seed=0)
    means = resampled_mean(np.array([[0.0, 0.0], [2.0, 2.0]]), w)
    assert set(np.round(means, 12)) == {0.0, 1.0, 2.0}
    assert np.mean(means == 1.0) == pytest.approx(0.5, abs=0.03)
    assert interval(means, 0.95) == (0.0, 2.0)


def test_inception_score_of_the_full_sample_matches_the_kl_definition():
    """With every prompt drawn once, IS = exp(mean_i KL(p_i || q)) (metrics.inception_kl); one-hot
    posteriors on P distinct classes give IS = P exactly."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=(4, 3))  # [P=4, S=3, C=7]
    flat = torch.from_numpy(probs.reshape(12, 7))
    expected = float(torch.exp(inception_kl(flat, flat.mean(0)).mean()))
    assert resampled_inception_score(probs, np.ones((1, 4)))[0] == pytest.approx(expected, rel=1e-9)
    one_hot = np.eye(5)[:, None, :].repeat(2, axis=1)  # prompt p's two images both certain of class p
    assert resampled_inception_score(one_hot, np.ones((1, 5)))[0] == pytest.approx(5.0)
    # a resample drawing prompt 0 twice and prompt 1..3 once: q has mass 2/5 on class 0 -> IS = exp(H(q))
    q = np.array([2, 1, 1, 1, 0]) / 5
    w = np.array([[2.0, 1, 1, 1, 0]])
    assert resampled_inception_score(one_hot, w)[0] == pytest.approx(np.exp(-(q[q > 0] * np.log(q[q > 0])).sum()))


def scores_for(values: dict[str, np.ndarray], probs: dict[str, np.ndarray] | None = None):
    """A per-image frame for methods with ``values[m] [P, S]`` as both aesthetic and CLIP score."""
    rows, out_probs = [], {}
    rng = np.random.default_rng(1)
    for m, v in values.items():
        num_prompts, seeds = v.shape
        for p in range(num_prompts):
            for s in range(seeds):
                rows.append(dict(method=m, prompt_idx=p, prompt=f"p{p}", seed=100 + s, file=f"{m}/{p}_{s}.png",
                                 aesthetic=v[p, s], clip_score=v[p, s]))
        out_probs[m] = (probs or {}).get(m, rng.dirichlet(np.ones(6), size=v.size))
    return pd.DataFrame(rows), out_probs


def eval_row(v: np.ndarray, is_: float = 2.0) -> dict:
    return {"inception_score": is_, "inception_score_std": 0.1, "aesthetic": float(v.mean()),
            "clip_score": float(v.mean()), "n_images": v.size}


def test_constant_shift_gives_a_zero_width_interval_at_the_shift():
    """Every candidate image scores the baseline's image + 0.5: each resample's difference is 0.5."""
    rng = np.random.default_rng(2)
    base = rng.normal(10.0, 3.0, size=(20, 2))
    values = {"none": base, "sft": base + 0.5, "generic": np.full((20, 2), 4.0), "rl": np.full((20, 2), 5.0)}
    scores, probs = scores_for(values)
    ev = {m: eval_row(v) for m, v in values.items()}
    c = add_intervals(compare_methods(ev, ["sft", "rl"], ["none", "generic"]), scores, probs, 500, 0, 0.95)
    ci = c["sft"]["vs_none"]["ci"]["aesthetic"]
    assert ci["diff_low"] == pytest.approx(0.5) and ci["diff_high"] == pytest.approx(0.5)
    assert ci["excludes_zero"] and ci["low"] > 0
    # a constant baseline and a constant shift: the percent gain too is the same in every resample, 100 * 1/4
    flat = c["rl"]["vs_generic"]["ci"]["clip_score"]
    assert flat["low"] == pytest.approx(25.0) and flat["high"] == pytest.approx(25.0) and flat["estimate"] == 25.0
    assert "25.0%, +25.0%]*" in gains_markdown(c)
    # rows are matched by (prompt, seed), not by position: one method's rows (and posteriors) reversed
    # still pair each image with its own baseline image
    rev = scores[scores.method == "sft"].index[::-1]
    shuffled = pd.concat([scores[scores.method != "sft"], scores.loc[rev]], ignore_index=True)
    probs_rev = probs | {"sft": probs["sft"][::-1].copy()}
    c2 = add_intervals(compare_methods(ev, ["sft"], ["none"]), shuffled, probs_rev, 500, 0, 0.95)
    assert c2["sft"]["vs_none"]["ci"]["aesthetic"]["diff_low"] == pytest.approx(0.5)
    assert c2["sft"]["vs_none"]["ci"]["inception_score"] == c["sft"]["vs_none"]["ci"]["inception_score"]


def test_identical_methods_give_an_interval_at_zero_and_a_shuffled_copy_one_around_zero():
    rng = np.random.default_rng(3)
    base = rng.normal(10.0, 3.0, size=(30, 2))
    probs = rng.dirichlet(np.ones(6), size=60)
    # "sft" is "none" exactly (also its posteriors); "rl" swaps the two seeds' values within each prompt,
    # so its per-prompt means equal none's but per-image pairs differ
    values = {"none": base, "sft": base.copy(), "rl": base[:, ::-1].copy()}
    scores, probs_by = scores_for(values, {"none": probs, "sft": probs.copy(),
                                           "rl": probs.reshape(30, 2, 6)[:, ::-1].reshape(60, 6).copy()})
    ev = {m: eval_row(v) for m, v in values.items()}
    c = add_intervals(compare_methods(ev, ["sft", "rl"], ["none"]), scores, probs_by, 300, 1, 0.95)
    for method in ("sft", "rl"):
        for metric in ("inception_score", "aesthetic", "clip_score"):
            ci = c[method]["vs_none"]["ci"][metric]
            assert ci["low"] == pytest.approx(0.0, abs=1e-9) and ci["high"] == pytest.approx(0.0, abs=1e-9)
            assert not ci["excludes_zero"]
    # a noisy candidate with no true effect: the interval straddles 0
    values["generic"] = base + rng.normal(0.0, 3.0, size=base.shape)
    scores, probs_by = scores_for(values)
    ev = {m: eval_row(v) for m, v in values.items()}
    ci = add_intervals(compare_methods(ev, ["generic"], ["none"]), scores, probs_by, 500, 0, 0.95)
    ci = ci["generic"]["vs_none"]["ci"]["aesthetic"]
    assert ci["low"] < 0 < ci["high"] and not ci["excludes_zero"]


def test_intervals_refuse_methods_rendered_on_different_seeds():
    base = np.arange(8.0).reshape(4, 2)
    scores, probs = scores_for({"none": base, "sft": base})
    scores.loc[scores.method == "sft", "seed"] += 1
    ev = {m: eval_row(base) for m in ("none", "sft")}
    with pytest.raises(ValueError, match="same prompts and seeds"):
        add_intervals(compare_methods(ev, ["sft"], ["none"]), scores, probs, 100, 0, 0.95)


def test_excludes_zero():
    assert excludes_zero((0.1, 2.0)) and excludes_zero((-2.0, -0.1))
    assert not excludes_zero((-0.1, 2.0)) and not excludes_zero((0.0, 1.0)) and not excludes_zero(None)


def test_oracle_rates_are_compared_by_their_difference_with_a_paired_interval():
    """A defect rate whose baseline is 0 has no percent gain, but its difference answers: sft removes the blur
    of prompts 0-4 of 10 (rate 0.5 -> 0): diff -0.5; the rl rate 0 vs none 0 is exactly 0 in every resample."""
    from negopt.compare.gains import ORACLE, compared_metrics, oracle_gains_markdown, oracle_markdown

    blur = {"none": np.r_[np.ones(5), np.zeros(5)][:, None], "sft": np.zeros((10, 1)), "rl": np.zeros((10, 1))}
    scores, probs = scores_for({m: np.zeros((10, 1)) for m in blur})
    oracle = {k: 0.5 for k in ORACLE}
    ev = {m: eval_row(np.zeros((10, 1))) | oracle | {"rate_blur": float(b.mean())} for m, b in blur.items()}
    for k in ORACLE:
        scores[k] = 0.5
    for m, b in blur.items():
        scores.loc[scores["method"] == m, "rate_blur"] = b[:, 0]
    assert set(ORACLE) <= set(compared_metrics(ev))
    c = add_intervals(compare_methods(ev, ["sft", "rl"], ["none"]), scores, probs, 500, 0, 0.95)
    ci = c["sft"]["vs_none"]["ci"]["rate_blur"]
    assert ci["diff"] == -0.5 and ci["diff_high"] < 0 and ci["diff_excludes_zero"]
    assert c["sft"]["vs_none"]["rate_blur"] == pytest.approx(-100.0)
    zero = c["rl"]["vs_none"]["ci"]["true_quality"]
    assert (zero["diff"], zero["diff_low"], zero["diff_high"], zero["diff_excludes_zero"]) == (0.0, 0.0, 0.0, False)
    assert "| sft | none |" in oracle_gains_markdown(c) and "-0.500 [" in oracle_gains_markdown(c)
    assert oracle_markdown(ev).splitlines()[2].startswith("| none | 0.500 | 0.500 |")
    assert oracle_markdown({m: eval_row(np.zeros((10, 1))) for m in blur}) == ""  # no oracle, no table
