"""The world's users: schema, determinism, and the properties of their negatives."""

import re

import numpy as np
import pandas as pd
import pytest

from negopt.data.schema import COLUMNS
from negopt.world.defects import DEFECTS, SPECS, defect_rates
from negopt.world.grammar import Content, parse_content
from negopt.world.users import (
    GENERIC_LISTS,
    WORLD_MODEL,
    generate_world_pairs,
    observer_terms,
    rate_negative,
)
from negopt.world.vocab import build_world_tokenizer, world_words


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return generate_world_pairs(4000, seed=0)


def names(negative: str, defect: str) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", negative) for w in SPECS[defect].words)


def test_schema_labels_and_determinism(pairs):
    assert {c: str(t) for c, t in pairs.dtypes.items()} == COLUMNS
    assert (pairs["model"] == WORLD_MODEL).all()
    assert pairs["url"].str.startswith("https://example.invalid/negopt-world/").all()
    assert pairs["id"].str.len().eq(25).all() and pairs["id"].is_unique
    pd.testing.assert_frame_equal(generate_world_pairs(300, 5), generate_world_pairs(300, 5))
    assert not generate_world_pairs(300, 6)["prompt"].equals(generate_world_pairs(300, 5)["prompt"])
    with pytest.raises(ValueError, match="rows"):
        generate_world_pairs(0)


def test_every_prompt_follows_the_grammar(pairs):
    assert pairs["prompt"].map(parse_content).notna().all()


def test_negatives_are_written_like_real_ones(pairs):
    neg = pairs["negative_prompt"]
    weighted = neg.str.contains(r"\([^()]+:\d\.\d\)").mean()
    emphasis = neg.str.contains(r"\(\([^()]+\)\)").mean()
    repeats = neg.map(lambda s: len(set(s.split(", "))) < len(s.split(", "))).mean()
    copied = neg.map(lambda s: any(set(re.sub(r"[()]|:\d\.\d", "", t) for t in s.split(", ")) == set(
        re.sub(r"[()]|:\d\.\d", "", t) for t in lst) for lst in GENERIC_LISTS)).mean()
    assert 0.3 < weighted < 0.9 and 0.1 < emphasis < 0.7 and repeats > 0.05 and 0.1 < copied < 0.35
    assert (pairs.duplicated(["prompt", "negative_prompt"]).mean()) >= 0.02  # reposts


def test_negatives_follow_the_content(pairs):
    content = pairs["prompt"].map(parse_content)
    group = content.map(lambda c: c.bg_group)
    grain = pairs["negative_prompt"].map(lambda s: names(s, "grain"))
    washed = pairs["negative_prompt"].map(lambda s: names(s, "washed"))
    assert grain[group == "dark"].mean() > grain[group == "pale"].mean() + 0.2
    assert washed[group == "pale"].mean() > washed[group == "dark"].mean() + 0.2


def test_observers_are_good_but_improvable():
    """An observer names a defect more often the likelier it is, yet misses likely ones and names
    unlikely ones: the rate-based negative differs from most observers' choices."""
    content = Content("square", 2, "red", "black")  # watermark, grain likely; blur less; washing rare
    rng = np.random.default_rng(0)
    seen = [set(observer_terms(content, rng)) for _ in range(2000)]
    named = {d: np.mean([any(w in s for w in SPECS[d].words) for s in seen]) for d in DEFECTS}
    rates = defect_rates(content)
    assert sorted(DEFECTS, key=named.get) == sorted(DEFECTS, key=rates.get)
    assert 0.05 < named["washed"] < 0.4 and named["grain"] < 0.97
    best = set(rate_negative(content).split(", "))
    assert best == {"watermark", "grainy"}
    assert np.mean([{SPECS[d].word for d in DEFECTS if any(w in s for w in SPECS[d].words)} == best
                    for s in seen]) < 0.7


def test_every_user_word_is_one_token(pairs):
    tokenizer = build_world_tokenizer()
    words = set(world_words())
    used = {w for text in pd.concat([pairs["prompt"], pairs["negative_prompt"]]) for w in re.findall(r"[a-z]+", text)}
    assert used <= words
    for w in words:
        assert len(tokenizer.tokenize(w)) == 1, w
    ids = tokenizer("two red circles on a black background, (grainy:1.3)")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 0 and ids[-1] == tokenizer.eos_token_id == 1


def test_world_is_a_scrape_source():
    from negopt.core.params import Data
    from negopt.data.sources import load_source

    data = Data.model_validate({"source": "world", "world": {"rows": 2000, "seed": 3}})
    df, stats = load_source(data, progress=False)
    pd.testing.assert_frame_equal(df, generate_world_pairs(2000, 3))
    assert stats["synthetic"] is True and stats["rows_fetched"] == 2000 and stats["source"] == "world"
