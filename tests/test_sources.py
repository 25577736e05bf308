import json

import pandas as pd
import pytest

from negopt.core.params import CleanRules, Data, HfSource, Split
from negopt.data.clean import dedup_key, run_clean
from negopt.data.schema import COLUMNS, conform
from negopt.data.sources import SourceError, load_file, load_hf, load_source

PAIRS = pd.DataFrame({"prompt": ["a cat", "a dog"], "negative_prompt": ["blurry", "ugly"]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_file_source_fills_missing_columns(tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".csv":
        PAIRS.to_csv(path, index=False)
    elif suffix == ".jsonl":
        PAIRS.to_json(path, orient="records", lines=True)
    else:
        PAIRS.to_parquet(path)
    df, stats = load_source(Data(source=f"file:{path}"))
    assert list(df.columns) == list(COLUMNS)
    assert list(df["prompt"]) == ["a cat", "a dog"] and list(df["negative_prompt"]) == ["blurry", "ugly"]
    assert df["likes"].isna().all() and df["id"].isna().all()
    assert stats["rows_fetched"] == 2 and stats["source"] == f"file:{path}"


def test_file_missing_required_column_names_it(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"prompt": ["a cat"], "neg": ["blurry"]}).to_csv(path, index=False)
    with pytest.raises(SourceError, match=r"missing required column\(s\) negative_prompt; the file has prompt, neg"):
        load_file(path)


def test_file_errors_are_clear(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        load_file(tmp_path / "absent.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match="unsupported file type"):
        load_file(tmp_path / "x.txt")


def test_jsonl_bad_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a cat", "negative_prompt": "blurry"}\n{oops\n[1, 2]\n'
                    '{"prompt": "a dog", "negative_prompt": "ugly", "likes": 4}\n')
    df, bad = load_file(path)
    assert bad == 2 and list(df["prompt"]) == ["a cat", "a dog"] and df["likes"].tolist()[1] == 4


def test_conform_casts_and_nulls():
    df = conform(pd.DataFrame({"prompt": ["a", None], "likes": ["3", "n/a"], "steps": [2.5, 30.0],
                               "cfg_scale": ["7.5", None], "extra": [1, 2]}))
    assert list(df.columns) == list(COLUMNS)
    assert df["prompt"][0] == "a" and pd.isna(df["prompt"][1])  # None stays null, not "None"
    assert df["likes"].tolist()[0] == 3 and pd.isna(df["likes"][1])
    assert pd.isna(df["steps"][0]) and df["steps"][1] == 30 and df["cfg_scale"][0] == 7.5


def test_sample_source_is_synthetic():
    df, stats = load_source(Data(source="sample"))
    assert len(df) == 3000 and stats["synthetic"] is True and stats["rows_fetched"] == 3000


def test_hf_offline_uncached_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SourceError) as err:
        load_hf(HfSource(dataset="negopt-tests/not-cached-anywhere"))
    msg = str(err.value)
    assert "data.source=hf" in msg and "not-cached-anywhere" in msg and "hf download --repo-type dataset" in msg


def test_real_pairs_load_and_clean(shared_pairs, tmp_path):
    df, stats = load_source(Data(source=f"file:{shared_pairs}"))
    n_lines = sum(1 for line in open(shared_pairs) if line.strip())
    assert len(df) == n_lines == stats["rows_fetched"] and stats["bad_lines"] == 0
    assert df["prompt"].notna().all() and df["width"].isna().all()
    raw = tmp_path / "pairs.parquet"
    df.to_parquet(raw)
    rep = run_clean(raw, tmp_path / "clean", CleanRules(), Split())
    assert rep["rows_in"] == len(df) == rep["rows_out"] + sum(rep["dropped"].values())
    assert rep["rows_out"] > 0.8 * len(df)  # long texts go, the rest stays
    parts = {n: pd.read_parquet(tmp_path / "clean" / f"{n}.parquet") for n in ("train", "val", "test")}
    keys = [set(dedup_key(p["prompt"])) for p in parts.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    neg = pd.concat([p["negative_prompt"] for p in parts.values()])
    assert neg.str.len().max() <= 1000 and not neg.str.contains("\n").any()
    assert not neg.str.lower().str.startswith("negative prompt:").any()
    json.dumps(rep)  # the report is JSON-serialisable as is
