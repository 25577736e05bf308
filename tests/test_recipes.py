"""Recipes (recipes/*.yaml): validated against the schema merged onto params.yaml, applied as `dvc exp run -S ...`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from negopt.cli import app
from negopt.core.errors import ParamsError
from negopt.recipes import exp_run_command, leaves, load_recipe, merged

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_is_valid_params(recipe):
    assert load_recipe(recipe, ROOT / "params.yaml")


def test_the_real_pairs_recipe_is_one_experiment_with_its_settings(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["recipe", "recipes/real-pairs.yaml", "--dry-run", "--name", "pairs"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        "dvc exp run --name pairs -S data.source=file:data/sources/pairs_dflip3k.jsonl "
        "-S models.tiny_build.t5_pretokenizer=phrase -S models.tiny_build.t5_vocab_size=4000 -S sft.max_steps=1500 "
        "-S sft.max_source_length=160 -S sft.max_target_length=96 -S sft.retrieval.k=1 "
        "-S sft.retrieval.self_share=1.0 -S decode.max_new_tokens=96 -S sampling.max_new_tokens=96")


def test_a_bad_recipe_fails_naming_the_key_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "typo.yaml").write_text("sft:\n  retrieval:\n    kk: 1\n")
    (tmp_path / "range.yaml").write_text("rl:\n  k: 1\n")
    with pytest.raises(ParamsError, match=r"sft\.retrieval\.kk"):
        load_recipe(tmp_path / "typo.yaml")
    result = CliRunner().invoke(app, ["recipe", str(tmp_path / "range.yaml")])
    assert result.exit_code == 2 and "rl.k" in result.stderr and "greater than or equal to 2" in result.stderr
    with pytest.raises(ParamsError, match="no such recipe"):
        load_recipe(tmp_path / "none.yaml")


def test_leaves_merge_and_the_command_by_hand():
    overlay = {"a": {"b": 1, "c": {"d": "x:y"}}, "e": [1, 2], "f": True}
    assert leaves(overlay) == [("a.b", 1), ("a.c.d", "x:y"), ("e", [1, 2]), ("f", True)]
    assert merged({"a": {"b": 0, "z": 9}, "g": 1}, overlay) == {"a": {"b": 1, "z": 9, "c": {"d": "x:y"}}, "g": 1,
                                                                  "e": [1, 2], "f": True}
    assert exp_run_command(leaves(overlay), queue=True) == [
        "dvc", "exp", "run", "--queue", "-S", "a.b=1", "-S", "a.c.d=x:y", "-S", "e=[1, 2]", "-S", "f=true"]
