import pandas as pd
import pytest

from negopt.core.params import CleanRules, Split
from negopt.data.clean import (
    DROP_REASONS,
    clean_frame,
    data_report,
    dedup_key,
    normalise_text,
    run_clean,
    split_frame,
)
from negopt.data.nsfw import nsfw_mask
from negopt.data.sample import generate_sample
from negopt.data.schema import COLUMNS

RULES = CleanRules(min_prompt_chars=3, max_prompt_chars=40, min_negative_chars=3, max_negative_chars=40)

# (prompt, negative, expected fate): a cleaned (prompt, negative) pair or the drop reason.
DIRTY = [
    ("portrait of a woman", "bad anatomy, extra fingers", ("portrait of a woman", "bad anatomy, extra fingers")),
    ("portrait of a woman", "bad anatomy, extra fingers", "duplicate_exact"),
    ("PORTRAIT  of a woman ,", "bad anatomy , extra fingers,", "duplicate_normalised"),
    (None, "blurry", "empty_prompt"),
    ("  \t ", "blurry", "empty_prompt"),
    ("a cat", "", "empty_negative"),
    ("ab", "blurry", "short_prompt"),
    ("x" * 41, "blurry", "long_prompt"),
    ("a dog", "no", "short_negative"),
    ("a dog", "y" * 41, "long_negative"),
    ("<b>photo of a car</b>", "painting,<br>cartoon", ("photo of a car", "painting, cartoon")),
    ("\uff50\uff48\uff4f\uff54\uff4f\u00a0of a boat", "(worst quality:1.4), cartoon",
     ("photo of a boat", "(worst quality:1.4), cartoon")),
    ("anime girl &amp; cat\n\tsmiling", "Negative prompt: realistic, 3d", ("anime girl & cat smiling", "realistic, 3d")),
    ("a <lora:style:0.8> castle", "((blurry)), [bad hands]", ("a <lora:style:0.8> castle", "((blurry)), [bad hands]")),
]


def _frame(rows, **extra) -> pd.DataFrame:
    return pd.DataFrame({"prompt": [r[0] for r in rows], "negative_prompt": [r[1] for r in rows], **extra})


def test_clean_frame_hand_checked_rows():
    kept, dropped = clean_frame(_frame(DIRTY), RULES)
    expected_kept = [fate for _, _, fate in DIRTY if isinstance(fate, tuple)]
    assert list(zip(kept["prompt"], kept["negative_prompt"], strict=True)) == expected_kept
    expected_dropped = {r: sum(fate == r for _, _, fate in DIRTY) for r in DROP_REASONS}
    assert dropped == expected_dropped
    assert dropped["empty_prompt"] == 2 and dropped["duplicate_exact"] == 1
    assert len(DIRTY) == len(kept) + sum(dropped.values())
    assert list(kept.columns) == list(COLUMNS)


def test_normalise_text_keeps_weighting_and_lora_syntax():
    s = pd.Series(["(worst quality:1.4),  ((blurry)) ,[ugly]", "<lora:add_detail:0.6> <i>x</i>", None])
    out = normalise_text(s)
    assert out[0] == "(worst quality:1.4), ((blurry)),[ugly]"
    assert out[1] == "<lora:add_detail:0.6> x"
    assert pd.isna(out[2])


def test_min_likes_drops_low_and_unknown():
    df = _frame([("a cat", "blurry")] * 4, likes=[5, 1, None, 2])
    df["prompt"] = ["a cat", "a dog", "a cow", "a fox"]
    kept, dropped = clean_frame(df, CleanRules(min_likes=2))
    assert dropped["low_likes"] == 2
    assert list(kept["prompt"]) == ["a cat", "a fox"]


