"""RLOO and PPO-clip losses and their gradients against hand-computed values."""

import math

import pytest
import torch

from negopt.rl.loss import policy_loss, ppo_clip_loss, rloo_loss


def test_rloo_loss_and_gradient_by_hand():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, 3.0])
    loss = rloo_loss(logp, adv)
    assert loss.item() == pytest.approx(3.5)  # -((1*-1) + (3*-2)) / 2
    loss.backward()
    assert logp.grad.tolist() == [-0.5, -1.5]  # -A / N: descending raises logp where A > 0


def test_rloo_loss_does_not_backprop_into_advantages():
    adv = torch.tensor([1.0, -1.0], requires_grad=True)
    rloo_loss(torch.tensor([-1.0, -2.0], requires_grad=True), adv).backward()
    assert adv.grad is None


def test_ppo_clip_by_hand():
    # ratios 1.5, 0.5, 1.1 with eps 0.2 and advantages 1, -1, 2:
    #   1: max(-1.5, -1.2) = -1.2 (clipped, no gradient)
    #   2: max(0.5, 0.8) = 0.8 (clipped, no gradient)
    #   3: max(-2.2, -2.2) = -2.2 (inside the range: gradient -A * ratio / N)
    logp = torch.tensor([math.log(1.5), math.log(0.5), math.log(1.1)], requires_grad=True)
    old = torch.zeros(3)
    loss, stats = ppo_clip_loss(logp, old, torch.tensor([1.0, -1.0, 2.0]), clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([0.0, 0.0, -2.2 / 3]))
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    assert stats["approx_kl"] == pytest.approx(-(math.log(1.5) + math.log(0.5) + math.log(1.1)) / 3)


def test_ppo_equals_rloo_gradient_at_ratio_one():
    # on-policy (ratio 1) the clipped surrogate has the REINFORCE gradient
    adv = torch.tensor([0.5, -2.0, 1.0])
    a = torch.tensor([-1.0, -3.0, -2.0], requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    rloo_loss(a, adv).backward()
    ppo_clip_loss(b, b.detach(), adv, 0.2)[0].backward()
    assert torch.allclose(a.grad, b.grad)


def test_policy_loss_dispatch_errors():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="logp_old"):
        policy_loss("ppo", x, x)
    with pytest.raises(ValueError, match="rl.algo"):
        policy_loss("grpo", x, x)
    assert policy_loss("rloo", x, x)[1] == {}
