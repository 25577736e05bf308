"""Hostile input through the real scrape (file source) -> raw parquet -> clean path, with every row accounted.

One jsonl corpus carries nulls, numbers, lists and objects in text columns, HTML and <script>, a 12,000
character prompt, invalid UTF-8 bytes, lone surrogates, control and zero-width characters, full-width
and emoji text, exact and near duplicates. Then the malformed files: a missing required column, an empty
file, a header-only csv, a parquet with wrong dtypes. Each either loads and cleans with
rows_in = rows_out + dropped by reason, or stops with one SourceError naming the problem: never a crash.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from negopt.core.io import write_parquet
from negopt.core.params import CleanRules, Split
from negopt.data.clean import run_clean
from negopt.data.sources import SourceError, load_file

GOOD = {"prompt": "a red fox in the snow", "negative_prompt": "blurry, lowres"}

# (prompt, negative) as JSON values; the comment says what each tests
HOSTILE = [
    (None, "blurry"),  # null prompt -> dropped
    (12345, "ugly"),  # a number -> text "12345"
    (["a", "list"], "ugly"),  # a list -> text or null, never a crash
    ("a cat", {"obj": 1}),  # an object as the negative
    ("<script>alert('x')</script> portrait", "<b>bold</b>, lowres"),  # kept as text
    ("castle " * 1715, "blurry"),  # 12,005 characters -> dropped by max_prompt_chars
    ("lone \ud800 surrogate", "bad \udfff anatomy"),  # not encodable as UTF-8
    ("bell\x07 and nul\x00 chars", "tab\tand\r\ncrlf"),  # control characters
    ("zero\u200bwidth\u200d joiner\ufeff", "blurry"),  # zero-width characters
    ("\uff41 \uff43\uff41\uff54 \uff49\uff4e \uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48", "\u4f4e\u753b\u8d28"),
    ("a cat \U0001f431 with emoji \U0001f308", "\U0001f6ab text"),  # emoji
    (GOOD["prompt"], GOOD["negative_prompt"]),  # exact duplicate of the first good row
    ("A Red fox in the snow .", "blurry, lowres"),  # near duplicate (case, edge punctuation)
]


def _corpus(path) -> int:
    """Write the hostile jsonl (plus one line of invalid UTF-8 bytes); returns the JSON object lines."""
    lines = [json.dumps(GOOD)] + [json.dumps({"prompt": p, "negative_prompt": n}) for p, n in HOSTILE]
    with open(path, "wb") as f:
        for line in lines:
            f.write(line.encode("utf-8") + b"\n")
        f.write(b'{"prompt": "invalid \xff\xfe utf-8 \xc3", "negative_prompt": "blurry"}\n')
    return len(lines) + 1


def test_hostile_corpus_is_cleaned_with_every_row_accounted(tmp_path):
    path = tmp_path / "hostile.jsonl"
    n = _corpus(path)
    df, bad_lines = load_file(path)
    assert len(df) + bad_lines == n and bad_lines == 0  # every line was a JSON object
    raw = tmp_path / "raw" / "pairs.parquet"
    write_parquet(raw, df)  # what the scrape stage writes: lone surrogates must not crash it
    report = run_clean(raw, tmp_path / "clean", CleanRules(), Split())
    assert report["rows_in"] == n
    assert report["rows_out"] + sum(report["dropped"].values()) == n
    kept = pd.concat([pd.read_parquet(tmp_path / "clean" / f"{s}.parquet") for s in ("train", "val", "test")])
    assert len(kept) == report["rows_out"]
    prompts = list(kept["prompt"])
    # tags go (as the cleaner documents), their text stays text: escaping is the renderer's job
    assert "alert('x') portrait" in prompts and "bold, lowres" in list(kept["negative_prompt"])
    assert "12345" in prompts
    assert not any(len(p) > CleanRules().max_prompt_chars for p in prompts)
    assert sum(p.lower().startswith("a red fox") for p in prompts) == 1  # exact + near duplicate collapsed
    assert "lone \ufffd surrogate" in prompts  # replaced, not a crash
    assert "bell and nul chars" in prompts and "zerowidth joiner" in prompts  # control / zero-width removed
    assert "a cat in fullwidth" in prompts  # NFKC
    for p in prompts + list(kept["negative_prompt"]):
        p.encode("utf-8")  # every kept text is valid UTF-8


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", "prompt,neg\na cat,blurry\n", r"missing required column\(s\) negative_prompt"),
        ("empty.jsonl", "", r"missing required column\(s\) prompt, negative_prompt"),
        ("empty.csv", "", r"the file is empty"),
        ("header_only.csv", "prompt,negative_prompt\n", r"no rows"),
    ],
)
def test_malformed_files_stop_with_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        load_file(path)


def test_parquet_with_wrong_dtypes_is_conformed_not_crashed(tmp_path):
    path = tmp_path / "typed.parquet"
    pd.DataFrame({"prompt": [1, 2, 3], "negative_prompt": [0.5, None, 2.0],
                  "likes": ["many", "3", None], "steps": ["x", "20", "30"]}).to_parquet(path)
    df, _ = load_file(path)
    assert list(df["prompt"]) == ["1", "2", "3"] and df["likes"].tolist()[1] == 3 and pd.isna(df["likes"][0])
    raw = tmp_path / "raw.parquet"
    write_parquet(raw, df)
    report = run_clean(raw, tmp_path / "clean", CleanRules(), Split())
    assert report["rows_in"] == 3 and report["rows_out"] + sum(report["dropped"].values()) == 3
