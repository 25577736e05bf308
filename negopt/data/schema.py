"""The 13-column ``mikeogezi/negopt_full`` schema that every source is conformed to.

Text columns use pandas' default string dtype; integer columns use the nullable ``Int64`` so a
source that lacks a field (a jsonl file without ``likes``) keeps a null rather than a fake 0.
"""

from __future__ import annotations

import re

import pandas as pd

# Lone UTF-16 surrogates (JSON "\ud800" decodes to one) are valid in a Python str but not in UTF-8,
# so parquet / Arrow refuse them; they become U+FFFD, the replacement character.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_value(v):
    return _SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v

#: column -> pandas dtype, in the dataset's column order.
COLUMNS: dict[str, str] = {
    "id": "str",
    "created_at": "str",
    "prompt": "str",
    "negative_prompt": "str",
    "url": "str",
    "model": "str",
    "sampler": "str",
    "likes": "Int64",
    "height": "Int64",
    "width": "Int64",
    "steps": "Int64",
    "cursor": "Int64",
    "cfg_scale": "float64",
}

TEXT_COLUMNS = [c for c, t in COLUMNS.items() if t == "str"]
INT_COLUMNS = [c for c, t in COLUMNS.items() if t == "Int64"]


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly the 13 columns, in order, with the schema's dtypes.

    Missing columns become nulls; extra columns are dropped. Values that cannot be cast (``"n/a"``
    in ``likes``, a fractional ``steps``) become null instead of failing: cleaning decides later
    whether such a row is kept, and bad rows must never crash a stage.
    """
    out = {}
    n = len(df)
    for col, dtype in COLUMNS.items():
        if col not in df.columns:
            out[col] = pd.Series([None] * n, index=df.index, dtype=dtype)
            continue
        s = df[col]
        if str(s.dtype) == dtype:  # already right (a parquet we wrote): no copy
            out[col] = s
        elif dtype == "str":
            # Keep nulls as nulls (astype(str) would turn None into the text "None").
            s = s.where(s.isna(), s.astype("object").map(_text_value).astype("str")) if s.dtype != "str" else s
            out[col] = s.astype("str")
        else:
            num = pd.to_numeric(s, errors="coerce")
            if dtype == "Int64":
                num = num.where(num.isna() | (num == num.round()))  # 2.5 steps is not an int
                out[col] = num.astype("Float64").astype("Int64")
            else:
                out[col] = num.astype(dtype)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)
