"""Near-duplicate grouping (MinHash + LSH) and the split that keeps template copies on one side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from negopt.core.params import CleanRules, Split
from negopt.data.clean import run_clean, split_frame
from negopt.data.neardup import (
    _mix,
    _words,
    band_rows,
    exact_jaccard,
    minhash_signatures,
    near_duplicate_groups,
    shingle_hashes,
)

TEMPLATE = "a portrait of a {}, highly detailed, 8k, trending on artstation, by greg rutkowski"


def _jaccard(a: str, b: str) -> float:
    def grams(t):
        w = t.lower().replace(",", " , ").split()
        return {" ".join(w[i:i + 3]) for i in range(max(1, len(w) - 2))}
    A, B = grams(a), grams(b)
    return len(A & B) / len(A | B)


def test_shingles_by_hand():
    h, starts = shingle_hashes(["a b c d", "x", "", "p q"], n=3)
    assert starts.tolist() == [0, 2, 3, 4]  # 2 trigrams, then one shingle each for the short texts
    assert len(h) == 5 and len(set(h[:2].tolist())) == 2
    # the same word sequence hashes the same wherever it appears
    h2, _ = shingle_hashes(["z a b c"], n=3)
    assert h[0] in h2.tolist()


def test_words_are_python_split_for_every_whitespace_character():
    """Arrow's split must cut exactly where ``str.split()`` does: every character ``str.isspace`` accepts,
    leading, trailing, repeated, mixed, and none at all."""
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) == 29
    texts = ["", "word", ",", "a,b", " , lead", "trail, ", "\u200b not a space\ufeff"]
    texts += [f"{w}a{w}{w}B c,{w}d{w}" for w in spaces] + ["".join(spaces).join(["x", "y", "z"]), "".join(spaces)]
    ref = [t.lower().replace(",", " , ").split() for t in texts]
    codes, lens = _words(texts)
    assert lens.tolist() == [len(r) for r in ref]
    flat = np.asarray([w for r in ref for w in r], dtype=object)
    assert codes.tolist() == _mix(pd.util.hash_array(flat, categorize=False)).tolist()
    assert lens[7:36].tolist() == [5] * 29  # a, b, c, ",", d: each whitespace kind splits


def test_signature_agreement_estimates_jaccard():
    a, b = TEMPLATE.format("cat"), TEMPLATE.format("dog")
    sig = minhash_signatures([a, b, "a castle on a hill"], num_perm=2048)
    assert (sig[0] == sig[1]).mean() == pytest.approx(_jaccard(a, b), abs=0.04)
    assert (sig[0] == sig[2]).mean() < 0.02


def test_groups_join_templates_transitively_and_nothing_else():
    texts = [TEMPLATE.format(x) for x in ("cat", "dog", "fox")] + [
        "a castle on a hill at sunset, oil painting, masterpiece, trending",
        "spaceship landing in a desert city, cinematic lighting",
        "a castle on a hill at sunset, oil painting, masterpiece, trending, 4k",
    ]
    assert _jaccard(texts[0], texts[1]) >= 0.5 and _jaccard(texts[3], texts[5]) >= 0.5
    g = near_duplicate_groups(texts, threshold=0.5)
    assert g.tolist() == [0, 0, 0, 3, 4, 3]
    assert near_duplicate_groups(texts, threshold=0.95).tolist() == list(range(6))


def test_a_pair_exactly_at_the_threshold_joins():
    """A's 7 trigrams inside B's 10: J = 7/10 = |A| / |B|, the bound the set-size filter drops below."""
    words = [f"w{i}" for i in range(12)]
    a, b = " ".join(words[:9]), " ".join(words)
    assert _jaccard(a, b) == 0.7
    assert near_duplicate_groups([a, b, "something else entirely here"], threshold=0.7).tolist() == [0, 0, 2]
    assert near_duplicate_groups([a, b], threshold=0.71).tolist() == [0, 1]


def test_band_rows_keep_recall_at_the_threshold():
    for t in (0.5, 0.7, 0.9):
        r = band_rows(t, 64)
        assert 1 - (1 - t**r) ** (64 // r) >= 0.99
        assert 1 - (1 - t ** (r + 1)) ** (64 // (r + 1)) < 0.99  # the most rows that still do


def test_split_keeps_template_copies_together_and_counts_merges(tmp_path):
    subjects = [f"subject{i}" for i in range(60)]
    prompts = [TEMPLATE.format(s) for s in subjects] + [f"unique prompt number {i} about things" for i in range(60)]
    df = pd.DataFrame({"prompt": prompts, "negative_prompt": ["ugly"] * len(prompts)})
    exact = split_frame(df, Split(near_duplicate_threshold=0.0))
    half = Split(near_duplicate_threshold=0.5)  # the template's one-word changes give Jaccard 0.68
    near = split_frame(df, half)
    sides = [name for name, part in exact.items() if part.prompt.str.contains("greg").any()]
    assert len(sides) > 1  # identical-prompt grouping lets the template cross splits
    sides = [name for name, part in near.items() if part.prompt.str.contains("greg").any()]
    assert len(sides) == 1  # near-duplicate grouping does not
    # order does not matter
    again = split_frame(df.sample(frac=1.0, random_state=1), half)
    for name in ("train", "val", "test"):
        assert sorted(again[name].prompt) == sorted(near[name].prompt)
    from negopt.data.schema import conform

    conform(df).to_parquet(tmp_path / "raw.parquet")
    rep = run_clean(tmp_path / "raw.parquet", tmp_path / "out", CleanRules(), half)
    assert rep["split"] == {"group_by": "near-duplicate prompt", "split_keys": 120, "split_groups": 61,
                            "near_duplicates_merged": 59}


def test_group_by_column_keeps_each_value_on_one_side(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"prompt": [f"prompt {i} {rng.integers(1e9)}" for i in range(300)],
                       "negative_prompt": ["ugly"] * 300, "model": [f"page{i % 12}" for i in range(300)]})
    parts = split_frame(df, Split(group_by="model"))
    seen = {}
    for name, part in parts.items():
        for m in part.model:
            assert seen.setdefault(m, name) == name
    assert sum(len(p) for p in parts.values()) == 300 and len(set(seen.values())) > 1


def _loop_jaccard(values, starts, a, b):
    """Reference: one set intersection per pair."""
    ends = np.r_[starts[1:], len(values)]
    sets = [set(values[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]
    return np.array([len(sets[x] & sets[y]) / len(sets[x] | sets[y]) for x, y in zip(a, b, strict=True)])


def test_exact_jaccard_by_hand_and_against_set_intersections():
    texts = ["a b c d", "a b c e", "x y", "a b c d a b c", ""]
    values, starts = shingle_hashes(texts, n=3)
    # shingles: {abc, bcd} / {abc, bce}: 1 of 3; text 3 repeats its own shingles (abc, bcd, cda, dab): 2 of 4
    got = exact_jaccard(values, starts, np.array([0, 0, 3, 2, 4]), np.array([1, 0, 0, 2, 4]))
    assert got.tolist() == [1 / 3, 1.0, 2 / 4, 1.0, 1.0]
    rng = np.random.default_rng(0)
    words = "red blue cat dog sky sea art photo".split()
    many = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(300)]
    values, starts = shingle_hashes(many, n=3)
    a, b = rng.integers(0, 300, 2000), rng.integers(0, 300, 2000)
    expected = _loop_jaccard(values, starts, a, b)
    assert np.allclose(exact_jaccard(values, starts, a, b), expected, rtol=0, atol=1e-12)
    assert np.allclose(exact_jaccard(values, starts, a, b, chunk=7), expected, rtol=0, atol=1e-12)  # chunk seams
    assert 0 < expected.mean() < 1
