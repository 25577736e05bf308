"""A ``data.source=file:<path>`` is tracked by content when it lies, or is linked, under ``paths.sources``
(a dep of scrape): editing the file makes `dvc status` report scrape changed. Outside it, the stage
warns that DVC sees only the path string.

The DVC check runs the real `dvc repro scrape` / `dvc status scrape` in a temp git repo holding the
project's tracked files (as tests/test_e2e.py does); only the scrape stage runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import copy_tracked

from negopt.data.sources import untracked_file_warning

VENV_BIN = Path(sys.executable).parent
PAIRS = "prompt,negative_prompt\na red fox in snow,blurry\na castle at dusk,lowres\n"


def test_a_file_outside_paths_sources_is_warned_about_with_the_link_fix(tmp_path):
    warning = untracked_file_warning(f"file:{tmp_path}/pairs.csv", "data/sources")
    assert "outside paths.sources (data/sources)" in warning and "an edit will not re-run scrape" in warning
    assert "ln -s " in warning and "data.source=file:data/sources/pairs.csv" in warning
    assert untracked_file_warning("file:data/sources/pairs.csv", "data/sources") is None
    assert untracked_file_warning("file:./data/sources/sub/pairs.csv", "data/sources") is None
    assert untracked_file_warning("sample", "data/sources") is None


def _run(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.e2e
def test_editing_a_tracked_file_source_changes_scrape(root: Path, tmp_path: Path):
    repo = tmp_path / "negopt"
    copy_tracked(root, repo)
    outside = tmp_path / "elsewhere" / "pairs.csv"  # the real pairs live outside the repo, linked in
    outside.parent.mkdir()
    outside.write_text(PAIRS)
    (repo / "data" / "sources" / "pairs.csv").symlink_to(outside)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = "file:data/sources/pairs.csv"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@negopt.invalid"],
                ["git", "config", "user.name", "t"], ["git", "add", "-A"], ["git", "commit", "-qm", "base"]):
        _run(cmd, repo)
    out = _run(["dvc", "repro", "scrape"], repo)
    assert "scrape: WARNING" not in out and "2 rows from file:data/sources/pairs.csv" in out
    assert "up to date" in _run(["dvc", "status", "scrape"], repo)
    outside.write_text(PAIRS + "neon city street,watermark\n")  # an edit to the file, not to any param
    status = _run(["dvc", "status", "scrape"], repo)
    assert "changed deps" in status and "data/sources" in status
    assert "3 rows" in _run(["dvc", "repro", "scrape"], repo)
