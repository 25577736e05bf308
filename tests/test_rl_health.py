"""negopt.rl.health: a crafted healthy run passes; each way a run can collapse turns `healthy` false."""

from __future__ import annotations

import math

import pytest
import torch

from negopt.core.params import RlHealth
from negopt.rl.health import health_checks
from negopt.rl.heldout import distinct_share

WEIGHTS = {"aesthetic": 1.0, "clip": 1.0, "fidelity": 1.0}
BOUNDS = RlHealth(max_abs_z=50.0, max_kl=3.0, min_distinct_ratio=0.5)


def scales(floored: tuple[str, ...] = ()) -> dict:
    out = {}
    for t in WEIGHTS:
        out |= {f"floored_{t}": t in floored, f"within_std_{t}": 0.01 if t in floored else 1.0, f"std_{t}": 2.0}
    return out


def metrics(**over) -> dict:
    sft = [f"neg {i}" for i in range(100)]
    base = {"reward_test_finite": 1.0, "z_test_abs_max": 8.0, "kl_test": 1.2,
            "distinct_negatives_sft": distinct_share(sft), "distinct_negatives_rl": distinct_share(sft[:60] * 2),
            "reward_test_gain": 0.4, "reward_test_gain_se": 0.1}
    return base | over


def test_a_sane_run_is_healthy_without_warnings():
    checks, warnings = health_checks(metrics(), scales(), WEIGHTS, BOUNDS)
    assert checks["healthy"] is True and warnings == []
    assert checks["health_finite"] and checks["health_bounded"] and checks["health_kl"] and checks["health_diversity"]


def test_all_identical_negatives_are_a_collapse():
    # the run: one negative for every test prompt
    collapsed = distinct_share(["easynegative"] * 178)
    assert collapsed == pytest.approx(1 / 178)
    checks, warnings = health_checks(metrics(distinct_negatives_sft=0.124, distinct_negatives_rl=collapsed),
                                     scales(), WEIGHTS, BOUNDS)
    assert checks["healthy"] is False and checks["health_diversity"] is False
    assert checks["health_kl"] and checks["health_bounded"]  # only the failing check is named
    assert len(warnings) == 1 and "collapsed negatives" in warnings[0] and "0.006" in warnings[0]


def test_diversity_bound_is_a_ratio_of_sfts_share():
    ok, _ = health_checks(metrics(distinct_negatives_sft=0.2, distinct_negatives_rl=0.1), scales(), WEIGHTS, BOUNDS)
    bad, _ = health_checks(metrics(distinct_negatives_sft=0.2, distinct_negatives_rl=0.099), scales(), WEIGHTS, BOUNDS)
    assert ok["health_diversity"] and not bad["health_diversity"]


def test_huge_kl_is_unhealthy():
    checks, warnings = health_checks(metrics(kl_test=5.0), scales(), WEIGHTS, BOUNDS)
    assert checks["healthy"] is False and checks["health_kl"] is False
    assert any("KL(RL || SFT)" in w and "rl.kl_coef" in w for w in warnings)


@pytest.mark.parametrize("bad", [{"reward_test_finite": 0.75}, {"z_test_abs_max": float("nan"), "reward_test_finite": 0.0}])
def test_non_finite_rewards_are_unhealthy(bad):
    checks, warnings = health_checks(metrics(**bad), scales(), WEIGHTS, BOUNDS)
    assert checks["healthy"] is False and checks["health_finite"] is False
    assert any("non-finite" in w for w in warnings)
    if "z_test_abs_max" in bad:
        assert checks["health_bounded"] is False  # NaN never passes a bound


def test_a_reward_blown_up_by_a_tiny_scale_is_out_of_range():
    # the clip_test_sft: 29,370,046 scales from the mean
    checks, warnings = health_checks(metrics(z_test_abs_max=2.937e7), scales(), WEIGHTS, BOUNDS)
    assert checks["healthy"] is False and checks["health_bounded"] is False
    assert any("reward out of range" in w and "2.94e+07" in w for w in warnings)