def test_nsfw_filter_whole_words_only():
    prompts = ["nude portrait", "(nsfw:1.2), girl", "sexy dress", "Essex landscape", "unisex jacket",
               "pornographic art", "nude_female statue"]
    assert list(nsfw_mask(pd.Series(prompts))) == [True, True, False, False, False, True, True]
    df = _frame([(p, "blurry") for p in prompts])
    off_kept, off = clean_frame(df, CleanRules())
    on_kept, on = clean_frame(df, CleanRules(nsfw_filter=True))
    assert off["nsfw"] == 0 and len(off_kept) == 7
    assert on["nsfw"] == 4 and list(on_kept["prompt"]) == ["sexy dress", "Essex landscape", "unisex jacket"]


def test_bad_values_never_crash():
    df = pd.DataFrame({"prompt": ["a cat", 12345, "a dog"], "negative_prompt": ["blurry", "ugly", 3.5],
                       "likes": ["n/a", 3, "7"], "steps": [2.5, 20, None]})
    kept, dropped = clean_frame(df, CleanRules())
    assert len(kept) + sum(dropped.values()) == 3
    assert list(kept["prompt"]) == ["a cat", "12345", "a dog"]
    assert kept["likes"].isna()[0] and kept["likes"][2] == 7 and kept["steps"].isna()[0]


@pytest.fixture(scope="module")
def sample_clean() -> pd.DataFrame:
    kept, _ = clean_frame(generate_sample(2000, seed=1), CleanRules())
    return kept


def _keys(part: pd.DataFrame) -> set[str]:
    return set(dedup_key(part["prompt"]))


def test_split_grouped_fractions_and_seeded(sample_clean):
    split = Split(train=0.7, val=0.15, test=0.15, seed=3)
    parts = split_frame(sample_clean, split)
    assert sum(len(p) for p in parts.values()) == len(sample_clean)
    tr, va, te = (_keys(parts[n]) for n in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    for name, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(len(parts[name]) / len(sample_clean) - frac) < 0.06, name
    again = split_frame(sample_clean, split)
    assert all(again[n].equals(parts[n]) for n in parts)
    other = split_frame(sample_clean, Split(train=0.7, val=0.15, test=0.15, seed=4))
    assert _keys(other["test"]) != te
    # A prompt's split depends on (prompt, seed) only, not on row order.
    shuffled = split_frame(sample_clean.sample(frac=1.0, random_state=0), split)
    assert _keys(shuffled["test"]) == te


def test_split_keeps_prompt_variants_together():
    df = pd.DataFrame({"prompt": ["A Cat", "a cat", "a cat ,", "a dog", "a cow"],
                       "negative_prompt": ["x1", "x2", "x3", "y", "z"]})
    for seed in range(10):
        parts = split_frame(df, Split(seed=seed))
        holders = [n for n, p in parts.items() if (dedup_key(p["prompt"]) == "a cat").any()]
        assert len(holders) == 1 and (dedup_key(parts[holders[0]]["prompt"]) == "a cat").sum() == 3


def test_dedup_key_ignores_case_and_edge_punctuation_only():
    keys = dedup_key(pd.Series(["A Cat ,", "a cat.", "a, cat", "(a cat:1.2)"]))
    assert list(keys) == ["a cat", "a cat", "a, cat", "(a cat:1.2)"]


def test_data_report_counts_and_lengths():
    rep = data_report(5, {"empty_prompt": 2}, {"train": 2, "val": 1, "test": 0}, [6, 4, 8, 2], unique_prompts=3)
    assert (rep["rows_in"], rep["rows_out"], rep["rows_train"], rep["rows_val"], rep["rows_test"]) == (5, 3, 2, 1, 0)
    assert rep["rows_dropped"] == 2 and rep["dropped"] == {"empty_prompt": 2} and rep["unique_prompts"] == 3
    # lengths 6, 4, 8, 2 -> mean 5, median (4 + 6) / 2 = 5, max 8
    assert rep["negative_chars"]["mean"] == 5.0 and rep["negative_chars"]["median"] == 5.0
    assert rep["negative_chars"]["max"] == 8.0


def test_run_clean_equals_clean_then_split(tmp_path):
    raw = generate_sample(800, seed=2)
    raw.to_parquet(tmp_path / "raw.parquet", index=False)
    split = Split(train=0.6, val=0.2, test=0.2, seed=9)
    rep = run_clean(tmp_path / "raw.parquet", tmp_path / "out", CleanRules(), split)
    kept, dropped = clean_frame(raw, CleanRules())
    expected = split_frame(kept, split)
    for name, part in expected.items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / f"{name}.parquet"), part)
        assert rep[f"rows_{name}"] == len(part)
    assert rep["dropped"] == dropped and rep["rows_in"] == 800 == rep["rows_out"] + rep["rows_dropped"]
    assert rep["unique_prompts"] == dedup_key(kept["prompt"]).nunique()
    assert rep["negative_chars"]["max"] == kept["negative_prompt"].str.len().max()


