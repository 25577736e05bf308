"""`negopt suggest` on a trained tiny model (CliRunner, in a temp project folder)."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from negopt.cli import app
from negopt.core.params import Sft
from negopt.models.t5 import build_tiny_t5, load_policy
from negopt.policy.sft import encode_pairs, train_sft
from negopt.suggest import NoModelError, newest_model

MAPPING = {"anime girl": "realistic, 3d", "mountain landscape": "people, text"}
PROMPTS = [f"{p} {i}" for i in range(16) for p in MAPPING]
NEGATIVES = [MAPPING[p.rsplit(" ", 1)[0]] for p in PROMPTS]



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny T5 trained for a few steps on a two-category mapping, saved like stage sft does."""
    tmp = tmp_path_factory.mktemp("suggest")
    model, tok = load_policy(str(build_tiny_t5(PROMPTS + NEGATIVES, tmp / "t5", vocab_size=400, seed=0)))
    sft = Sft(learning_rate=3e-3, batch_size=8, warmup_steps=0, max_steps=50, eval_steps=50, save_steps=50)
    feats = encode_pairs(tok, PROMPTS, NEGATIVES, sft.task_prefix, 24, 16)
    train_sft(model, tok, feats, feats[:4], sft, tmp / "ckpt", seed=0, use_cpu=True)
    model.save_pretrained(tmp / "trained")
    tok.save_pretrained(tmp / "trained")
    return tmp / "trained"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: suggest falls back to models/rl, models/sft
    return tmp_path


def test_suggest_prints_the_learned_negative(trained, project):
    shutil.copytree(trained, project / "models" / "sft")
    result = CliRunner().invoke(app, ["suggest", "anime girl 42"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "realistic" in lines[0], lines


def test_suggest_num_samples_n_lines_reproducibly(trained, project):
    shutil.copytree(trained, project / "models" / "sft")
    args = ["suggest", "mountain landscape 7", "--num", "3", "--seed", "5"]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len(first.stdout.strip().splitlines()) == 3
    assert first.stdout == second.stdout  # same seed, same samples


def test_suggest_without_trained_model_fails_clearly(project):
    result = CliRunner().invoke(app, ["suggest", "a cat"])
    assert result.exit_code == 1
    assert "no trained model" in result.stderr and "dvc repro sft" in result.stderr
    result = CliRunner().invoke(app, ["suggest", "a cat", "--model", str(project / "nowhere")])
    assert result.exit_code == 1 and "not a trained model folder" in result.stderr


def test_newest_model_prefers_the_most_recent(tmp_path):
    rl, sft = tmp_path / "rl", tmp_path / "sft"
    for d, mtime in ((rl, 1_000_000), (sft, 2_000_000)):
        d.mkdir()
        (d / "config.json").write_text("{}")
        os.utime(d / "config.json", (mtime, mtime))
    assert newest_model([rl, sft]) == sft
    os.utime(rl / "config.json", (3_000_000, 3_000_000))  # RL trained after SFT
    assert newest_model([rl, sft]) == rl
    (sft / "config.json").unlink()
    os.utime(rl / "config.json", (1, 1))
    assert newest_model([rl, sft]) == rl  # only trained folders count
    with pytest.raises(NoModelError):
        newest_model([tmp_path / "none"])


def test_suggest_file_reads_the_prompt_files_generate_reads(trained, project):
    """--file takes the same files as generate.prompts: .txt one prompt per line (blank lines skipped), or a
    table's prompt column; one negative per prompt, in order, the same as asking one by one."""
    shutil.copytree(trained, project / "models" / "sft")
    (project / "p.txt").write_text("anime girl 42\n\n  mountain landscape 7  \n")
    pd.DataFrame({"prompt": ["anime girl 42", "mountain landscape 7"]}).to_csv(project / "p.csv", index=False)
    one_by_one = [CliRunner().invoke(app, ["suggest", p]).stdout for p in ("anime girl 42", "mountain landscape 7")]
    for name in ("p.txt", "p.csv"):
        result = CliRunner().invoke(app, ["suggest", "--file", name])
        assert result.exit_code == 0, result.output
        assert result.stdout == "".join(one_by_one)
    missing = CliRunner().invoke(app, ["suggest", "--file", "nope.txt"])
    assert missing.exit_code == 1 and "--file nope.txt: no such file" in missing.stderr
    (project / "empty.txt").write_text("\n \n")
    empty = CliRunner().invoke(app, ["suggest", "--file", "empty.txt"])
    assert empty.exit_code == 1 and "no prompts" in empty.stderr