def test_a_floored_weighted_term_warns_but_stays_healthy_and_a_dropped_one_is_silent():
    checks, warnings = health_checks(metrics(), scales(floored=("clip",)), WEIGHTS, BOUNDS)
    assert checks["healthy"] is True and checks["health_scales_floored"] == 1
    assert len(warnings) == 1 and "scale floor applied to clip" in warnings[0]
    checks, warnings = health_checks(metrics(), scales(floored=("clip",)), WEIGHTS | {"clip": 0.0}, BOUNDS)
    assert checks["health_scales_floored"] == 0 and warnings == []


def test_kl_to_sft_is_zero_for_the_same_model_and_positive_after_a_change(tiny_zoo, tiny_params):
    import torch

    from negopt.models.loader import load_policy
    from negopt.rl.heldout import kl_to_sft

    params = tiny_params.model_copy(update={"rl": tiny_params.rl.model_copy(update={"max_new_tokens": 6, "k": 2})})
    sft, tok = load_policy(str(tiny_zoo / "t5"), torch.device("cpu"))
    prompts = ["a red fox in snow", "a castle at dusk", "neon city street"]
    assert kl_to_sft(sft, sft, tok, prompts, params, batch=2) == 0.0
    moved, _ = load_policy(str(tiny_zoo / "t5"), torch.device("cpu"))
    with torch.no_grad():
        moved.lm_head.weight.mul_(3.0)  # sharper next-token distributions: a different policy
    assert kl_to_sft(moved, sft, tok, prompts, params, batch=2) > 0.0


def test_weighted_sum_reward_standardises_each_term_by_its_calibration():
    import torch

    from negopt.reward.term_stats import TermStats
    from negopt.reward.weighted import weighted_sum_reward

    class Scorer:
        def reward_terms(self, images, prompts, marginal=None):
            return {"aesthetic": torch.tensor([1.0, 3.0]), "clip": torch.tensor([-50.0, 10.0]),
                    "fidelity": torch.tensor([0.0, 0.0])}

    # one group of 4: aesthetic 1, 3, 1, 3 (mean 2, within-group std sqrt(4 / 3)); clip -50, 10, -50, 10
    # (mean -20, within-group std sqrt(3600 / 3))
    stats = TermStats()
    stats.update({"aesthetic": torch.tensor([1.0, 3.0, 1.0, 3.0]), "clip": torch.tensor([-50.0, 10.0, -50.0, 10.0]),
                  "fidelity": torch.tensor([0.0, 1.0, 0.0, 1.0])}, group_size=4)
    r, info = weighted_sum_reward(Scorer(), {"aesthetic": 1.0, "clip": 1.0, "fidelity": 0.0}, stats,
                                  torch.ones(2))(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ["a", "b"], {})
    a, c = (4 / 3) ** 0.5, (3600 / 3) ** 0.5
    assert r.tolist() == pytest.approx([-1 / a - 30 / c, 1 / a + 30 / c]) and info["raw"]["clip"][0].item() == -50.0


def test_gain_se_by_seeds_decomposes_the_paired_variance_by_hand():
    from negopt.rl.heldout import gain_se_by_seeds

    # RL - SFT per (prompt, seed): within-prompt variances 2, 0, 2 -> w = 4/3; prompt means 2, 5, 1 -> v = 13/3;
    # b = v - w / 2 = 11/3. SE(S') = sqrt((b + w / S') / 3): S'=2 is the plan's own SE sqrt(v / 3)
    diff = torch.tensor([[1.0, 3.0], [5.0, 5.0], [0.0, 2.0]])
    out = gain_se_by_seeds(diff, seeds=(1, 2, 4))
    assert out["within_prompt_var"] == pytest.approx(4 / 3)
    assert out["between_prompt_var"] == pytest.approx(11 / 3)
    assert out["gain_se_at_2_seeds"] == pytest.approx(math.sqrt(13 / 9))
    assert out["gain_se_at_1_seeds"] == pytest.approx(math.sqrt(5 / 3))
    assert out["gain_se_at_4_seeds"] == pytest.approx(math.sqrt((11 / 3 + 1 / 3) / 3))
    assert out["gain_over_se_at_1_seeds"] == pytest.approx((8 / 3) / math.sqrt(5 / 3))
    # seed noise larger than the prompt spread: b is floored at 0, not negative
    assert gain_se_by_seeds(torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]]))["between_prompt_var"] == 0.0
    assert gain_se_by_seeds(torch.ones(4, 1)) == {}  # one seed: no within-prompt variance to estimate
