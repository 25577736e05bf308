"""The retrieval baseline (nearest training prompt's negative) and the paired ROUGE-L gains over it."""

from __future__ import annotations

import pytest

from negopt.retrieval import RetrievalIndex
from negopt.sft import paired_gain, score_sft


def test_nearest_training_prompt_by_tfidf_cosine():
    train_p = ["anime girl, pink hair, school uniform", "mountain landscape at dawn, mist", "anime girl, blue hair"]
    train_n = ["realistic, 3d", "people, text", "lowres, bad hands"]
    idx = RetrievalIndex(train_p, train_n)
    assert idx.predict(["anime girl with pink hair", "misty mountain landscape", "blue hair anime girl"]) == [
        "realistic, 3d", "people, text", "lowres, bad hands"]
    top, sims = idx.nearest(["mountain landscape"], k=3)
    assert top[0, 0] == 1 and sims[0, 0] > sims[0, 1] >= sims[0, 2] >= 0 and sims[0, 0] <= 1 + 1e-9
    # no shared word: every cosine is 0, and the tie goes to the first training row
    top, sims = idx.nearest(["zzz qqq"], k=2)
    assert top[0].tolist() == [0, 1] and sims[0].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        RetrievalIndex(train_p, train_n[:2])


def test_paired_gain_by_hand():
    gain, se = paired_gain([0.5, 0.7, 0.9], [0.4, 0.4, 0.4])  # differences 0.1, 0.3, 0.5
    assert gain == pytest.approx(0.3) and se == pytest.approx(0.2 / 3**0.5)


def test_score_sft_reports_each_baseline_and_the_gain_over_it():
    refs = ["ugly, blurry", "bad hands", "ugly, blurry"]
    preds = ["ugly, blurry", "bad hands", "text"]  # rougeL rows 1, 1, 0
    train_neg = ["text", "text", "ugly"]  # most frequent training negative: "text" (not the test's "ugly, blurry")
    s = score_sft(preds, refs, train_neg, baselines={"retrieval": ["ugly, blurry", "ugly", "ugly, blurry"]})
    assert s["rougeL"] == pytest.approx(2 / 3)
    assert s["rougeL_baseline_most_frequent"] == pytest.approx(0.0)  # from train, so it misses every row
    assert s["rougeL_baseline_retrieval"] == pytest.approx(2 / 3)  # rows 1, 0, 1
    assert s["rougeL_gain_over_retrieval"] == pytest.approx(0.0)  # rows 0, +1, -1
    assert s["rougeL_gain_over_retrieval_se"] == pytest.approx(1 / 3**0.5)
    assert s["rougeL_gain_over_most_frequent"] == pytest.approx(2 / 3)
