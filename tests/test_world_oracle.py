"""The oracle: paired differences by hand, likely contents, and the truth read back from renders."""

import numpy as np
import pytest

from negopt.world.defects import DEFECTS, DRAW_RATES, draw_rates
from negopt.world.detectors import calibrate
from negopt.world.oracle import judge, likely_contents, negative_conditions, paired
from negopt.world.quality import image_quality
from negopt.world.scenes import render, sample_scenes, truth_frame


def test_paired_by_hand():
    d = paired([1, 1, 0, 1], [0, 1, 0, 0])  # differences 1, 0, 0, 1
    assert d.mean == 0.5 and d.n == 4
    assert d.se == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
    assert d.z == pytest.approx(0.5 / d.se)
    assert paired([0, 0], [0, 0]).z == 0.0


def test_likely_contents_carry_the_defects_top_rate():
    rng = np.random.default_rng(0)
    for d in DEFECTS:
        top = max(DRAW_RATES[d][1].values())
        contents = likely_contents(d, 50, rng)
        assert all(draw_rates(c)[d] == top for c in contents), d
        assert len({c.text() for c in contents}) > 10  # the other attributes still vary


def test_conditions_name_each_defect_once():
    conditions = negative_conditions()
    assert conditions["none"] == "" and "ugly" in conditions["control"]
    assert [conditions[d] for d in DEFECTS] == ["blurry", "washed out", "watermark", "grainy"]


def test_judge_reads_renders_close_to_their_truth():
    scenes = sample_scenes(900, seed=5)
    calibration = calibrate(render(scenes[:600]), truth_frame(scenes[:600]))
    held = scenes[600:]
    judged = judge(render(held), calibration, [s.content for s in held])
    truth = truth_frame(held)
    for d in DEFECTS:
        assert (judged[f"{d}_found"] == (truth[d] > 0)).mean() >= 0.9, d
    assert judged["alignment"].mean() >= 0.9
    assert np.corrcoef(judged["image_quality"], image_quality(truth))[0, 1] >= 0.85
    assert (judged["true_quality"] <= judged["image_quality"] + 1e-12).all()


def test_oracle_scores_are_the_judged_truth_against_each_prompt():
    """The values evaluate stores: judge's columns for prompts as users write them (weights and filler around the
    scene), and a prompt naming another foreground colour misaligned on that attribute alone."""
    from negopt.core.errors import ParamsError
    from negopt.world.grammar import FOREGROUND
    from negopt.world.oracle import ORACLE_KEYS, oracle_scores

    scenes = sample_scenes(700, seed=6)
    calibration = calibrate(render(scenes[:600]), truth_frame(scenes[:600]))
    held, images = scenes[600:], render(scenes[600:])
    judged = judge(images, calibration, [s.content for s in held])
    prompts = [f"masterpiece, (best quality:1.2), {s.content.text()}" for s in held]
    scores = oracle_scores(images, prompts, calibration)
    assert tuple(scores) == ORACLE_KEYS
    np.testing.assert_allclose(scores["true_quality"], judged["true_quality"])
    for d in DEFECTS:
        np.testing.assert_array_equal(scores[f"rate_{d}"], judged[f"{d}_found"].astype(float))
    other = [p.replace(f" {s.content.fg} ", f" {next(c for c in FOREGROUND if c != s.content.fg)} ")
             for p, s in zip(prompts, held, strict=True)]
    swapped = oracle_scores(images, other, calibration)
    np.testing.assert_array_equal(swapped["align_fg"], 0.0 * judged["fg_ok"])  # never the colour asked for
    np.testing.assert_array_equal(swapped["align_bg"], judged["bg_ok"].astype(float))
    with pytest.raises(ParamsError, match="data.source: world"):
        oracle_scores(images[:1], ["a portrait of a cat"], calibration)
