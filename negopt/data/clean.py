"""Cleaning rules, the grouped split and the data report, vectorised (pandas + pyarrow compute).

``clean_frame`` never raises on a bad row: every row either survives or is dropped and counted under
exactly one reason (the first rule, in ``DROP_REASONS`` order, that rejects it), so
``rows_in == rows_out + sum(dropped.values())`` always holds.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from negopt.core.io import atomic_path
from negopt.core.params import CleanRules, Split
from negopt.core.prompt_syntax import syntax_counts
from negopt.data.neardup import distinct, near_duplicate_groups
from negopt.data.nsfw import nsfw_mask
from negopt.data.schema import COLUMNS, conform

#: Drop reasons in the order the rules run.
DROP_REASONS: tuple[str, ...] = (
    "duplicate_exact", "empty_prompt", "empty_negative", "short_prompt", "long_prompt",
    "short_negative", "long_negative", "low_likes", "nsfw", "duplicate_normalised",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Real HTML tags only: a tag name followed by whitespace, '/' or '>'. SD's LoRA / embedding syntax
# (`<lora:name:0.8>`) has a ':' right after the name, so it is kept.
_HTML_TAG = r"</?[A-Za-z][A-Za-z0-9]*(?:[ \t\n\r\f\v][^<>]*)?/?>"
# Whitespace classes are spelt out: pandas sends patterns with \s (and look-arounds) to Python's
# re, row by row, which is far slower than pyarrow's RE2 at 256k rows (bench/bench_clean.py in
# bench/RESULTS.md). Only runs and non-space whitespace are matched, so the common single space costs nothing.
_WS_JUNK = r"[ \t\n\r\f\v]{2,}|[\t\n\r\f\v]"
# Control and zero-width characters (NUL, BEL, ZWSP, ZWJ, word joiner, BOM) carry nothing a text-to-image
# model reads and hide duplicates from each other; tab / newline / CR are whitespace (above), not removed.
_INVISIBLE = r"[\x00-\x08\x0e-\x1f\x7f\x{200b}-\x{200d}\x{2060}\x{feff}]"
# Users paste the web UI's label along with the text ("Negative prompt: ugly, ...").
_NEG_LABEL = r"^(?i:negative prompt) ?: ?"  # runs on normalised text: single spaces only


def _arrow(texts: pd.Series) -> pa.Array:
    """One contiguous Arrow string array (zero-copy for pandas' pyarrow-backed strings)."""
    arr = pa.array(texts.astype("str"))
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


# Rows that any cleaning step would change: everything else is copied as is. Most real and
# synthetic rows are clean, so the per-row work runs on a few percent of them.
_NEEDS_WORK = r"[<&\x00-\x1f\x7f]|  | ,|^ | $|[^\x00-\x7f]"


def _map_where(arr: pa.Array, mask: pa.Array, fn) -> pa.Array:
    """Apply a Python ``fn`` only to the rows under ``mask`` (NFKC and HTML entities have no Arrow kernel)."""
    if not pc.any(mask).as_py():
        return arr
    values = [fn(x) for x in pc.filter(arr, mask).to_pylist()]
    return pc.replace_with_mask(arr, mask, pa.array(values, type=arr.type))


def normalise_text(texts: pd.Series) -> pd.Series:
    """NFKC, HTML entities and tags removed, control and zero-width characters removed, whitespace
    collapsed; weighting syntax untouched."""
    arr = _arrow(texts)
    need = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_WORK), False)
    if pc.any(need).as_py():
        sub = pc.filter(arr, need)  # never null: a null row does not match
        sub = _map_where(sub, pc.invert(pc.string_is_ascii(sub)), lambda x: unicodedata.normalize("NFKC", x))
        sub = _map_where(sub, pc.match_substring(sub, "&"), html.unescape)
        sub = pc.replace_substring_regex(sub, _HTML_TAG, " ")
        sub = pc.replace_substring_regex(sub, _INVISIBLE, "")
        sub = pc.replace_substring_regex(sub, _WS_JUNK, " ")
        sub = pc.utf8_trim(pc.replace_substring(sub, " ,", ","), characters=" ")
        arr = pc.replace_with_mask(arr, need, sub)
    return pd.Series(arr, dtype="str", index=texts.index)


