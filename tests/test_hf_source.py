"""data.source=hf reads what `hf download --repo-type dataset mikeogezi/negopt_full` leaves in the hub cache.

The cache is crafted by hand under tmp, in huggingface_hub's layout (refs/main -> snapshots/<sha>/data/
train-*.parquet as relative symlinks into blobs/), with the dataset's real 13 columns and dtypes.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants

from negopt.core.params import Data, HfSource
from negopt.data.sources import SourceError, load_hf, load_source

SHA = "0123456789abcdef0123456789abcdef01234567"
SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("id", "created_at", "prompt", "negative_prompt", "url", "model", "sampler")]
    + [(c, pa.int64()) for c in ("likes", "height", "width", "steps", "cursor")]
    + [("cfg_scale", pa.float64())]
)


def _rows(start: int, n: int) -> pa.Table:
    cols = {
        "id": [f"clexv561600ris601midud{i:03d}" for i in range(start, start + n)],
        "created_at": ["2023-03-07T06:21:31.722Z"] * n,
        "prompt": [f"a castle on a hill number {i}" for i in range(start, start + n)],
        "negative_prompt": ["ugly, blurry"] * n,
        "url": ["https://example.invalid/x.png"] * n,
        "model": ["stable-diffusion"] * n,
        "sampler": ["k_euler_ancestral"] * n,
        "likes": [1 + i for i in range(start, start + n)],
        "height": [512] * n, "width": [768] * n, "steps": [50] * n,
        "cursor": [139_000_000 - i for i in range(start, start + n)],
        "cfg_scale": [7.5] * n,
    }  # fmt: skip
    return pa.table(cols, schema=SCHEMA)


def _add(root, rel: str, table: pa.Table, name: str) -> None:
    blob = root / "blobs" / name
    blob.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, blob)
    link = root / "snapshots" / SHA / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    root = cache / "datasets--mikeogezi--negopt_full"
    _add(root, "data/train-00000-of-00002.parquet", _rows(0, 3), "b" * 64)
    _add(root, "data/train-00001-of-00002.parquet", _rows(3, 2), "c" * 64)
    _add(root, "data/test-00000-of-00001.parquet", _rows(100, 4), "d" * 64)  # another split: not read
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_reads_every_train_shard_in_order_from_the_snapshot(hf_cache):
    df = load_hf(HfSource())
    assert len(df) == 5  # 3 + 2 train rows, none of the 4 test rows
    assert df["prompt"].tolist() == [f"a castle on a hill number {i}" for i in range(5)]
    assert df["likes"].tolist() == [1, 2, 3, 4, 5] and df["cfg_scale"].tolist() == [7.5] * 5


def test_hf_source_conforms_to_the_13_column_schema(hf_cache):
    df, stats = load_source(Data(source="hf"))
    assert list(df.columns) == SCHEMA.names and stats["rows_fetched"] == 5
    assert str(df["cursor"].dtype) == "Int64" and str(df["cfg_scale"].dtype) == "float64"
    assert df["sampler"].iloc[0] == "k_euler_ancestral" and df["id"].str.len().eq(25).all()


def test_other_split_reads_its_own_files(hf_cache):
    assert len(load_hf(HfSource(split="test"))) == 4


def test_missing_split_names_what_the_snapshot_holds(hf_cache):
    with pytest.raises(SourceError, match=r"no parquet for split 'validation'.*train-00000-of-00002"):
        load_hf(HfSource(split="validation"))


def test_uncached_offline_gives_the_hf_download_command(hf_cache):
    with pytest.raises(SourceError) as err:
        load_hf(HfSource(dataset="mikeogezi/not-cached", revision="v2"))
    msg = str(err.value)
    assert "hf download --repo-type dataset mikeogezi/not-cached --revision v2" in msg and "offline" in msg
