"""Atomic writes and small file helpers.

Every output goes to a temporary sibling first, is flushed to disk (``fsync`` of the file, or of every
file in a folder) and renamed into place, and the parent folder is fsynced after the rename. So a crash,
even a power loss, never leaves a half-written file that a later stage (or DVC) would take for a
finished one: a reader sees the old version or the new one.

A writer killed before its rename leaves only its temp sibling (``.NAME.XXXXXXXX[suffix]``, never the final
name); the next write of the same path removes such leftovers, so repeated kills do not fill the disk.
A folder is replaced in two renames (old aside to ``.NAME.old``, new into place); a kill between them leaves
the final name absent and the old version whole under ``.NAME.old``, which ``recover_dir`` puts back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a folder's entries, to disk (a folder fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (bottom-up), then ``root`` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(folder)


def _remove_leftovers(path: Path, suffix: str) -> None:
    """Delete temp siblings of ``path`` left by killed writers: mkstemp/mkdtemp's ``.NAME.`` + 8 characters
    + ``suffix`` exactly, so no other output of the folder (say ``NAME.x``'s temp files) ever matches."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(suffix))
    for sibling in path.parent.iterdir():
        if pattern.fullmatch(sibling.name):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


def recover_dir(path: str | Path) -> None:
    """Put back the whole old version of a folder that a writer killed between ``atomic_dir``'s two renames
    left absent (moved aside to ``.NAME.old``); a no-op when ``path`` exists or nothing was moved aside."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        os.replace(old, path)
        fsync_path(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success rename it onto ``path``.

    The temp file lives in the same directory so the final ``os.replace`` is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or path.suffix or ".tmp"
    _remove_leftovers(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the final file the usual umask-derived mode.
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces ``path`` (a directory) as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path, "")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append rows and fsync: used for checkpoints that must survive a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
