"""End to end: the real `dvc repro`, `dvc exp run -S ...` and `dvc metrics diff` in a temp git repo.

The temp copy gets a *fast* overlay of params (fewer rows, steps and images) so the whole pipeline
runs in a few minutes on 2 CPU cores; the default params are what `dvc repro` in the README runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import project_repo
from helpers import run_guarded as _run

pytestmark = pytest.mark.e2e

# Keys overridden in the temp repo only; every stage still runs its full code path.
FAST = {
    "data": {"sample": {"rows": 2000}},
    # rerank off: a 40-step model loses to its neighbours' negatives, so the fitted rerank would answer those and
    # 4 RL steps could not change a deployed negative (the sweep's weightings then tie); tests/test_rerank.py covers it
    "sft": {"max_steps": 40, "eval_steps": 20, "save_steps": 20, "max_eval_samples": 32, "max_test_samples": 32,
            "rerank": {"neighbours": 0}},
    # selection by reward as by default, with any positive val gain kept (4 steps cannot reach 3 SE) and one restart
    "reward": {"calibration": {"prompts": 8}},
    "rl": {"steps": 4, "checkpoint_every": 2, "test": {"prompts": 16}, "restarts": 1,
           "selection": {"diversity_prompts": 16, "reward_prompts": 16, "min_z": 0.0}},
    "generate": {"num_prompts": 4, "seeds_per_prompt": 1},
    "evaluate": {"is_splits": 2},
    "compare": {"grid_prompts": 2},
}


@pytest.fixture(scope="module")
def repo(root: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("e2e") / "negopt"
    project_repo(root, dst, FAST)
    _run(["dvc", "repro"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "commit", "-qm", "e2e repro"], dst)
    return dst


def test_repro_writes_every_declared_output(repo: Path):
    for name in ("scrape", "data", "models", "sft", "rl", "eval", "comparison"):
        assert (repo / "metrics" / f"{name}.json").exists(), name
    assert json.loads((repo / "metrics/models.json").read_text())["profile"] == "tiny"
    # the world profile's declared outputs, empty on tiny: a marker and an empty work folder
    assert [p.name for p in (repo / "models/world").iterdir()] == ["NOT_BUILT.json"]
    assert (repo / "checkpoints/world").is_dir() and not any((repo / "checkpoints/world").iterdir())
    data = json.loads((repo / "metrics" / "data.json").read_text())
    assert data["rows_in"] == data["rows_out"] + sum(data["dropped"].values())
    for split in ("train", "val", "test"):
        assert (repo / "data" / "clean" / f"{split}.parquet").exists()
    assert (repo / "report" / "index.html").exists()
    status = _run(["dvc", "status"], repo).stdout
    assert "changed" not in status, status
    # idempotence: a second repro with nothing changed runs no stage (dvc prints "Running stage" for each it runs)
    again = _run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout + again.stderr, again.stdout
    assert "up to date" in again.stdout, again.stdout


@pytest.fixture(scope="module")
def out(repo: Path):
    """The repro's params (with the FAST overlay) and a reader of its JSON outputs."""
    from negopt.core.params import load_params

    params = load_params(repo / "params.yaml")
    return params, lambda rel: json.loads((repo / rel).read_text())


