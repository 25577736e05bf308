"""negopt frontier: experiments from `dvc exp show --json` (its real layout), Pareto marks worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from negopt.cli import app
from negopt.compare.frontier import experiments, frontier_markdown, frontier_table, pareto_mask


def record(rev: str, name: str | None, weights: dict | None, terms: dict | None) -> dict:
    """One node as dvc 3 writes it (captured from `dvc exp show --json` of a queued sweep)."""
    metrics = {} if terms is None else {"metrics/rl.json": {"data": {
        **{f"{t}_test_rl": v for t, v in terms.items()}, **{f"{t}_raw_test_rl": 10 * v for t, v in terms.items()},
        "reward_test_rl": 0.0}}}
    params = {"params.yaml": {"data": {"reward": {"weights": weights}} if weights else {"rl": {"steps": 2}}}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": params, "metrics": metrics}, "error": None,
            "experiments": None}


def exp_show() -> list[dict]:
    base = record("a" * 40, "main", {"aesthetic": 1.0, "clip": 1.0, "fidelity": 1.0}, {"aesthetic": 0.1, "clip": 0.2,
                                                                                       "fidelity": 0.0})
    base["experiments"] = [
        {"revs": [record("b" * 40, "exp-aes", {"aesthetic": 3.0, "clip": 1.0, "fidelity": 1.0},
                         {"aesthetic": 0.5, "clip": 0.1, "fidelity": 0.0})], "executor": {"state": "success"},
         "name": "exp-aes"},
        # dominated by main: worse on aesthetic and clip, equal on fidelity
        {"revs": [record("c" * 40, "exp-bad", {"aesthetic": 1.0, "clip": 0.0, "fidelity": 1.0},
                         {"aesthetic": 0.05, "clip": 0.1, "fidelity": 0.0})], "executor": {"state": "success"},
         "name": "exp-bad"},
        {"revs": [record("d" * 40, "exp-queued", {"aesthetic": 0.0, "clip": 3.0, "fidelity": 1.0}, None)],
         "executor": {"state": "queued"}, "name": "exp-queued"},
    ]
    workspace = record("workspace", None, {"aesthetic": 9.0, "clip": 1.0, "fidelity": 1.0},
                       {"aesthetic": 9.0, "clip": 9.0, "fidelity": 9.0})
    return [workspace, base]


def test_pareto_mask_by_hand():
    pts = np.array([[1, 1], [2, 0], [0.5, 0.5], [1, 1], [2, 0.0]])
    # (0.5, 0.5) is dominated by (1, 1); duplicates do not dominate each other
    assert pareto_mask(pts).tolist() == [True, True, False, True, True]
    assert pareto_mask(np.array([[0.0, 0.0, 1.0]])).tolist() == [True]


def test_experiments_read_from_exp_show_layout():
    exps = experiments(exp_show())
    assert exps["name"].tolist() == ["main", "exp-aes", "exp-bad"]  # no workspace, no queued run
    assert exps.loc[1, "w_aesthetic"] == 3.0 and exps.loc[1, "aesthetic"] == 0.5
    assert experiments(exp_show(), raw=True).loc[1, "aesthetic"] == pytest.approx(5.0)
    assert "workspace" in experiments(exp_show(), include_workspace=True)["rev"].tolist()
    table, terms = frontier_table(exps)
    assert terms == ["aesthetic", "clip", "fidelity"]
    assert table["pareto"].tolist() == [True, True, False]
    md = frontier_markdown(table, terms)
    assert "| exp-aes | 3 | 1 | 1 | +0.5000 | +0.1000 | +0.0000 | * |" in md
    assert "| exp-bad | 1 | 0 | 1 | +0.0500 | +0.1000 | +0.0000 |  |" in md


def test_no_experiments_names_the_fix():
    with pytest.raises(ValueError, match="run the sweep first"):
        frontier_table(experiments([record("workspace", None, None, None)]))


def test_cli_writes_table_and_plot(tmp_path):
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show()))
    res = CliRunner().invoke(app, ["frontier", "--exp-json", str(saved), "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    assert "| exp-aes |" in res.output and (tmp_path / "f/frontier.png").read_bytes()[:4] == b"\x89PNG"
    csv = (tmp_path / "f/frontier.csv").read_text().splitlines()
    assert csv[0].split(",")[-1] == "pareto" and len(csv) == 4


def world_record(rev: str, kl: float, aesthetic: float, true_quality: float) -> dict:
    """A world run's node: one weight, rl.kl_coef, and the oracle's true quality in rl.json."""
    node = record(rev, f"kl-{kl:g}", {"aesthetic": 1.0}, {"aesthetic": aesthetic})
    node["data"]["params"]["params.yaml"]["data"]["rl"] = {"kl_coef": kl, "steps": 12}
    node["data"]["metrics"]["metrics/rl.json"]["data"]["oracle_true_quality_rl"] = true_quality
    return node


def test_world_runs_add_the_oracle_axis_and_the_kl_coef_setting():
    # a kl_coef sweep: the low-KL run wins the learned term but loses true quality (a gamed reward), the middle
    # one is dominated on both, so only with the oracle axis is the high-KL run on the frontier
    nodes = [world_record("a" * 40, 0.1, 0.9, 0.30), world_record("b" * 40, 0.3, 0.5, 0.28),
             world_record("c" * 40, 1.0, 0.4, 0.40)]
    exps = experiments(nodes + [{**world_record("d" * 40, 3.0, 0.0, 0.0), "rev": "workspace"}])
    assert exps["kl_coef"].tolist() == [0.1, 0.3, 1.0]
    table, terms = frontier_table(exps)
    assert terms == ["aesthetic", "true_quality"]
    assert table["pareto"].tolist() == [True, False, True]
    learned_only, _ = frontier_table(exps.drop(columns="true_quality"))
    assert learned_only["pareto"].tolist() == [True, False, False]
    md = frontier_markdown(table, terms)
    assert md.splitlines()[0] == "| experiment | w_aesthetic | kl_coef | aesthetic (test) | true_quality (test) | pareto |"
    assert "| kl-1 | 1 | 1 | +0.4000 | +0.4000 | * |" in md
    # a run without the oracle (tiny profile) leaves the axis out for all
    mixed = experiments(nodes[:1] + [record("e" * 40, "tiny", {"aesthetic": 1.0}, {"aesthetic": 0.2})])
    assert frontier_table(mixed)[1] == ["aesthetic"]