def dedup_key(texts: pd.Series) -> pd.Series:
    """Key under which two cleaned texts count as the same: case and edge punctuation ignored.

    Runs on normalised text (single spaces, no space before a comma), so "A cat ," and "a cat"
    already share a key; kept to two cheap arrow kernels for the 256k-row scale.
    """
    arr = pc.utf8_trim(pc.utf8_lower(_arrow(texts)), characters=",. ")
    return pd.Series(arr, dtype="str", index=texts.index)


def _first_seen_mask(*cols: pd.Series) -> np.ndarray:
    """True for rows whose tuple of texts occurred in an earlier row (nulls compare equal)."""
    # One joined string per row: a single hash pass instead of one per column.
    opts = pc.JoinOptions(null_handling="replace", null_replacement="\x00")
    sep = pa.scalar("\x1f", pa.large_string())
    joined = pc.binary_join_element_wise(*[pc.cast(_arrow(c), pa.large_string()) for c in cols], sep, options=opts)
    return pd.Series(joined, dtype="str").duplicated(keep="first").to_numpy()


def _factorize(texts: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(code per row, distinct values); null -> -1. Arrow's hash encoder, faster than pd.factorize here."""
    enc = pc.dictionary_encode(_arrow(texts))
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, pd.Index(pd.Series(enc.dictionary, dtype="str"))


@dataclass
class _Cleaned:
    """What the rules leave: cleaned text on every row, the keep mask, prompt-key codes, lengths."""

    prompt: pd.Series
    negative: pd.Series
    alive: np.ndarray
    p_codes: np.ndarray  # factorized normalised prompt per row (-1 for null)
    p_uniques: pd.Index
    n_len: np.ndarray  # characters of the cleaned negative per row
    dropped: dict[str, int]


def _clean(prompt_raw: pd.Series, negative_raw: pd.Series, likes: pd.Series, rules: CleanRules) -> _Cleaned:
    prompt = normalise_text(prompt_raw)
    negative = normalise_text(negative_raw)
    labelled = pc.fill_null(pc.starts_with(_arrow(negative), "negative prompt", ignore_case=True), False)
    labelled = labelled.to_numpy(zero_copy_only=False)
    if labelled.any():
        negative = negative.mask(labelled, negative[labelled].str.replace(_NEG_LABEL, "", regex=True))

    # Integer codes per normalised (prompt, negative): duplicates are then found on ints, and the
    # prompt codes serve the grouped split too. Exactly equal raw pairs have equal keys, so the
    # exact-duplicate check only needs the (few) rows whose key pair occurs more than once.
    p_codes, p_uniques = _factorize(dedup_key(prompt))
    n_codes, n_uniques = _factorize(dedup_key(negative))
    pair = pd.Series((p_codes + 1) * (len(n_uniques) + 2) + (n_codes + 1))
    shared = pair.duplicated(keep=False).to_numpy()

    alive = np.ones(len(prompt), dtype=bool)
    dropped: dict[str, int] = {}

    def drop(reason: str, bad: pd.Series | np.ndarray) -> None:
        nonlocal alive
        bad = np.asarray(bad, dtype=bool) & alive
        dropped[reason] = int(bad.sum())
        alive &= ~bad

    exact = np.zeros(len(prompt), dtype=bool)
    if shared.any():
        exact[shared] = _first_seen_mask(prompt_raw[shared], negative_raw[shared])
    drop("duplicate_exact", exact)
    p_len = prompt.str.len().fillna(0).to_numpy()
    n_len = negative.str.len().fillna(0).to_numpy()
    drop("empty_prompt", p_len == 0)
    drop("empty_negative", n_len == 0)
    drop("short_prompt", p_len < rules.min_prompt_chars)
    drop("long_prompt", p_len > rules.max_prompt_chars)
    drop("short_negative", n_len < rules.min_negative_chars)
    drop("long_negative", n_len > rules.max_negative_chars)
    if rules.min_likes > 0:  # unknown likes cannot prove the threshold, so they go too
        drop("low_likes", (likes.isna() | (likes < rules.min_likes)).fillna(True))
    else:
        dropped["low_likes"] = 0
    if rules.nsfw_filter:
        drop("nsfw", nsfw_mask(prompt))
    else:
        dropped["nsfw"] = 0
    dup = np.zeros(len(prompt), dtype=bool)
    dup[alive] = pair[alive].duplicated(keep="first").to_numpy()
    drop("duplicate_normalised", dup)
    return _Cleaned(prompt, negative, alive, p_codes, p_uniques, n_len,
                    {r: dropped[r] for r in DROP_REASONS})


def clean_frame(df: pd.DataFrame, rules: CleanRules) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean ``df`` (any source, conformed to the 13 columns); return (kept rows, dropped by reason)."""
    df = conform(df)
    c = _clean(df["prompt"], df["negative_prompt"], df["likes"], rules)
    kept = df.assign(prompt=c.prompt, negative_prompt=c.negative)[c.alive].reset_index(drop=True)
    return kept, c.dropped


def _hash_key(seed: int) -> str:
    return f"{seed % 2**64:016x}"  # pandas wants exactly 16 characters


def _group_keys(keys: np.ndarray, threshold: float) -> np.ndarray:
    """The key each prompt key's split is decided by: the smallest key of its near-duplicate group.

    Keys are sorted first, so the groups (and so the split) do not depend on row order.
    """
    if threshold <= 0 or len(keys) < 2:
        return keys
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    rep = np.empty(len(keys), dtype=object)
    rep[order] = sorted_keys[near_duplicate_groups(list(sorted_keys), threshold)]
    return rep


def prompt_groups(prompts: list[str], threshold: float) -> np.ndarray:
    """A group id per prompt, grouped exactly as the split groups them (same key, same near-duplicate
    merge at ``threshold``): retrieval-augmented SFT excludes a training row's own group from its
    neighbours, as the split excludes it from every test prompt's."""
    codes, uniques = _factorize(dedup_key(pd.Series(prompts, dtype="str")))
    keys = pd.Series(uniques, dtype="str").fillna("").to_numpy(dtype=object)
    rep = _group_keys(keys, threshold)  # [n_unique] representative key of each key's group
    group_of_key, _ = pd.factorize(pd.Series(rep, dtype="str"))
    return np.append(group_of_key, -1)[codes]  # a null prompt (code -1) -> group -1


def _labels(codes: np.ndarray, uniques: pd.Index, split: Split) -> tuple[np.ndarray, dict[str, int]]:
    """("train" / "val" / "test" per row, group counts) from the seeded hash of each row's group key.

    ``codes`` index ``uniques`` (-1 for null): normalised prompts, or ``split.group_by`` values. Prompt
    keys are first merged into near-duplicate groups (``split.near_duplicate_threshold``), so a template
    re-run with a word changed stays on one side. A row's split depends only on (group key, seed):
    stable under row order. Fractions hold over groups, hence only roughly over rows.
    """
    keys = pd.Series(uniques, dtype="str").fillna("").to_numpy(dtype=object)
    used = distinct(codes[codes >= 0])
    if not split.group_by:
        keys = keys.copy()
        keys[used] = _group_keys(keys[used], split.near_duplicate_threshold)
    h = pd.util.hash_pandas_object(pd.Series(keys, dtype="str"), index=False,
                                   hash_key=_hash_key(split.seed), categorize=False).to_numpy()
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)  # top 53 bits: exact in a float64
    u = np.append(u, 0.0)[codes]  # code -1 (a null prompt) -> last slot
    groups = len(set(keys[used]))
    counts = {"split_keys": int(len(used)), "split_groups": int(groups),
              "near_duplicates_merged": int(len(used) - groups) if not split.group_by else 0}
    return np.where(u < split.train, "train", np.where(u < split.train + split.val, "val", "test")), counts