def test_scrape_and_clean_contents(repo: Path, out):
    import pandas as pd

    from negopt.data.clean import dedup_key

    params, read = out
    scrape, data = read("metrics/scrape.json"), read("metrics/data.json")
    raw = pd.read_parquet(repo / "data/raw/pairs.parquet")
    assert scrape["rows_fetched"] == len(raw) == params.data.sample.rows == data["rows_in"]
    splits = {n: pd.read_parquet(repo / f"data/clean/{n}.parquet") for n in ("train", "val", "test")}
    assert [data[f"rows_{n}"] for n in splits] == [len(df) for df in splits.values()]
    assert sum(map(len, splits.values())) == data["rows_out"] == data["rows_in"] - data["rows_dropped"]
    assert data["dropped"]["duplicate_exact"] > 0  # the synthetic sample carries duplicates by design
    keys = {n: set(dedup_key(df["prompt"])) for n, df in splits.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"]) and not (keys["val"] & keys["test"])


def test_models_and_sft_contents(repo: Path, out, monkeypatch):
    import pandas as pd
    from transformers import AutoTokenizer

    from negopt.models.find import check_profile
    from negopt.policy.sft import most_frequent, rouge

    params, read = out
    train = pd.read_parquet(repo / "data/clean/train.parquet")
    tok = AutoTokenizer.from_pretrained(repo / "models/tiny/t5")
    prompt = train.prompt.iloc[0]
    assert len(tok(prompt).input_ids) < len(prompt.encode())  # the BPE merges were learned from train text
    monkeypatch.chdir(repo)  # the profile's paths are relative to the project root
    assert all(s.available for s in check_profile(params, "tiny"))
    sft = read("metrics/sft.json")
    test = pd.read_parquet(repo / "data/clean/test.parquet").head(params.sft.max_test_samples)
    base = rouge([most_frequent(train.negative_prompt.tolist())] * len(test), test.negative_prompt.tolist())
    assert sft["rougeL_baseline_most_frequent"] == pytest.approx(base["rougeL"])  # the TRAIN split's answer
    assert sft["n_test"] == len(test) and sft["steps"] == params.sft.max_steps


def test_rl_contents(repo: Path, out):
    import pandas as pd
    from safetensors.torch import load_file

    params, read = out
    rl = read("metrics/rl.json")
    test_prompts = pd.read_parquet(repo / "data/clean/test.parquet").prompt.nunique()
    assert rl["n_test"] == min(params.rl.test.prompts, test_prompts)
    assert rl["n_test_images"] == rl["n_test"] * params.rl.test.seeds_per_prompt and rl["steps"] <= params.rl.steps
    assert rl["attempt"] <= params.rl.restarts and rl["selection"]["by"] == "val_reward"
    # every diverse check carries its val gain, every collapsed one none; the kept step is the best positive gain
    rows = rl["selection"]["history"]
    assert all((r["ratio"] >= params.rl.selection.min_ratio) == (r["gain"] is not None) for r in rows)
    best = max(((r["gain"], r["step"]) for r in rows if r["gain"] is not None and r["gain"] > 0), default=(0, 0))[1]
    assert rl["kept_step"] == best
    kl = pd.read_csv(repo / "dvclive/rl/plots/metrics/train/kl.tsv", sep="\t")
    assert kl.step.tolist() == list(range(rl["steps_total"]))  # one curve across the attempts
    assert kl.kl.iloc[1:].abs().max() > 0  # the reference stays the SFT model while the policy moves
    sft_w, rl_w = load_file(repo / "models/sft/model.safetensors"), load_file(repo / "models/rl/model.safetensors")
    assert sft_w.keys() == rl_w.keys()
    # the deployed weights are SFT's exactly when no step was kept
    assert (rl["kept_step"] == 0) == all((sft_w[k] == rl_w[k]).all() for k in sft_w)
    assert rl["reward_test_gain_se"] > 0 or rl["kept_step"] == 0
    # the calibration RL trained with is saved beside its weights (best_of_n scores with it: generate's check)
    from safetensors import safe_open

    from negopt.reward.calibration import CALIBRATION_FILE

    with safe_open(str(repo / "models/rl" / CALIBRATION_FILE), framework="pt") as f:
        saved = json.loads(f.metadata()["stats"])
    cal = params.reward.calibration
    assert saved["count"] == min(cal.prompts, len(set(pd.read_parquet(
        repo / "data/clean/train.parquet").prompt))) * cal.samples_per_prompt
    assert {f"mean_{t}": saved["mean"][t] for t in saved["names"]} == {
        k: v for k, v in rl["calibration"].items() if k.startswith("mean_")}


def test_generate_evaluate_compare_contents(repo: Path, out, monkeypatch):
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    from negopt.compare.evaluate import load_images
    from negopt.compare.gains import METRICS, compare_methods
    from negopt.models.loader import load_scorer

    params, read = out
    g = params.generate
    manifest = pd.read_parquet(repo / "data/images/manifest.parquet")
    assert len(manifest) == len(g.methods) * g.num_prompts * g.seeds_per_prompt
    keys = manifest.groupby("method")[["prompt", "seed"]].apply(lambda d: tuple(map(tuple, d.values)))
    assert keys.nunique() == 1  # every method renders the same (prompt, seed) pairs
    test = pd.read_parquet(repo / "data/clean/test.parquet").head(g.num_prompts)
    by = {m: manifest[manifest.method == m].sort_values(["prompt_idx", "seed"]) for m in g.methods}
    assert (by["none"].negative == "").all() and (by["generic"].negative == g.generic_negative).all()
    assert by["ground_truth"].negative.tolist() == test.negative_prompt.tolist()
    first = np.asarray(Image.open(repo / "data/images" / manifest.file.iloc[0]))
    assert first.shape == (params.active.image_size, params.active.image_size, 3) and first.std() > 0
    search = read("metrics/generate.json")["best_of_n"]  # the rl stage's calibration, reused, still counted
    assert search["calibration_reused"] is True and search["calibration_images"] > 0
    ev = read("metrics/eval.json")
    assert list(ev) == list(g.methods) and all(ev[m]["n_images"] == len(by[m]) for m in g.methods)
    assert all(ev[m]["inception_score"] >= 1.0 - 1e-6 for m in g.methods)
    # the CLIP score of one method, recomputed image by image against each image's own prompt
    monkeypatch.chdir(repo)
    scorer = load_scorer(params.active, torch.device("cpu"))
    rows = by["ground_truth"]
    clip = scorer.clip_score(load_images(repo / "data/images", rows.file.tolist()), rows.prompt.tolist())
    assert ev["ground_truth"]["clip_score"] == pytest.approx(float(clip.mean()), rel=1e-4, abs=1e-4)
    # the tiny profile names both preference models: each method has their means, recomputed here for one
    pref = load_scorer(params.active, torch.device("cpu"), preference=["hpsv2", "pickscore"])
    images = load_images(repo / "data/images", rows.file.tolist())
    for name in ("hpsv2", "pickscore"):
        assert all(name in ev[m] for m in g.methods), name
        want = float(pref.preference_score(name, images, rows.prompt.tolist()).mean())
        assert ev["ground_truth"][name] == pytest.approx(want, rel=1e-4, abs=1e-4), name
    comparison = read("metrics/comparison.json")
    intervals = {(c, b): gains.pop("ci") for c, by in comparison.items() for b, gains in by.items()}
    assert comparison == json.loads(json.dumps(compare_methods(ev, params.compare.candidates, params.compare.baselines)))
    # the difference is always defined (a percent gain is not where a resample's baseline is 0: tiny CLIP scores)
    assert all(ci[m]["diff_low"] <= ci[m]["diff_high"] for ci in intervals.values() for m in METRICS)
    scores = pd.read_parquet(repo / "data/scores/per_image.parquet")  # method x prompt x seed, kept as an output
    assert len(scores) == len(manifest) and scores.aesthetic.mean() == pytest.approx(
        np.mean([ev[m]["aesthetic"] for m in g.methods]), rel=1e-5)
    page = (repo / "report/index.html").read_text()
    assert all(f"<th>{m}</th>" in page for m in g.methods) and page.count("<img src='data:image/") >= len(g.methods)


# A small queued sweep over the reward weights, rl stage only (frontier reads metrics/rl.json): two weightings
# besides the baseline's 1/1/1, run by `dvc exp run --run-all`, then `negopt frontier` on `dvc exp show --json`.
SWEEP = [{"reward.weights.aesthetic": "3.0"}, {"reward.weights.clip": "3.0"}]


def test_frontier_from_a_queued_sweep(repo: Path):
    for point in SWEEP:
        # -C checkpoints: the persisted, uncached checkpoint folders (gitignored) go into the experiment's temp
        # copy; without them scrape and sft count as changed and the whole pipeline re-runs per experiment
        _run(["dvc", "exp", "run", "--queue", "rl", "-C", "checkpoints",
              *(a for k, v in point.items() for a in ("-S", f"{k}={v}"))], repo)
    _run(["dvc", "exp", "run", "--run-all", "-j", "1"], repo)
    out = repo.parent / "frontier"
    res = _run([sys.executable, "-m", "negopt.cli", "frontier", "--out", str(out)], repo)
    print(res.stdout)  # the sweep's table, for the log
    table = __import__("pandas").read_csv(out / "frontier.csv")
    assert len(table) == 1 + len(SWEEP), res.stdout
    weights = sorted(tuple(r) for r in table[["w_aesthetic", "w_clip", "w_fidelity"]].itertuples(index=False))
    assert weights == [(1.0, 1.0, 1.0), (1.0, 3.0, 1.0), (3.0, 1.0, 1.0)]
    # each weighting trained its own policy: the test means differ between experiments
    assert table[["aesthetic", "clip", "fidelity"]].drop_duplicates().shape[0] == len(table)
    assert table["pareto"].any() and (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_exp_run_with_override_changes_metrics(repo: Path):
    _run(["dvc", "exp", "run", "-S", "data.split.seed=7"], repo)
    diff = _run(["dvc", "metrics", "diff", "--json"], repo).stdout
    changed = json.loads(diff)
    assert "metrics/data.json" in changed, diff
    exp_diff = _run(["dvc", "exp", "diff", "--json"], repo).stdout
    assert "data.split.seed" in exp_diff or "seed" in exp_diff, exp_diff


def test_tiny_repro_opened_no_connection(repo: Path):
    """Every process of the repro (dvc and each stage) ran with non-loopback sockets refused and logged;
    the guard is live (a probe through it is logged) and the repro's own entries are none."""
    log = repo.parent / "netguard.log"
    entries = log.read_text().splitlines() if log.exists() else []
    assert entries == [], entries
    probe = "import urllib.request\ntry: urllib.request.urlopen('http://192.0.2.1/', timeout=1)\nexcept OSError: pass"
    _run([sys.executable, "-c", probe], repo)
    assert log.read_text().splitlines()[-1] == "-c -> '192.0.2.1'"  # caught at the name lookup
    log.unlink()
