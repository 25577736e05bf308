"""The world profile end to end: the real `dvc repro` in a temp git repo, on the world's users' pairs, with every
world model trained by the models stage (a few steps each) and the oracle judging every method's images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import WORLD_REDUCED, project_repo
from helpers import run_guarded as _run

from negopt.compare.gains import ORACLE
from negopt.world.oracle import ORACLE_KEYS

pytestmark = pytest.mark.e2e

WORLD = {
    "profile": "world",
    "data": {"source": "world", "world": {"rows": 2000}},
    "models": {"world_build": WORLD_REDUCED, "world": {"num_inference_steps": 3}},
    "sft": {"max_steps": 20, "eval_steps": 10, "save_steps": 10, "max_eval_samples": 32, "max_test_samples": 32,
            "rerank": {"neighbours": 0}},
    "reward": {"calibration": {"prompts": 8}},
    "rl": {"steps": 2, "checkpoint_every": 1, "test": {"prompts": 8}, "restarts": 0,
           "selection": {"diversity_prompts": 8, "reward_prompts": 8, "min_z": 0.0}},
    "generate": {"num_prompts": 4, "seeds_per_prompt": 1},
    "evaluate": {"is_splits": 2},
    "compare": {"grid_prompts": 2},
}


@pytest.fixture(scope="module")
def repo(root: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("world-e2e") / "negopt"
    project_repo(root, dst, WORLD)
    _run(["dvc", "repro"], dst)
    return dst


def read(repo: Path, rel: str):
    return json.loads((repo / rel).read_text())


def test_the_oracle_keys_are_the_ones_compare_labels():
    assert set(ORACLE_KEYS) == set(ORACLE)


def test_world_repro_trains_the_world_and_builds_no_tiny_zoo(repo: Path):
    models = read(repo, "metrics/models.json")
    assert models["profile"] == "world" and min(models["detector_auc"].values()) >= 0.95
    assert [p.name for p in (repo / "models/tiny").iterdir()] == ["NOT_BUILT.json"]
    assert (repo / "models/world/sd/model_index.json").is_file()
    again = _run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout + again.stderr, again.stdout


def test_every_method_has_oracle_values_per_image_and_in_eval(repo: Path):
    eval_metrics = read(repo, "metrics/eval.json")
    per_image = pd.read_parquet(repo / "data/scores/per_image.parquet")
    for method, row in eval_metrics.items():
        images = per_image[per_image["method"] == method]
        for key in ORACLE_KEYS:
            assert row[key] == pytest.approx(images[key].mean()), (method, key)  # the row is the images' mean
        assert -1 <= row["true_quality"] <= 1  # image quality in [0, 1] less a misalignment of up to 1
        for key in ORACLE_KEYS[1:]:  # rates and alignments are shares of images
            assert set(images[key].unique()) <= {0.0, 1.0}, (method, key)


def test_rl_reports_its_gain_in_the_learned_reward_and_in_the_oracle(repo: Path):
    rl = read(repo, "metrics/rl.json")
    for key in ("oracle_test_sft", "oracle_test_rl", "oracle_test_gain", "oracle_test_gain_se",
                "oracle_rate_blur_rl", "oracle_align_fg_sft"):
        assert key in rl, key
    assert rl["oracle_test_gain"] == pytest.approx(rl["oracle_test_rl"] - rl["oracle_test_sft"])
    curve = repo / "dvclive/rl/plots/metrics/train/val_oracle_gain.tsv"
    rows = curve.read_text().splitlines()
    assert rows[0].split("\t")[-1] == "val_oracle_gain" and len(rows) >= 2  # one point per scored check


def test_comparison_and_report_carry_the_oracle(repo: Path):
    eval_metrics = read(repo, "metrics/eval.json")
    comparison = read(repo, "metrics/comparison.json")
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            base = key.removeprefix("vs_")
            for metric in ORACLE:
                ci = gains["ci"][metric]
                assert ci["diff"] == pytest.approx(eval_metrics[cand][metric] - eval_metrics[base][metric])
                assert ci["diff_low"] <= ci["diff_high"]
    page = (repo / "report/index.html").read_text()
    assert "The oracle: what is true about the images" in page and "Produced by the <b>world</b> profile" in page
    assert "Does RL raise the truth, or only its reward?" in page
