"""HPSv2 and PickScore: the formulas by hand, the tiny models through the one loader, evaluate's metrics,
the reward terms (standardised, scored only when weighted) and an RL run rewarded by them."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FakeLive

from negopt.core.errors import UserError
from negopt.core.params import validate_params
from negopt.images.preference import HPSv2Scorer, scaled_cosine
from negopt.models.find import MissingWeightsError, check_components, require_profile
from negopt.models.loader import load_hpsv2, load_pickscore, load_scorer, named_preference
from negopt.reward.terms import TermBatch, models_needed, score_terms, unused_models

CPU = torch.device("cpu")
PROMPTS = ["a portrait of a cat, oil painting", "a castle on a hill, anime style"]

def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --- the formulas, by hand --------------------------------------------------------------------------


def test_scaled_cosine_by_hand():
    # (3, 4) . (4, 3) = 24, both of norm 5: cos 0.96; (1, 0) vs (0, 2): cos 0; (1, 1) vs (-2, -2): cos -1
    img = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    txt = torch.tensor([[4.0, 3.0], [0.0, 2.0], [-2.0, -2.0]])
    assert torch.allclose(scaled_cosine(img, txt, 100.0), torch.tensor([96.0, 0.0, -100.0]))
    assert torch.allclose(scaled_cosine(img, txt, torch.tensor(50.0)), torch.tensor([48.0, 0.0, -50.0]))


class _Features(torch.nn.Module):
    """An open_clip-shaped stub: image features from the mean pixel, text features from the token count."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Module()
        self.visual.preprocess_cfg = {"size": 4, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    def encode_image(self, x):
        return torch.stack([torch.ones(len(x)), x.mean(dim=(1, 2, 3))], dim=1)  # [N, 2]

    def encode_text(self, tokens):
        return torch.stack([tokens.float(), torch.zeros(len(tokens))], dim=1)  # [N, 2]: along (1, 0)


def test_hpsv2_is_100_cosine_of_each_image_with_its_own_prompt():
    # image i: (1, v_i) with v_i its mean pixel in [0, 1]; text: (t, 0) -> cos = 1 / sqrt(1 + v^2)
    imgs = torch.stack([torch.full((3, 4, 4), 0, dtype=torch.uint8), torch.full((3, 4, 4), 255, dtype=torch.uint8)])
    scorer = HPSv2Scorer(_Features(), lambda prompts: torch.tensor([len(p) for p in prompts]), batch_size=1)
    assert torch.allclose(scorer(imgs, ["a", "bb"]), torch.tensor([100.0, 100.0 / math.sqrt(2.0)]))


# --- the tiny models through the loader -------------------------------------------------------------


def test_tiny_hpsv2_loads_through_the_loader_and_scores_100_cosine(tiny_params):
    import open_clip

    scorer = load_hpsv2(tiny_params.active, CPU)
    assert isinstance(scorer.model, open_clip.CLIP) and scorer.SCALE == 100.0
    imgs = images(3)
    prompts = PROMPTS + ["lowres"]
    got = scorer(imgs, prompts)
    with torch.no_grad():  # by hand: normalise the model's own features, 100 x their dot product
        from negopt.images.scorers import clip_pixels

        f_i = scorer.model.encode_image(clip_pixels(imgs, scorer.size, scorer.mean, scorer.std))
        f_t = scorer.model.encode_text(scorer.tokenizer(prompts))
        want = 100 * (f_i / f_i.norm(dim=-1, keepdim=True) * (f_t / f_t.norm(dim=-1, keepdim=True))).sum(-1)
    assert torch.allclose(got, want, atol=1e-4) and got.abs().max() <= 100
    assert not torch.allclose(got, got[0].expand(3))  # it depends on the image and prompt


def test_tiny_pickscore_is_logit_scale_times_cosine(tiny_params):
    from transformers import CLIPModel

    scorer = load_pickscore(tiny_params.active, CPU)
    assert type(scorer.model) is CLIPModel and scorer.max_tokens == 32  # the tiny text encoder's positions
    imgs = images(2)
    base = scorer(imgs, PROMPTS)
    with torch.no_grad():
        scorer.model.logit_scale.fill_(math.log(50.0))  # exp(logit_scale) = 50
        doubled = scorer(imgs, PROMPTS)
        scorer.model.logit_scale.fill_(math.log(100.0))
        hundred = scorer(imgs, PROMPTS)
    assert torch.allclose(hundred, 2 * doubled, atol=1e-5)  # linear in exp(logit_scale)
    cos = doubled / 50.0
    assert cos.abs().max() <= 1 and torch.allclose(base, cos * math.exp(math.log(1 / 0.07)), atol=1e-4)  # CLIP's init
    # by hand: the projected pooled features of the processor's pixels and tokens
    pixels = scorer.processor.image_processor(images=list(imgs), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64)
    tok = scorer.processor.tokenizer(PROMPTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        f_i = scorer.model.visual_projection(scorer.model.vision_model(pixel_values=pixels).pooler_output)
        f_t = scorer.model.text_projection(scorer.model.text_model(**tok).pooler_output)
    assert torch.allclose(cos, torch.nn.functional.cosine_similarity(f_i, f_t), atol=1e-5)


# --- evaluate and the profile -----------------------------------------------------------------------


def test_evaluate_reports_each_named_preference_metric(tiny_params):
    from negopt.compare.evaluate import evaluate_method

    profile = tiny_params.active
    assert named_preference(profile) == ["hpsv2", "pickscore"]
    scorer = load_scorer(profile, CPU, preference=named_preference(profile))
    imgs, prompts = images(4, seed=1), PROMPTS * 2
    row = evaluate_method(scorer, imgs, prompts, 2, 3)
    assert list(row) == ["inception_score", "inception_score_std", "aesthetic", "clip_score", "hpsv2", "pickscore",
                         "n_images"]
    assert row["hpsv2"] == pytest.approx(scorer.preference["hpsv2"](imgs, prompts).mean().item(), abs=1e-5)
    assert row["pickscore"] == pytest.approx(scorer.preference["pickscore"](imgs, prompts).mean().item(), abs=1e-5)
    # a profile that names neither: the row has no preference metric, and none is loaded
    bare = profile.model_copy(update={"hpsv2_name": "", "pickscore": ""})
    assert named_preference(bare) == [] and "hpsv2" not in [s.component for s in check_components(bare)]
    assert "hpsv2" not in evaluate_method(load_scorer(bare, CPU), imgs, prompts, 2, 4)


def test_missing_preference_weights_fail_like_the_others(tiny_params, tmp_path):
    profile = tiny_params.active.model_copy(update={"hpsv2": str(tmp_path / "absent.pt"),
                                                    "pickscore": str(tmp_path / "no-folder")})
    params = tiny_params.model_copy(update={"models": tiny_params.models.model_copy(update={"tiny": profile})})
    with pytest.raises(MissingWeightsError) as err:
        require_profile(params, "tiny")
    text = str(err.value)
    assert "2 component(s) not available" in text and "- hpsv2: open_clip negopt-tiny-hpsv2 / " in text
    assert "- pickscore: " in text and "dvc repro models" in text
    with pytest.raises(MissingWeightsError, match="hpsv2"):
        load_hpsv2(profile, CPU)
    # the rl stage at weight 0 never loads them, so it does not ask for them (paper: ~2 GB each, unread)
    assert unused_models({"aesthetic": 1.0, "hpsv2": 0.0, "pickscore": 0.0}) == {"hpsv2", "pickscore"}
    require_profile(params, "tiny", unused=unused_models({"hpsv2": 0.0, "pickscore": 0.0}))
    with pytest.raises(MissingWeightsError) as err:
        require_profile(params, "tiny", unused=unused_models({"hpsv2": 0.5, "pickscore": 0.0}))
    assert "1 component(s) not available" in str(err.value) and "- hpsv2: " in str(err.value)
    # PickScore's weights present but not its processor: still missing (the scorer needs both)
    no_processor = tiny_params.active.model_copy(update={"pickscore_processor": str(tmp_path / "no-processor")})
    assert not {s.component: s.available for s in check_components(no_processor)}["pickscore"]
    # a weighted term whose model the profile does not name: the error names both keys
    bare = tiny_params.active.model_copy(update={"hpsv2_name": ""})
    with pytest.raises(MissingWeightsError, match=r"reward\.weights\.hpsv2.*models\.<profile>\.hpsv2_name"):
        load_scorer(bare, CPU, preference=["hpsv2"])


# --- reward terms -----------------------------------------------------------------------------------


def test_preference_terms_are_scored_only_when_weighted(tiny_params):
    weights = {"aesthetic": 1.0, "clip": 1.0, "fidelity": 1.0, "hpsv2": 0.0, "pickscore": 0.5}
    params = validate_params(tiny_params.model_dump() | {"reward": tiny_params.reward.model_dump() | {"weights": weights}})
    assert params.reward.weights.scored() == {"aesthetic": 1.0, "clip": 1.0, "fidelity": 1.0, "pickscore": 0.5}
    assert models_needed(params.reward.weights.scored()) == ["pickscore"]
    assert params.reward.weights.model_dump()["hpsv2"] == 0.0  # DVC still tracks the weight
    scorer = load_scorer(tiny_params.active, CPU, preference=["pickscore"])
    imgs = images(2, seed=2)
    raw = score_terms(TermBatch(imgs, PROMPTS, scorer), ("pickscore",))
    assert torch.allclose(raw["pickscore"], scorer.preference["pickscore"](imgs, PROMPTS))
    with pytest.raises(UserError, match="hpsv2 scorer is not loaded"):  # never asked for: not loaded
        score_terms(TermBatch(imgs, PROMPTS, scorer), ("hpsv2",))


def test_rl_trains_on_preference_terms_standardised_like_the_others(tiny_params, tmp_path):
    """Two RL steps on the tiny zoo rewarded by HPSv2 and PickScore only: both are calibrated, logged,
    standardised as (raw - mean) / scale, and the update moves the policy."""
    from negopt.models.loader import load_policy, load_sd_pipeline
    from negopt.reward.weighted import weighted_sum_reward
    from negopt.rl.loop import Components, run_rl

    raw = tiny_params.model_dump()
    raw["paths"] |= {"sft": raw["models"]["tiny"]["policy"], "checkpoints": str(tmp_path / "ck")}
    raw["base"] |= {"device": "cpu", "seed": 3}
    raw["models"]["tiny"] |= {"image_size": 32, "num_inference_steps": 2}
    raw["rl"] |= {"steps": 2, "batch_prompts": 2, "k": 2, "learning_rate": 1e-3}
    raw["sampling"] |= {"max_new_tokens": 6}
    raw["reward"] |= {"calibration": {"prompts": 4, "samples_per_prompt": 2},
                      "weights": {"aesthetic": 0.0, "clip": 0.0, "fidelity": 0.0, "hpsv2": 1.0, "pickscore": 2.0}}
    params = validate_params(raw)
    scorer = load_scorer(params.active, CPU, preference=models_needed(params.reward.weights.scored()))
    policy, tok = load_policy(params.paths.sft, CPU)
    ref, _ = load_policy(params.paths.sft, CPU)
    comp = Components(policy, ref, tok, load_sd_pipeline(params.active, CPU), scorer, sft_dir=params.paths.sft)
    live = FakeLive(tmp_path / "live")
    prompts = [f"{p} {i}" for p in PROMPTS for i in range(4)]
    state = run_rl(params, comp, prompts, live=live)
    assert state.step == 2 and state.stats.names == ("aesthetic", "clip", "fidelity", "hpsv2", "pickscore")
    assert {"train/hpsv2", "train/pickscore"} <= {n for _, n, _ in live.rows}
    assert any(not torch.equal(v, ref.state_dict()[k]) for k, v in policy.state_dict().items())
    # the reward is 1 z(hpsv2) + 2 z(pickscore), each (raw - calibration mean) / calibration scale
    imgs = images(2, size=32, seed=4)
    reward, info = weighted_sum_reward(scorer, params.reward.weights.scored(), state.stats, state.marginal)(imgs, PROMPTS, {})
    cal = state.stats.report()
    z = {t: (scorer.preference[t](imgs, PROMPTS) - cal[f"mean_{t}"]) / cal[f"scale_{t}"] for t in ("hpsv2", "pickscore")}
    assert cal["scale_hpsv2"] > 0 and cal["scale_pickscore"] > 0
    assert torch.allclose(reward, z["hpsv2"] + 2 * z["pickscore"], atol=1e-4)
