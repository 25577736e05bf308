"""generate.prompts=file:<path>: prompt files in each supported format, written by the test."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from negopt.core.params import validate_params
from negopt.data.prompt_files import has_negatives, load_prompts, read_prompt_file


def test_txt_one_prompt_per_line_blank_lines_skipped(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a red fox\n\n   \n  portrait of a sailor \nneon street\n")
    df = read_prompt_file(f)
    assert df["prompt"].tolist() == ["a red fox", "portrait of a sailor", "neon street"]
    assert df["negative_prompt"].tolist() == ["", "", ""] and not has_negatives(df)


def test_csv_jsonl_parquet_with_a_prompt_column(tmp_path):
    rows = [{"prompt": "a castle", "negative_prompt": "blurry", "category": "x"},
            {"prompt": "a boat", "negative_prompt": None, "category": "y"}]
    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.jsonl", "p.parquet"):
        df = read_prompt_file(tmp_path / name)
        assert df.to_dict("records") == [{"prompt": "a castle", "negative_prompt": "blurry"},
                                         {"prompt": "a boat", "negative_prompt": ""}], name
        assert has_negatives(df)
    pd.DataFrame({"prompt": ["only prompts", "here"]}).to_csv(tmp_path / "q.csv", index=False)
    assert not has_negatives(read_prompt_file(tmp_path / "q.csv"))


def test_bad_files_name_the_key_and_the_fix(tmp_path):
    pd.DataFrame({"text": ["a"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match="generate.prompts=file:.*no `prompt` column.*text"):
        read_prompt_file(tmp_path / "p.csv")
    (tmp_path / "p.docx").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.docx'"):
        read_prompt_file(tmp_path / "p.docx")
    with pytest.raises(ValueError, match="no such file"):
        read_prompt_file(tmp_path / "missing.txt")
    (tmp_path / "two.txt").write_text("a\nb\n")
    assert load_prompts(f"file:{tmp_path / 'two.txt'}", tmp_path, 1)["prompt"].tolist() == ["a"]
    with pytest.raises(ValueError, match="generate.num_prompts=3 .* only 2 prompts"):
        load_prompts(f"file:{tmp_path / 'two.txt'}", tmp_path, 3)


@pytest.mark.parametrize("value", ["tests", "file:", "prompts.txt"])
def test_params_refuse_an_unknown_prompt_source(value):
    from pathlib import Path

    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert validate_params(raw).generate.prompts == "test"
    raw["generate"]["prompts"] = value
    with pytest.raises(ValueError, match="generate.prompts"):
        validate_params(raw)
