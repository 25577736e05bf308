"""The retrieval baseline (nearest training prompt's negative) and the paired ROUGE-L gains over it."""

from __future__ import annotations

import pytest
from helpers import TRAIN_N, TRAIN_P

from negopt.core.stats import paired_gain
from negopt.policy.retrieval import RetrievalIndex
from negopt.policy.sft import score_sft


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


# The crafted train set (conftest.TRAIN_P / TRAIN_N), neighbours known by hand: rows 0/1 share "cat", rows 2/3
# share "street".


def test_context_is_the_k_nearest_negatives_best_first():
    idx = RetrievalIndex(TRAIN_P, TRAIN_N)
    # "a city street" is row 2 itself (cosine 1), then row 3 (shares "street"), not the cat rows
    assert idx.context(["a city street", "cat oil painting"], 2) == [["lowres", "noise"], ["ugly hands", "blurry"]]
    assert idx.context(["a city street"], 0) == [[]]


def test_training_rows_never_retrieve_their_own_group():
    """Querying the train prompts themselves: a row's own group is excluded, so no row sees its own target."""
    idx = RetrievalIndex(TRAIN_P, TRAIN_N)
    own = idx.context(TRAIN_P, 1, groups=[0, 1, 2, 3])  # every row its own group: the other row of its pair
    assert own == [["ugly hands"], ["blurry"], ["noise"], ["lowres"]]
    # rows 0 and 1 one group: row 0 may not fall back on row 1, so its best is a street row (all cosines
    # ~0 except the shared "a": row 2 "a city street" ties row 3 at the word "a", lower index first)
    merged = idx.context(TRAIN_P, 1, groups=[0, 0, 2, 3])
    assert merged[0] != ["ugly hands"] and merged[1] != ["blurry"] and merged[2:] == [["noise"], ["lowres"]]
    # without groups, every training row retrieves itself: what the exclusion is for
    assert idx.context(TRAIN_P, 1) == [[n] for n in TRAIN_N]
    # a group covering every row leaves no neighbour at all (not a -inf cosine's arbitrary row)
    assert idx.context(TRAIN_P, 2, groups=[5, 5, 5, 5]) == [[], [], [], []]
    with pytest.raises(ValueError, match="groups"):  # groups mean "the queries are the training rows"
        idx.context(TRAIN_P[:2], 1, groups=[0, 1])


def test_saved_index_round_trips_without_pickle(tmp_path):
    import json

    idx = RetrievalIndex(TRAIN_P, TRAIN_N)
    idx.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrieval.json", "retrieval.safetensors"]
    meta = json.loads((tmp_path / "retrieval.json").read_text())
    assert meta["negatives"] == TRAIN_N and meta["shape"][0] == 4 and "city street" in meta["vocabulary"]
    back = RetrievalIndex.load(tmp_path)
    queries = ["a cat at night", "street painting", "zzz"]
    (a, sa), (b, sb) = idx.nearest(queries, 4), back.nearest(queries, 4)
    assert a.tolist() == b.tolist() and sa.tolist() == sb.tolist()
    assert back.context(queries, 2) == idx.context(queries, 2)
    assert RetrievalIndex.saved_in(tmp_path) and not RetrievalIndex.saved_in(tmp_path / "nothing")
