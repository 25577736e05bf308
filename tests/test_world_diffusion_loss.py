"""The world diffusion model's objective, against values worked out by hand on its cosine schedule."""

import math

import pytest
import torch

from negopt.world.train_diffusion import DiffusionConfig, build_scheduler, diffusion_loss


@pytest.fixture(scope="module")
def scheduler():
    return build_scheduler(DiffusionConfig())


def _loss(scheduler, t: int, pred: float, z0: float = 1.0, noise: float = 0.0, gamma: float = 5.0) -> float:
    shape = (1, 2, 3, 3)
    return float(diffusion_loss(torch.full(shape, pred), torch.full(shape, z0), torch.full(shape, noise),
                                torch.tensor([t]), scheduler, gamma))


def test_the_target_is_v(scheduler):
    abar = float(scheduler.alphas_cumprod[500])
    # z0 = 1, noise = 0: v = -sqrt(1 - abar); a prediction of exactly that costs nothing
    assert _loss(scheduler, 500, -math.sqrt(1 - abar), gamma=0.0) == pytest.approx(0.0, abs=1e-12)
    assert _loss(scheduler, 500, 0.0, gamma=0.0) == pytest.approx(1 - abar)


def test_pure_noise_steps_get_almost_no_weight(scheduler):
    # t = 999: abar ~ 2e-9, v ~ -z0 and a zero prediction errs by 1; min-SNR weights it by snr / (snr + 1)
    abar = float(scheduler.alphas_cumprod[999])
    assert abar < 1e-6
    assert _loss(scheduler, 999, 0.0) == pytest.approx(abar / (1 - abar) / (abar / (1 - abar) + 1), rel=1e-3)
    assert _loss(scheduler, 999, 0.0, gamma=0.0) == pytest.approx(1.0, rel=1e-4)


def test_nearly_clean_steps_are_capped_at_gamma(scheduler):
    abar = float(scheduler.alphas_cumprod[10])
    snr = abar / (1 - abar)
    assert snr > 5  # past the cap
    # error 1 everywhere: the loss is the weight, gamma / (snr + 1)
    assert _loss(scheduler, 10, -math.sqrt(1 - abar) + 1.0) == pytest.approx(5.0 / (snr + 1), rel=1e-5)
    assert _loss(scheduler, 10, -math.sqrt(1 - abar) + 1.0, gamma=0.0) == pytest.approx(1.0, rel=1e-5)


def test_below_the_cap_the_weight_is_snr_over_snr_plus_one(scheduler):
    t = 700
    abar = float(scheduler.alphas_cumprod[t])
    snr = abar / (1 - abar)
    assert 0.05 < snr < 5
    assert _loss(scheduler, t, -math.sqrt(1 - abar) + 1.0) == pytest.approx(snr / (snr + 1), rel=1e-5)


def test_an_epsilon_model_predicts_the_noise_with_min_snr_over_snr(scheduler):
    eps = build_scheduler(DiffusionConfig(prediction_type="epsilon"))
    abar = float(eps.alphas_cumprod[10])
    snr = abar / (1 - abar)
    assert _loss(eps, 10, 0.5, noise=0.5, gamma=0.0) == pytest.approx(0.0, abs=1e-12)
    assert _loss(eps, 10, 1.5, noise=0.5) == pytest.approx(5.0 / snr, rel=1e-5)
    assert _loss(eps, 900, 1.5, noise=0.5) == pytest.approx(1.0, rel=1e-5)  # snr < 5: weight 1