def distinct_drop_frame() -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose fates are known: reason number i of DROP_REASONS drops exactly i + 1 rows, so two
    swapped reasons (or a row counted under the wrong rule) change the table, not only its total."""
    kept = [("a kept prompt zero", "kept negative zero"), ("a kept prompt one", "kept negative one")]
    rows = list(kept)
    rows += [kept[0]]  # duplicate_exact: 1
    rows += [(None, "blurry a"), ("   ", "blurry b")]  # empty_prompt: 2
    rows += [("a cat one", ""), ("a cat two", None), ("a cat three", "  ")]  # empty_negative: 3
    rows += [(p, "blurry") for p in ("ab", "cd", "ef", "gh")]  # short_prompt: 4
    rows += [("x" * 41 + str(j), "blurry") for j in range(5)]  # long_prompt: 5
    rows += [(f"a dog {j}", f"n{j}") for j in range(6)]  # short_negative: 6
    rows += [(f"a cow {j}", "y" * 41 + str(j)) for j in range(7)]  # long_negative: 7
    low_likes = [(f"a fox {j}", "blurry") for j in range(8)]  # low_likes: 8
    rows += low_likes
    rows += [(f"nude portrait {j}", "blurry") for j in range(9)]  # nsfw: 9
    base = "a kept prompt one"  # duplicate_normalised: 10 case variants of a kept prompt
    letters = [j for j, c in enumerate(base) if c != " "][1:11]
    rows += [(base[:j] + base[j].upper() + base[j + 1:], "kept negative one") for j in letters]
    likes = [0 if r in low_likes else 5 for r in rows]
    expected = {r: i + 1 for i, r in enumerate(DROP_REASONS)}
    return _frame(rows, likes=likes), expected


DISTINCT_RULES = CleanRules(min_prompt_chars=3, max_prompt_chars=40, min_negative_chars=3, max_negative_chars=40,
                            min_likes=2, nsfw_filter=True)


def test_every_drop_reason_counted_under_its_own_name():
    df, expected = distinct_drop_frame()
    kept, dropped = clean_frame(df, DISTINCT_RULES)
    assert dropped == expected
    assert list(kept["prompt"]) == ["a kept prompt zero", "a kept prompt one"]


def test_run_clean_report_keeps_the_reason_table(tmp_path):
    df, expected = distinct_drop_frame()
    df.to_parquet(tmp_path / "raw.parquet", index=False)
    rep = run_clean(tmp_path / "raw.parquet", tmp_path / "out", DISTINCT_RULES, Split(seed=0))
    assert rep["dropped"] == expected and rep["rows_dropped"] == 55 and rep["rows_out"] == 2
    assert rep["rows_in"] == len(df) == 57


def test_length_bounds_are_inclusive():
    # RULES: prompts of 3..40 chars and negatives of 3..40 chars are kept; one char beyond either end is not
    rows = [("abc", "xyz"), ("p" * 40, "n" * 40), ("ab", "xyz"), ("q" * 41, "xyz"), ("abd", "xy"), ("abe", "m" * 41)]
    kept, dropped = clean_frame(_frame(rows), RULES)
    assert list(kept["prompt"]) == ["abc", "p" * 40]
    assert [dropped[r] for r in ("short_prompt", "long_prompt", "short_negative", "long_negative")] == [1, 1, 1, 1]