def _split_codes(prompt: pd.Series, frame, split: Split) -> tuple[np.ndarray, pd.Index]:
    """What rows are grouped by: the normalised prompt, or the ``split.group_by`` column of ``frame``."""
    if split.group_by:
        return _factorize(pd.Series(frame[split.group_by], dtype="str"))
    return _factorize(dedup_key(prompt.astype("str")))


def split_frame(df: pd.DataFrame, split: Split) -> dict[str, pd.DataFrame]:
    """Seeded train/val/test split grouped by near-duplicate prompt (or a column): no group crosses splits."""
    names, _ = _labels(*_split_codes(df["prompt"], df, split), split)
    return {name: df[names == name].reset_index(drop=True) for name in SPLITS}


def _length_stats(lengths: pd.Series) -> dict[str, float]:
    if lengths.empty:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "mean": round(float(lengths.mean()), 2),
        "median": float(lengths.median()),
        "p95": float(lengths.quantile(0.95)),
        "max": float(lengths.max()),
    }


def data_report(rows_in: int, dropped: dict[str, int], split_rows: dict[str, int],
                negative_chars: np.ndarray | pd.Series, unique_prompts: int,
                texts: dict[str, pd.Series] | None = None) -> dict:
    """The contents of metrics/data.json. ``texts``: the kept ``prompt`` and ``negative_prompt`` columns, whose
    writing is counted under ``syntax`` (``negopt.core.prompt_syntax.syntax_counts``: A1111 weights and emphasis,
    texts past CLIP's 75-token window, textual-inversion names)."""
    rows_out = int(sum(split_rows.values()))
    report = {
        "rows_in": int(rows_in),
        "rows_out": rows_out,
        "dropped": dict(dropped),
        "rows_dropped": int(sum(dropped.values())),
        **{f"rows_{name}": int(n) for name, n in split_rows.items()},
        "unique_prompts": int(unique_prompts),
        "negative_chars": _length_stats(pd.Series(negative_chars, dtype="float64")),
    }
    if texts is not None:
        report["syntax"] = {column: syntax_counts(values.tolist()) for column, values in texts.items()}
    return report


