import pandas as pd
import pytest

from negopt.core.params import CleanRules, SampleSource
from negopt.data.clean import clean_frame
from negopt.data.sample import SYNTHETIC_MODEL, generate_sample
from negopt.data.schema import COLUMNS


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return generate_sample(SampleSource().rows, seed=0)


def test_schema_and_synthetic_label(sample):
    assert len(sample) == SampleSource().rows >= 2000
    assert {c: str(t) for c, t in sample.dtypes.items()} == COLUMNS
    assert (sample["model"] == SYNTHETIC_MODEL).all()
    assert sample["url"].str.startswith("https://example.invalid/negopt-synthetic/").all()
    assert sample["id"].str.len().eq(25).all() and sample["id"].is_unique


def test_deterministic_per_seed():
    a, b, c = generate_sample(300, 5), generate_sample(300, 5), generate_sample(300, 6)
    pd.testing.assert_frame_equal(a, b)
    assert not a["prompt"].equals(c["prompt"])


def test_rows_must_be_positive():
    with pytest.raises(ValueError, match="data.sample.rows"):
        generate_sample(0)


def test_negative_depends_on_category(sample):
    kept, _ = clean_frame(sample, CleanRules())
    p, n = kept["prompt"].str.lower(), kept["negative_prompt"].str.lower()
    # (prompt marker, terms every negative of that category carries); 3% label noise allowed.
    rules = [("portrait of", ["bad anatomy", "extra fingers"]), ("photo of", ["painting", "cartoon"]),
             ("anime", ["realistic", "3d"]), ("misty forest valley", ["people", "text"])]
    for marker, terms in rules:
        rows = p.str.contains(marker, regex=False)
        assert rows.sum() > 30, marker
        hit = pd.concat([n[rows].str.contains(t, regex=False) for t in terms], axis=1).all(axis=1)
        assert hit.mean() > 0.9, (marker, hit.mean())
    # and the association is specific: landscapes rarely draw anatomy terms
    land = p.str.contains("misty forest valley", regex=False)
    assert n[land].str.contains("bad anatomy", regex=False).mean() < 0.1


def test_realistic_noise_present(sample):
    neg, prm = sample["negative_prompt"], sample["prompt"]
    assert sample.duplicated(["prompt", "negative_prompt"]).sum() > 20
    assert (prm.str.contains("<b>|&amp;|<br>", regex=True, na=False) | neg.str.contains("<b>|&amp;|<br>", na=False)).any()
    assert neg.str.contains("(worst quality:1.4)", regex=False, na=False).any()
    assert (neg.isna() | (neg.str.strip() == "")).sum() > 5
    assert neg.str.contains("\uff41", regex=False, na=False).any()  # full-width letters for NFKC
    lengths = neg.str.len().dropna()
    assert lengths.max() > 1000 > 5 * lengths.median()  # a long tail, some too long for the default bound
