"""RLOO advantages, KL-penalised rewards and reward-term statistics against hand-computed values."""

import math

import pytest
import torch

from negopt.core.stats import mean_and_se
from negopt.reward.term_stats import TermStats
from negopt.reward.weighted import weighted_reward
from negopt.rl.advantages import kl_penalised_rewards, rloo_advantages


def test_rloo_one_group_by_hand():
    # sum 12; baselines (12-r)/3 = 11/3, 10/3, 3, 2 -> advantages -8/3, -4/3, 0, 4
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), k=4)
    assert torch.allclose(adv, torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]))


def test_rloo_groups_are_independent_and_prompt_major():
    # groups [1, 3] and [10, 4]: with k=2 the baseline is the other sample
    adv = rloo_advantages(torch.tensor([1.0, 3.0, 10.0, 4.0]), k=2)
    assert adv.tolist() == [-2.0, 2.0, 6.0, -6.0]


def test_rloo_ignores_a_constant_per_group_shift():
    # a per-prompt offset (e.g. a good diffusion seed) must not change the advantages
    r = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, 3.0])
    shift = torch.tensor([5.0, 5.0, 5.0, -7.0, -7.0, -7.0])
    assert torch.allclose(rloo_advantages(r, 3), rloo_advantages(r + shift, 3))


def test_rloo_rejects_bad_shapes():
    with pytest.raises(ValueError, match="k=3"):
        rloo_advantages(torch.zeros(4), k=3)
    with pytest.raises(ValueError, match="rl.k"):
        rloo_advantages(torch.zeros(4), k=1)


def test_kl_penalty_by_hand():
    # kl = logp - logp_ref = [1, 0]; penalised = r - 0.5 * kl = [0.5, 2.0]
    pen, kl = kl_penalised_rewards(torch.tensor([1.0, 2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -1.0]), 0.5)
    assert pen.tolist() == [0.5, 2.0]
    assert kl.tolist() == [1.0, 0.0]


def test_term_stats_merged_batches_equal_the_pooled_statistics():
    # [1,2,3] then [4,5]: pooled mean 3, population variance (4+1+0+1+4)/5 = 2
    s = TermStats(names=("a",))
    s.update({"a": torch.tensor([1.0, 2.0, 3.0])})
    s.update({"a": torch.tensor([4.0, 5.0])})
    assert s.count == 5
    assert s.mean["a"] == pytest.approx(3.0)
    assert s.std("a") == pytest.approx(math.sqrt(2.0))


def test_term_stats_group_scale_by_hand():
    # groups [1,3] and [10,14]: group means 2 and 12, within SS = 1+1 + 4+4 = 10 over df 1+1 -> std sqrt(5);
    # a second batch [0,0,6] (one group of 3, mean 2, SS 4+4+16=24, df 2) pools to sqrt(34/4)
    s = TermStats(names=("a",))
    s.update({"a": torch.tensor([1.0, 3.0, 10.0, 14.0])}, group_size=2)
    assert s.within_std("a") == pytest.approx(math.sqrt(5.0))
    assert s.mean["a"] == pytest.approx(7.0)
    z = s.standardise({"a": torch.tensor([7.0 + math.sqrt(5.0)])})["a"]
    assert z.item() == pytest.approx(1.0, abs=1e-6)
    s.update({"a": torch.tensor([0.0, 0.0, 6.0])}, group_size=3)
    assert s.within_df == 4 and s.within_std("a") == pytest.approx(math.sqrt(34 / 4))
    t = TermStats()
    t.load_state_dict(s.state_dict())
    assert t.within_std("a") == pytest.approx(math.sqrt(34 / 4))
    with pytest.raises(ValueError, match="groups of 3"):
        s.update({"a": torch.tensor([1.0, 2.0])}, group_size=3)
    assert s.count == 7 and s.within_df == 4  # a rejected batch leaves the statistics as they were
    with pytest.raises(RuntimeError, match="grouped"):
        TermStats(names=("a",)).within_std("a")
    with pytest.raises(ValueError, match="reward.scale_floor"):
        TermStats(floor=1.5)


def test_term_stats_state_round_trip_and_empty_error():
    s = TermStats(names=("a", "b"))
    with pytest.raises(RuntimeError, match="calibration"):
        s.std("a")
    s.update({"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0, 1.0])}, group_size=2)
    t = TermStats()
    t.load_state_dict(s.state_dict())
    assert t.names == ("a", "b") and t.mean == {"a": 1.0, "b": 1.0} and t.std("a") == pytest.approx(1.0)
    assert t.within_std("a") == pytest.approx(math.sqrt(2.0))  # one group: ss 2 over df 1
    # a constant term has no scale: its z is 0, finite
    assert t.standardise({"a": torch.tensor([1.0]), "b": torch.tensor([2.0])})["b"].tolist() == [0.0]


def test_weighted_reward_by_hand():
    z = {"aesthetic": torch.tensor([1.0, -1.0]), "clip": torch.tensor([0.5, 0.0]), "fidelity": torch.tensor([2.0, 1.0])}
    r = weighted_reward(z, {"aesthetic": 3.0, "clip": 1.0, "fidelity": 0.0})
    assert r.tolist() == [3.5, -3.0]


def test_mean_and_se_by_hand():
    # [1,2,3,4]: mean 2.5, sample variance 5/3, se = sqrt(5/3)/2; a tensor, an array and a list alike
    import numpy as np

    for x in (torch.tensor([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]), [1, 2, 3, 4]):
        m, se = mean_and_se(x)
        assert m == pytest.approx(2.5) and se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_and_se([3.0])[0] == 3.0 and math.isnan(mean_and_se([3.0])[1])
    assert all(math.isnan(v) for v in mean_and_se([]))