def _read_conformed(raw_file: str | Path) -> pa.Table:
    """The raw parquet as an Arrow table in the 13-column schema (as the scrape stage writes it)."""
    table = pq.read_table(raw_file)
    expected = {"str": pa.types.is_string, "Int64": pa.types.is_integer, "float64": pa.types.is_floating}
    f = table.schema
    if f.names != list(COLUMNS) or not all(
        expected[t](f.field(c).type) or pa.types.is_large_string(f.field(c).type) and t == "str"
        for c, t in COLUMNS.items()
    ):
        table = pa.Table.from_pandas(conform(table.to_pandas()), preserve_index=False)
    return table


def run_clean(raw_file: str | Path, out_dir: str | Path, rules: CleanRules, split: Split) -> dict:
    """The clean stage: read the raw parquet, clean, split, write {train,val,test}.parquet; return the report.

    Same rows as ``split_frame(clean_frame(df)[0], split)``. It stays in Arrow for the 10 columns
    that cleaning does not touch (no pandas round trip), computes prompt keys once, and copies the
    table once per split: that keeps the 256k-row stage as near a bare parquet read + write as the grouping
    allows (bench/bench_clean.py in bench/RESULTS.md).
    """
    table = _read_conformed(raw_file)
    text = table.select(["prompt", "negative_prompt", "likes"]).to_pandas()
    c = _clean(text["prompt"], text["negative_prompt"], text["likes"], rules)
    for col, values in (("prompt", c.prompt), ("negative_prompt", c.negative)):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))
    labels = np.full(len(c.alive), "", dtype=object)
    if split.group_by:
        codes, uniques = _split_codes(c.prompt, table.select([split.group_by]).to_pandas(), split)
        codes = codes[c.alive]
    else:
        codes, uniques = c.p_codes[c.alive], c.p_uniques  # the keys cleaning already computed
    labels[c.alive], groups = _labels(codes, uniques, split)
    split_rows = {}
    for name in SPLITS:
        mask = labels == name
        split_rows[name] = int(mask.sum())
        with atomic_path(Path(out_dir) / f"{name}.parquet") as tmp:
            pq.write_table(table.filter(pa.array(mask)), tmp)
    report = data_report(len(c.alive), c.dropped, split_rows, c.n_len[c.alive],
                         unique_prompts=len(distinct(c.p_codes[c.alive])),
                         texts={"prompt": c.prompt[c.alive], "negative_prompt": c.negative[c.alive]})
    report["split"] = {"group_by": split.group_by or "near-duplicate prompt", **groups}
    if report["rows_out"] + report["rows_dropped"] != report["rows_in"]:  # an invariant, not user input
        raise AssertionError(f"row accounting broken: {report}")
    return report
