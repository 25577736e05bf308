"""best_of_n: keep the candidate with the highest RL reward, selected on seeds no evaluation uses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import negopt.reward.weighted
from negopt.compare.best_of_n import best_of_n_negatives, pick_best, selection_seeds
from negopt.compare.seeds import prompt_seeds
from negopt.core.params import validate_params

PROMPTS = ["a portrait of a cat oil painting", "a castle on a hill anime style", "a bowl of fruit 2024 photo"]


def test_pick_best_by_hand():
    # prompt 0: candidates 0..2 -> best index 1; prompt 1: 3..5 -> 5; a tie keeps the first (prompt 2: 6)
    rewards = torch.tensor([0.1, 0.9, -1.0, 0.0, -0.5, 2.0, 0.3, 0.3, 0.1])
    assert pick_best(rewards, 3) == [1, 5, 6]


def test_selection_seeds_are_never_evaluation_seeds():
    evals = prompt_seeds(0, 5, 3)
    sel = selection_seeds(1, 5, evals)
    assert len(set(sel)) == 5 and not set(sel) & {s for row in evals for s in row}
    with pytest.raises(ValueError, match="selection_seed=0 gives evaluation seed"):
        selection_seeds(0, 5, evals)  # the evaluation stream's own first seeds


def test_params_refuse_selecting_on_the_evaluation_seed(root):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["generate"]["best_of_n"] = {"n": 4, "selection_seed": raw["generate"]["seed"]}
    with pytest.raises(ValueError, match="selection_seed"):
        validate_params(raw)


@pytest.fixture(scope="module")
def project(tiny_zoo, tiny_params, tmp_path_factory):
    """The tiny zoo's T5 as the SFT model, a 12-prompt train split for the calibration, small rl settings."""
    base = tmp_path_factory.mktemp("bon")
    (base / "clean").mkdir()
    train = [f"{p} {i}" for i in range(4) for p in PROMPTS]
    pd.DataFrame({"prompt": train, "negative_prompt": ["blurry"] * len(train)}).to_parquet(base / "clean/train.parquet")
    raw = tiny_params.model_dump()
    raw["paths"].update(sft=str(tiny_zoo / "t5"), clean=str(base / "clean"), rl=str(base / "rl"))
    raw["reward"].update(calibration={"prompts": 4, "samples_per_prompt": 2}, image_batch_size=8)
    raw["sampling"].update(max_new_tokens=8)
    raw["generate"]["best_of_n"] = {"n": 3, "selection_seed": 5}
    return validate_params(raw)


def test_keeps_the_highest_reward_candidate(project, monkeypatch):
    """With a reward known by hand (the negative's length), the kept negative of each prompt is its
    longest candidate; the selection renders use the selection seeds, shared by a prompt's n candidates."""
    from negopt.models.loader import load_sd_pipeline

    calls = []

    def fake_score(accelerator, pipe, profile, reward_fn, prompts, negatives, seeds, batch_size):
        calls.append((prompts, negatives, seeds))
        return {"reward": torch.tensor([float(len(n)) for n in negatives])}

    monkeypatch.setattr(negopt.reward.weighted, "score_triples", fake_score)
    evals = prompt_seeds(project.generate.seed, 3, 2)
    pipe = load_sd_pipeline(project.active, torch.device("cpu"))
    kept, report = best_of_n_negatives(project, PROMPTS, evals, pipe, torch.device("cpu"))
    (prompts, candidates, seeds), = calls
    assert prompts == [p for p in PROMPTS for _ in range(3)]
    assert seeds == [s for s in selection_seeds(5, 3, evals) for _ in range(3)]
    assert kept == [max(candidates[3 * i:3 * i + 3], key=len) for i in range(3)]
    assert report["selection_images"] == 9 and report["calibration_images"] == 4 * 2
    assert report["search_images"] == 17 and report["n"] == 3


def test_real_reward_kept_candidate_scores_at_least_the_mean(project):
    """The real RL reward (calibrated as the rl stage does): the kept candidates' mean reward is the
    mean of each prompt's maximum, so at least the mean over all candidates."""
    from negopt.models.loader import load_sd_pipeline

    pipe = load_sd_pipeline(project.active, torch.device("cpu"))
    kept, report = best_of_n_negatives(project, PROMPTS, prompt_seeds(0, 3, 2), pipe, torch.device("cpu"))
    assert len(kept) == 3 and all(isinstance(k, str) for k in kept)
    assert report["reward_best_mean"] >= report["reward_candidates_mean"]
    assert torch.isfinite(torch.tensor(report["reward_best_mean"]))


def test_reads_the_rl_stage_calibration_and_only_its_own(project, monkeypatch):
    """best_of_n scores with the calibration the rl stage saved for these SFT weights, prompts and settings
    (the same numbers it would compute itself, so the same kept negatives), and computes its own when the
    saved one is another run's."""
    import negopt.reward.calibration
    from negopt.models.loader import load_sd_pipeline
    from negopt.reward.calibration import calibration_key, load_calibration, save_calibration

    cpu = torch.device("cpu")
    pipe = load_sd_pipeline(project.active, cpu)
    evals = prompt_seeds(0, 3, 2)
    computed = []
    calibrate = negopt.reward.calibration.calibrate_rewards

    def counted(*a, **kw):
        computed.append(calibrate(*a, **kw))
        return computed[-1]

    monkeypatch.setattr(negopt.reward.calibration, "calibrate_rewards", counted)
    kept, report = best_of_n_negatives(project, PROMPTS, evals, pipe, cpu)
    (marginal, stats), = computed
    assert report["calibration_reused"] is False and report["calibration_images"] == 8

    rl_dir = Path(project.paths.rl)
    rl_dir.mkdir(exist_ok=True)
    key = calibration_key(project, cpu)
    save_calibration(rl_dir, key, stats, marginal)
    loaded_marginal, loaded_stats = load_calibration(rl_dir, key)
    assert torch.equal(loaded_marginal, marginal) and loaded_stats.state_dict() == stats.state_dict()
    again, report2 = best_of_n_negatives(project, PROMPTS, evals, pipe, cpu)
    assert len(computed) == 1, "a matching saved calibration must not be recomputed"
    assert again == kept and report2["calibration_reused"] is True
    assert report2["reward_best_mean"] == report["reward_best_mean"]
    assert report2["calibration_images"] == 8 and report2["search_images"] == report["search_images"]

    other = validate_params(project.model_dump() | {"reward": project.reward.model_dump() | {
        "calibration": {"prompts": 3, "samples_per_prompt": 2}}})
    assert calibration_key(other, cpu) != key
    fewer_steps = validate_params(project.model_dump() | {"reward": project.reward.model_dump() | {
        "rollout_inference_steps": 1}})
    assert calibration_key(fewer_steps, cpu) != key  # images at other denoising steps: another calibration
    assert load_calibration(rl_dir, calibration_key(other, cpu)) is None
    best_of_n_negatives(other, PROMPTS, evals, pipe, cpu)
    assert len(computed) == 2, "another run's calibration must not be read"
