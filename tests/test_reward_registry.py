"""The reward-term registry is the one list of terms: registering a toy term is all it takes for the
schema, one RL step, its calibration, the step logs, the test metrics and the model card to carry it.

The toy term is the mean pixel value. ``rl_fakes.FakeImages`` writes the index ``i`` of each
(prompt, negative, seed) triple into two pixels of an otherwise black 3x4x4 image (``i % 256`` and
``i // 256``), so for ``i < 256`` its brightness is ``i / 48`` by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FakeLive
from rl_fakes import (
    PROMPTS,
    WEIGHTS,
    FakeScorer,
    fake_decode,
    hand_terms,
    make_components,
    make_params,
    probs_of,
)

import negopt.rl.loop as loop
from negopt.core.errors import ParamsError
from negopt.reward.terms import REWARD_TERMS, TermBatch, reward_term
from negopt.reward.weighted import weighted_sum_reward
from negopt.rl import heldout as rl_evaluate
from negopt.rl.card import CARD_METRICS, model_card_body, write_rl_card
from negopt.rl.health import health_checks

PIXELS = 3 * 4 * 4
TOY_WEIGHT = 0.25

WITH_TOY = {"reward": {"weights": WEIGHTS | {"brightness": TOY_WEIGHT}}}


@pytest.fixture
def brightness():
    """Register the toy term exactly as a new term would be (the decorator), and unregister it after."""

    @reward_term("brightness", default_weight=0.0)
    def score(batch: TermBatch) -> torch.Tensor:
        """Mean pixel value in [0, 255]."""
        return batch.images.float().mean(dim=(1, 2, 3))

    yield score
    del REWARD_TERMS["brightness"]


def test_an_unregistered_term_fails_naming_its_key(tmp_path):
    with pytest.raises(ParamsError, match=r"reward\.weights\.brightness: no reward term of that name"):
        make_params(tmp_path, WITH_TOY)


def test_a_registered_term_is_a_weight_with_its_default(tmp_path, brightness):
    params = make_params(tmp_path, WITH_TOY)
    # every registered term has a weight; a term with a model of its own (hpsv2, pickscore) at weight 0 is not scored
    assert params.reward.weights.model_dump() == WEIGHTS | {"brightness": TOY_WEIGHT, "hpsv2": 0.0, "pickscore": 0.0}
    assert params.reward.weights.scored() == WEIGHTS | {"brightness": TOY_WEIGHT}
    assert make_params(tmp_path).reward.weights.model_dump()["brightness"] == 0.0  # left out: its registered default
    with pytest.raises(ParamsError, match=r"reward\.weights\.sharpness"):
        make_params(tmp_path, {"reward": {"weights": {"sharpness": 1.0}}})


def test_one_rl_step_calibrates_logs_and_rewards_the_toy_term(fake_images, wiring_t5, tmp_path, monkeypatch,
                                                              brightness):
    k, calib_n = 3, 4 * 3
    params = make_params(tmp_path, WITH_TOY, steps=1, batch_prompts=3, k=k)  # calibration: 4 prompts x 3
    comp = make_components(wiring_t5, fake_images)
    seen = []
    real = loop.compute_advantages
    monkeypatch.setattr(loop, "compute_advantages", lambda rewards, *a: seen.append(rewards.clone()) or real(rewards, *a))
    rolled = []
    real_rollout = loop.rollout
    monkeypatch.setattr(loop, "rollout", lambda *a, **kw: rolled.append(real_rollout(*a, **kw)) or rolled[-1])
    live = FakeLive(tmp_path / "live")
    state = loop.run_rl(params, comp, PROMPTS, live=live)
    # the step's rows and, per row, the render that serves it: a repeated (prompt, negative, seed) renders once
    prompts, image_seeds, _ = loop.step_plan(params.base.seed, 0, PROMPTS, 3)
    step = [(p, n, s) for (p, s), n in zip([(p, s) for p, s in zip(prompts, image_seeds, strict=True) for _ in range(k)],
                                           rolled[0][0].negatives, strict=True)]
    distinct = list(dict.fromkeys(step))
    assert fake_images.triples[calib_n:] == distinct
    image = torch.tensor([calib_n + distinct.index(t) for t in step], dtype=torch.float64)

    # calibration: images 0..11, brightness i / 48; groups (0,1,2), (3,4,5), ...: mean 5.5 / 48, each group's
    # deviations (-1, 0, 1) / 48, so the pooled within-group std is sqrt(4 * 2 / (4 * 2)) / 48 = 1 / 48
    assert state.stats.names == ("aesthetic", "clip", "fidelity", "brightness")
    assert state.stats.mean["brightness"] == pytest.approx(5.5 / PIXELS)
    assert state.stats.within_std("brightness") == pytest.approx(1 / PIXELS)
    assert state.stats.report()["scale_brightness"] == pytest.approx(1 / PIXELS)

    # the step: a row served by image i has brightness i / 48 raw, z = i - 5.5 (images 12..20 without repeats:
    # mean 16 / 48 raw, z 10.5)
    logged = {name: value for _, name, value in live.rows}
    assert logged["train/brightness_raw"] == pytest.approx(float(image.mean()) / PIXELS)
    assert logged["train/brightness"] == pytest.approx(float(image.mean()) - 5.5, rel=1e-5)

    # the reward reaching the advantages is the three wiring terms plus 0.25 * z(brightness), image by image
    marginal = torch.stack([probs_of(n, s) for _, n, s in fake_images.triples[:calib_n]]).mean(0)
    calib, raw = hand_terms(fake_images.triples[:calib_n], marginal), hand_terms(step, marginal)
    expected = torch.zeros(9, dtype=torch.float64)
    for t, w in WEIGHTS.items():
        c = calib[t].double().reshape(-1, k)
        within = math.sqrt(((c - c.mean(1, keepdim=True)) ** 2).sum().item() / (c.shape[0] * (k - 1)))
        expected += w * (raw[t].double() - c.mean().item()) / within
    expected += TOY_WEIGHT * (image - 5.5)
    assert torch.allclose(seen[0].double(), expected, rtol=1e-4, atol=1e-4)


def test_the_toy_term_reaches_the_test_metrics_and_the_model_card(fake_images, wiring_t5, tmp_path, monkeypatch,
                                                                   brightness):
    params = make_params(tmp_path, WITH_TOY, steps=1, test={"prompts": 4, "seeds_per_prompt": 1})
    comp = make_components(wiring_t5, fake_images)
    state = loop.run_rl(params, comp, PROMPTS)
    monkeypatch.setattr(rl_evaluate, "decode_negatives", fake_decode([]))
    monkeypatch.setattr(rl_evaluate, "kl_to_sft", lambda *a, **k: 0.0)
    start = len(fake_images.triples)
    reward_fn = weighted_sum_reward(FakeScorer(fake_images), params.reward.weights.scored(), state.stats, state.marginal)

    class Named(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    metrics, examples = rl_evaluate.evaluate_rl(None, Named("sft"), Named("rl"), None, None, reward_fn, PROMPTS, params)
    # 4 SFT images then 4 RL images, numbered from `start`: raw brightness is the mean index / 48
    assert metrics["brightness_raw_test_sft"] == pytest.approx((start + 1.5) / PIXELS)
    assert metrics["brightness_raw_test_rl"] == pytest.approx((start + 5.5) / PIXELS)
    checks, warnings = health_checks(metrics, state.stats.report(), params.reward.weights.scored(), params.rl.health)
    metrics |= {"calibration": state.stats.report(), **checks, "warnings": warnings}
    body = model_card_body(params, metrics, examples, state.seconds)
    assert f"{TOY_WEIGHT} * z(brightness)" in body
    assert f"| brightness | {TOY_WEIGHT} | " in body and "brightness " in body.split("Per-term test means")[1]
    # the card states the selection rule the run used: by val reward (default) or the last step
    assert "largest paired val reward gain over SFT, if >= `rl.selection.min_z = 3.0` SE (160 val prompts x 1 seeds)" in body
    last = make_params(tmp_path, WITH_TOY, steps=1, selection={"by": "last_step"})
    plain = model_card_body(last, metrics, examples, state.seconds)
    assert "the last step (`rl.selection.by: last_step`)" in plain and "val reward gain" not in plain
    assert "stopped early" not in body  # no selection report: the run went to rl.steps
    assert "denoising steps for training" not in body  # the profile's steps throughout
    fewer = make_params(tmp_path, WITH_TOY | {"reward": WITH_TOY["reward"] | {"rollout_inference_steps": 4}}, steps=1)
    assert "`reward.rollout_inference_steps = 4` denoising steps" in model_card_body(fewer, metrics, examples, state.seconds)
    stale = model_card_body(params, metrics | {"selection": {"stop_reason": "stale"}}, examples, state.seconds)
    assert "1 steps; stopped early: the kept step was `rl.selection.stale_steps = 25` steps old" in stale
    collapsed = model_card_body(params, metrics | {"selection": {"stop_reason": "collapse"}}, examples, state.seconds)
    assert "stopped early: `rl.selection.patience = 3` checks in a row below the bound" in collapsed
    # the card file: the hub's own parser reads its YAML metadata, the body follows
    from huggingface_hub import ModelCard

    card = ModelCard((write_rl_card(tmp_path / "card", params, metrics, examples, state.seconds)).read_text())
    assert card.data.base_model == params.active.policy and card.data.pipeline_tag == "text2text-generation"
    assert card.data.data_license.startswith("synthetic sample") and card.data.license == "apache-2.0"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert set(results) == set(CARD_METRICS)
    assert results["reward_test_gain"] == pytest.approx(metrics["reward_test_gain"]) and card.text.strip() == body.strip()


def test_the_rl_package_and_the_schema_spell_no_term_name(root):
    """Only the registry names the terms: a string constant equal to a term name in negopt/rl/ or the
    schema would be a second list that a new term does not reach (docstrings and comments aside)."""
    import ast

    names = set(REWARD_TERMS)
    reward = [p for p in sorted((root / "negopt" / "reward").glob("*.py")) if p.name != "terms.py"]
    for path in [*sorted((root / "negopt" / "rl").glob("*.py")), *reward, root / "negopt" / "core" / "params.py",
                 root / "stages" / "rl.py"]:
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        spelled = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names
                   and id(n) not in docstrings]
        assert not spelled, f"{path.relative_to(root)} spells term name(s) {spelled}: read negopt.reward.terms instead"
