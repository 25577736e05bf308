"""Write files into a Hugging Face hub cache exactly as ``hf download`` lays them out.

``HF_HUB_CACHE/models--<org>--<name>/``::

    refs/main                      the commit hash (40 hex) that ``main`` points to
    blobs/<sha256>                 each file's bytes, named by content
    snapshots/<commit>/<path>      relative symlinks into ../../blobs

``huggingface_hub`` (``snapshot_download(local_files_only=True)``, ``hf_hub_download`` offline,
``try_to_load_from_cache``) resolves a repo id through ``refs/main`` to the snapshot folder, so code
that loads a hub id reads these files with no change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def repo_folder(cache_dir: str | Path, repo_id: str, repo_type: str = "model") -> Path:
    """``<cache>/<type>s--<org>--<name>`` (huggingface_hub's naming)."""
    return Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def fake_commit(repo_id: str, salt: str) -> str:
    """A deterministic 40-hex commit id for a locally built snapshot (not a real hub revision)."""
    return hashlib.sha1(f"negopt-local:{repo_id}:{salt}".encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def add_file(
    cache_dir: str | Path, repo_id: str, commit: str, rel_path: str, src: Path, repo_type: str = "model"
) -> Path:
    """Move ``src`` into ``blobs/<sha256>`` and link ``snapshots/<commit>/<rel_path>`` to it."""
    root = repo_folder(cache_dir, repo_id, repo_type)
    digest = _sha256(src)
    blob = root / "blobs" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    if blob.exists():
        Path(src).unlink()
    else:
        shutil.move(str(src), blob)
    link = root / "snapshots" / commit / rel_path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def set_ref(cache_dir: str | Path, repo_id: str, commit: str, ref: str = "main", repo_type: str = "model") -> None:
    """Point ``refs/<ref>`` at ``commit``, written last so a half-built snapshot is never resolved."""
    refs = repo_folder(cache_dir, repo_id, repo_type) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    tmp = refs / f".{ref}.tmp"
    tmp.write_text(commit)
    tmp.replace(refs / ref)
