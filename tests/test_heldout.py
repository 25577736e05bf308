"""Held out means held out: no choice of the sft or rl stage reads the test split, and the choices that must read
val do.

One mechanism for both stages: the real stage scripts (``stages/sft.py``, ``stages/rl.py``, each in its own
process, one torch thread) run on three projects that share the train split and the tiny zoo:

- **A**, the reference;
- **B**, A with other test rows (other prompts and negatives): everything deployed is identical to the bit (the
  SFT folder's weights, retrieval index and rerank in ``negopt.json``; the RL weights, its saved calibration, the
  kept step and every selection check), the val metrics too, and only the test metrics differ;
- **C**, A with other val rows: SFT's weights and RL's calibration (train only) are identical, while what must
  read val moves: SFT's val loss and rerank fit, RL's selection checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN, VAL, TEST = 320, 40, 40

SETTINGS = {
    "base": {"device": "cpu"},
    "sft": {"max_steps": 30, "eval_steps": 15, "save_steps": 30, "batch_size": 16, "warmup_steps": 0,
            "max_source_length": 48, "max_target_length": 32, "max_eval_samples": VAL, "max_test_samples": TEST,
            "retrieval": {"k": 1, "self_share": 0.5}, "rerank": {"neighbours": 4, "min_z": 0.0}},
    "decode": {"max_new_tokens": 16},
    "sampling": {"max_new_tokens": 12},
    "reward": {"calibration": {"prompts": 4, "samples_per_prompt": 2}, "image_batch_size": 8},
    "rl": {"steps": 4, "batch_prompts": 4, "k": 2, "restarts": 1, "test": {"prompts": 20, "seeds_per_prompt": 1},
           "selection": {"every": 1, "dense_steps": 4, "diversity_prompts": VAL, "reward_prompts": 8, "min_z": 0.0}},
}


def rows() -> pd.DataFrame:
    """Distinct-prompt rows of the built-in sample, cleaned: train, then val A, test A, test B, val C."""
    from negopt.core.params import CleanRules
    from negopt.data.clean import clean_frame
    from negopt.data.sample import generate_sample

    df, _ = clean_frame(generate_sample(3000, seed=0), CleanRules())
    df = df.drop_duplicates("prompt").reset_index(drop=True)
    assert len(df) >= TRAIN + 2 * VAL + 2 * TEST
    return df


def project(base: Path, name: str, zoo: Path, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> Path:
    """A project folder: params.yaml (SETTINGS on the shared zoo) and the clean splits."""
    from helpers import deep_merge

    root = base / name
    (root / "data/clean").mkdir(parents=True)
    for split, frame in (("train", train), ("val", val), ("test", test)):
        frame.to_parquet(root / f"data/clean/{split}.parquet")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_merge(raw, SETTINGS)
    tiny = raw["models"]["tiny"]
    for key in ("policy", "sd", "clip_pretrained", "clip_config", "aesthetic", "inception", "hpsv2", "hpsv2_config",
                "pickscore", "pickscore_processor"):
        tiny[key] = str(zoo.parent.parent / tiny[key])  # models/tiny/... of the shared zoo
    tiny["textual_inversions"] = {name: str(zoo.parent.parent / f) for name, f in tiny["textual_inversions"].items()}
    tiny |= {"image_size": 32, "num_inference_steps": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def run_stage(root: Path, stage: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{root.name} {stage}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from negopt.models.tiny import build_tiny_zoo

    base = tmp_path_factory.mktemp("heldout")
    df = rows()
    train = df.iloc[:TRAIN]
    cut = [TRAIN + i * VAL for i in range(5)]
    val_a, test_a, test_b, val_c = (df.iloc[a:a + VAL] for a in cut[:4])
    zoo = base / "models" / "tiny"
    texts = [t for col in ("prompt", "negative_prompt") for t in train[col]]
    build_tiny_zoo(texts, zoo, seed=0, t5_vocab_size=400, sd_vocab_size=400)
    out = {"A": project(base, "A", zoo, train, val_a, test_a), "B": project(base, "B", zoo, train, val_a, test_b),
           "C": project(base, "C", zoo, train, val_c, test_a)}
    for root in out.values():
        run_stage(root, "sft")
        run_stage(root, "rl")
    return out


def content(path: Path):
    """A file's bytes; a safetensors file's tensors (as bytes) and metadata, whose order in the header is not
    fixed from one process to the next."""
    if path.suffix != ".safetensors":
        return path.read_bytes()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in sorted(f.keys())}


def files(folder: Path, *, skip: tuple[str, ...] = ("README.md",)) -> dict[str, object]:
    """Every file of a model folder (but its card, which shows test metrics and examples), by name."""
    return {p.name: content(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in skip}


def metrics(root: Path, stage: str) -> dict:
    return json.loads((root / "metrics" / f"{stage}.json").read_text())


SFT_VAL = ("eval_loss", "rerank", "rerank_val_rougeL", "rerank_val_rougeL_own", "rerank_val_gain_z", "rerank_weights")
SFT_CHOICES = ("train_loss", "steps", "n_train", "n_val")
RL_CHOICES = ("kept_step", "steps", "steps_total", "attempt", "selection", "calibration")


def test_no_sft_choice_reads_the_test_split(runs):
    a, b = runs["A"], runs["B"]
    deployed = files(a / "models/sft")
    assert {"model.safetensors", "negopt.json", "retrieval.safetensors", "retrieval.json"} <= set(deployed)
    assert deployed == files(b / "models/sft")
    ma, mb = metrics(a, "sft"), metrics(b, "sft")
    assert {k: ma[k] for k in SFT_VAL + SFT_CHOICES} == {k: mb[k] for k in SFT_VAL + SFT_CHOICES}
    # ... and the test metrics do read the test split
    assert ma["rougeL"] != mb["rougeL"] and ma["rougeL_baseline_retrieval"] != mb["rougeL_baseline_retrieval"]


def test_no_rl_choice_reads_the_test_split(runs):
    a, b = runs["A"], runs["B"]
    deployed = files(a / "models/rl")
    assert {"model.safetensors", "reward_calibration.safetensors", "negopt.json"} <= set(deployed)
    assert deployed == files(b / "models/rl")
    ma, mb = metrics(a, "rl"), metrics(b, "rl")
    assert {k: ma[k] for k in RL_CHOICES} == {k: mb[k] for k in RL_CHOICES}
    assert len(ma["selection"]["history"]) >= 4  # the checks ran (and read val)
    for key in ("reward_test_sft", "reward_test_rl", "negative_chars_sft"):
        assert ma[key] != mb[key], key


def test_the_choices_that_must_read_val_do(runs):
    a, c = runs["A"], runs["C"]
    assert files(a / "models/sft", skip=("README.md", "negopt.json"))["model.safetensors"] == \
        files(c / "models/sft")["model.safetensors"]  # SFT trains on train alone
    sa, sc = metrics(a, "sft"), metrics(c, "sft")
    assert sa["eval_loss"] != sc["eval_loss"]
    assert (sa["rerank_val_rougeL"], sa["rerank_val_rougeL_own"]) != (sc["rerank_val_rougeL"], sc["rerank_val_rougeL_own"])
    ra, rc = metrics(a, "rl"), metrics(c, "rl")
    assert ra["calibration"] == rc["calibration"]  # calibrated on train prompts alone
    assert ra["selection"]["val_distinct_sft"] != rc["selection"]["val_distinct_sft"] or \
        ra["selection"]["history"] != rc["selection"]["history"]
