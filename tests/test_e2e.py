"""End to end: the real `dvc repro`, `dvc exp run -S ...` and `dvc metrics diff` in a temp git repo.

The temp copy gets a *fast* overlay of params (fewer rows, steps and images) so the whole pipeline
runs in a few minutes on 2 CPU cores; the default params are what `dvc repro` in the README runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

VENV_BIN = Path(sys.executable).parent

# Keys overridden in the temp repo only; every stage still runs its full code path.
FAST = {
    "data": {"sample": {"rows": 2000}},
    "sft": {"max_steps": 40, "eval_steps": 20, "save_steps": 20, "max_eval_samples": 32, "max_test_samples": 32},
    "rl": {"steps": 4, "checkpoint_every": 2, "eval_prompts": 16, "calibration_prompts": 8},
    "generate": {"num_prompts": 4, "seeds_per_prompt": 1},
    "evaluate": {"is_splits": 2},
    "compare": {"grid_prompts": 2},
}


def _merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict):
            _merge(dst.setdefault(key, {}), value)
        else:
            dst[key] = value


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def repo(root: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("e2e") / "negopt"
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        if not (root / rel).exists():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    _merge(params, FAST)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dst)
    _run(["git", "config", "user.email", "e2e@negopt.invalid"], dst)
    _run(["git", "config", "user.name", "negopt e2e"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "e2e baseline"], dst)
    _run(["dvc", "repro"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "e2e repro"], dst)
    return dst


def test_repro_writes_every_declared_output(repo: Path):
    for name in ("scrape", "data", "sft", "rl", "eval", "comparison"):
        assert (repo / "metrics" / f"{name}.json").exists(), name
    data = json.loads((repo / "metrics" / "data.json").read_text())
    assert data["rows_in"] == data["rows_out"] + sum(data["dropped"].values())
    for split in ("train", "val", "test"):
        assert (repo / "data" / "clean" / f"{split}.parquet").exists()
    assert (repo / "report" / "index.html").exists()
    status = _run(["dvc", "status"], repo).stdout
    assert "changed" not in status, status


def test_exp_run_with_override_changes_metrics(repo: Path):
    _run(["dvc", "exp", "run", "-S", "data.split.seed=7"], repo)
    diff = _run(["dvc", "metrics", "diff", "--json"], repo).stdout
    changed = json.loads(diff)
    assert "metrics/data.json" in changed, diff
    exp_diff = _run(["dvc", "exp", "diff", "--json"], repo).stdout
    assert "data.split.seed" in exp_diff or "seed" in exp_diff, exp_diff
