"""Checkpoint selection (negopt/rl/selection.py): fake val distinct shares -> the step kept, by hand."""

from __future__ import annotations

import pytest
import torch

from negopt.rl.selection import DiversityGuard, kept_step


def test_kept_step_is_the_last_step_at_or_above_the_bound():
    history = [(10, 1.0), (20, 0.6), (30, 0.4), (40, 0.5), (50, 0.2)]
    assert kept_step(history, 0.5) == 40  # 0.5 itself passes; 30 and 50 fail
    assert kept_step(history, 0.61) == 10
    assert kept_step(history, 1.01) == 0  # nothing passes: the SFT weights (step 0)
    assert kept_step([], 0.5) == 0


class Scalar(torch.nn.Module):
    """A one-weight 'policy' whose weight says which step it is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def guard_over(shares: dict[float, float], every: int = 10) -> tuple[DiversityGuard, Scalar]:
    """A guard whose measure looks the distinct share up by the policy's weight (0 = SFT)."""
    policy = Scalar()
    return DiversityGuard(every, 0.5, lambda m: shares[m.w.item()], policy), policy


def test_guard_keeps_the_last_diverse_weights_and_restores_them():
    # SFT share 0.4; steps 10, 20, 30, 35 (the last): ratios 1.0, 0.75, 0.25, 0.125
    shares = {0.0: 0.4, 10.0: 0.4, 20.0: 0.3, 30.0: 0.1, 35.0: 0.05}
    guard, policy = guard_over(shares)
    assert guard.sft_share == 0.4
    assert [guard.due(s, 35) for s in (5, 10, 34, 35)] == [False, True, False, True]
    for step in (10, 20, 30, 35):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
    assert guard.kept_step == 20 and [h[2] for h in guard.history] == pytest.approx([1.0, 0.75, 0.25, 0.125])
    assert guard.restore(policy, 35) == 20 and policy.w.item() == 20.0
    assert guard.report()["kept_step"] == 20 and guard.report()["val_distinct_sft"] == 0.4


def test_guard_keeps_the_final_weights_when_the_final_step_passes():
    guard, policy = guard_over({0.0: 0.2, 10.0: 0.05, 20.0: 0.2})
    for step in (10, 20):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
    assert guard.kept_step == 20
    policy.w.data.fill_(99.0)  # restore must not touch the final weights when they are the kept ones
    assert guard.restore(policy, 20) == 20 and policy.w.item() == 99.0


def test_guard_falls_back_to_sft_when_no_step_passes():
    guard, policy = guard_over({0.0: 0.5, 10.0: 0.1})
    policy.w.data.fill_(10.0)
    guard.observe(10, policy)
    assert guard.restore(policy, 10) == 0 and policy.w.item() == 0.0


def test_guard_state_round_trips_and_a_replayed_step_replaces_its_entry():
    guard, policy = guard_over({0.0: 0.4, 10.0: 0.4, 20.0: 0.1})
    policy.w.data.fill_(10.0)
    guard.observe(10, policy)
    other, _ = guard_over({0.0: 0.4, 10.0: 0.4, 20.0: 0.1})
    other.load_state_dict(guard.state_dict(), guard.kept)
    assert other.kept_step == 10 and other.history == guard.history
    policy.w.data.fill_(20.0)
    other.observe(20, policy)
    other.observe(20, policy)  # a resumed run repeats step 20: one entry, not two
    assert [h[0] for h in other.history] == [10, 20] and other.kept_step == 10


def test_select_every_zero_is_rejected_by_the_guard():
    with pytest.raises(ValueError, match="rl.select_every"):
        DiversityGuard(0, 0.5, lambda m: 1.0, Scalar())


def test_guard_stops_after_patience_consecutive_failures_only():
    # SFT 0.4; ratios at steps 2, 4, 6, 8, 10: 1.0, 0.25 (fail), 0.75, 0.25, 0.25 (fail, fail)
    shares = {0.0: 0.4, 2.0: 0.4, 4.0: 0.1, 6.0: 0.3, 8.0: 0.1, 10.0: 0.1}
    guard, policy = guard_over(shares, every=2)
    guard.patience = 2
    stops = []
    for step in (2, 4, 6, 8, 10):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
        stops.append(guard.stopped())
    assert stops == [False, False, False, False, True]  # one failure (step 4) is not a stop; two in a row are
    assert guard.kept_step == 6 and guard.report()["stopped_early"] is True
    never, p = guard_over(shares, every=2)  # patience 0: never stops
    for step in (4, 8, 10):
        p.w.data.fill_(step)
        never.observe(step, p)
    assert not never.stopped()


def test_failed_once_latches_from_the_first_failing_check():
    # SFT 0.4; ratios at steps 2, 4, 6: 1.0, 0.25 (fail), 0.75: rl.anchor_when=collapse stays on after step 4
    shares = {0.0: 0.4, 2.0: 0.4, 4.0: 0.1, 6.0: 0.3}
    guard, policy = guard_over(shares, every=2)
    seen = []
    for step in (2, 4, 6):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
        seen.append(guard.failed_once())
    assert seen == [False, True, True] and guard.first_failure() == 4


def test_guard_checks_every_step_while_dense_then_every_n():
    # dense 3, every 5, last 12: steps 1, 2, 3 (dense), 5, 10 (every 5), 12 (the last)
    guard = DiversityGuard(5, 0.5, lambda m: 1.0, Scalar(), dense_steps=3)
    assert [s for s in range(1, 13) if guard.due(s, 12)] == [1, 2, 3, 5, 10, 12]
    assert guard.report()["dense_steps"] == 3


def test_overhead_share_is_the_time_outside_images_over_the_loop():
    from negopt.rl.loop import overhead_share

    # 212 s images, 42 sample, 23 update, 97 select (the fresh-clone run before the dense schedule): 162 / 374
    assert overhead_share({"images": 212.0, "sample": 42.0, "update": 23.0, "select": 97.0}) == pytest.approx(162 / 374)
    assert overhead_share({"images": 0.0, "sample": 0.0}) == 0.0
