"""Checkpoint selection (negopt/rl/selection.py): fake val distinct shares -> the step kept, by hand."""

from __future__ import annotations

import pytest
import torch

from negopt.rl.advantages import mean_and_se
from negopt.rl.selection import DiversityGuard, best_gain_step, kept_step


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
    assert guard.report()["stop_reason"] == "collapse"
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
    # selection's val images are generation + scoring too: 100 + 20 of 150 s, overhead 30 / 150
    assert overhead_share({"images": 100.0, "select_images": 20.0, "sample": 10.0, "update": 10.0,
                           "select": 10.0}) == pytest.approx(30 / 150)


def test_best_gain_step_is_the_largest_significant_gain_among_diverse_steps():
    # (step, ratio, gain, se): 1 diverse but under 2 SE; 2 the best significant; 3 larger but not diverse;
    # 4 significant and smaller; 5 not scored (a failing step)
    history = [(1, 1.0, 0.30, 0.2), (2, 0.9, 0.25, 0.1), (3, 0.4, 0.9, 0.1), (4, 0.8, 0.21, 0.1), (5, 0.3, None, None)]
    assert best_gain_step(history, 0.5, 2.0) == 2
    assert best_gain_step(history, 0.5, 1.0) == 1  # at 1 SE step 1's +0.30 counts and is the largest
    assert best_gain_step(history, 0.3, 2.0) == 3  # step 3 passes a looser diversity bound
    assert best_gain_step(history, 0.5, 3.0) == 0  # nothing is 3 SE above SFT: the SFT weights
    assert best_gain_step([(1, 1.0, 0.0, 0.0), (2, 1.0, -0.5, 0.1)], 0.5, 0.0) == 0  # no change / a loss: never kept
    assert best_gain_step([(1, 1.0, 0.2, 0.05), (2, 1.0, 0.2, 0.05)], 0.5, 2.0) == 2  # a tie: the later step


class Gain:
    """A scripted val gain measure: (gain, se) by the policy's weight; records bind and the steps it scored."""

    def __init__(self, table: dict[float, tuple[float, float]]) -> None:
        self.table, self.bound, self.scored = table, None, []

    def bind(self, reward_fn) -> None:
        self.bound = reward_fn

    def __call__(self, model) -> tuple[float, float]:
        self.scored.append(model.w.item())
        return self.table[model.w.item()]


def test_guard_by_reward_keeps_the_best_val_gain_and_scores_only_diverse_steps():
    # SFT share 0.4; steps 1-4: ratios 1, 1, 0.25 (fails: not scored), 1; gains +0.1 (1 SE), +0.5 (5 SE), -, +0.3
    shares = {0.0: 0.4, 1.0: 0.4, 2.0: 0.4, 3.0: 0.1, 4.0: 0.4}
    gain = Gain({1.0: (0.1, 0.1), 2.0: (0.5, 0.1), 4.0: (0.3, 0.1)})
    policy = Scalar()
    guard = DiversityGuard(1, 0.5, lambda m: shares[m.w.item()], policy, gain=gain, min_z=2.0)
    guard.bind_reward("the reward")
    assert gain.bound == "the reward"
    kept = []
    for step in (1, 2, 3, 4):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
        kept.append(guard.kept_step)
    assert kept == [0, 2, 2, 2] and gain.scored == [1.0, 2.0, 4.0]  # step 1 is under 2 SE: SFT stays kept
    assert guard.history[2] == (3, 0.1, 0.25, None, None) and guard.history[1][3:] == (0.5, 0.1)
    assert guard.restore(policy, 4) == 2 and policy.w.item() == 2.0  # the best step, not the last diverse one
    assert guard.report()["by"] == "reward" and guard.report()["min_z"] == 2.0
    # the history (with its unscored rows) round-trips through a checkpoint
    other = DiversityGuard(1, 0.5, lambda m: shares[m.w.item()], Scalar(), gain=Gain({}), min_z=2.0)
    other.load_state_dict(guard.state_dict(), guard.kept)
    assert other.history == guard.history and other.kept_step == 2
    # the same scripted shares without a gain measure keep the last diverse step
    plain, p = guard_over(shares, every=1)
    for step in (1, 2, 3, 4):
        p.w.data.fill_(step)
        plain.observe(step, p)
    assert plain.kept_step == 4 and plain.report()["by"] == "diversity"


def test_val_reward_gain_renders_only_changed_prompts_and_pairs_by_hand(monkeypatch):
    """reward(prompt, negative, seed) = len(negative) + seed % 3: the gain over SFT is known by hand."""
    from types import SimpleNamespace

    from negopt.rl import heldout as ev

    prompts = [f"prompt {i}" for i in range(6)]
    rl = SimpleNamespace(select_reward_prompts=4, select_reward_seeds=2, eval_seed=7, image_batch_size=3)
    params = SimpleNamespace(rl=rl, active=SimpleNamespace(num_inference_steps=8))
    sft, rl_model = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)  # the decode is keyed by a module's weights
    decodes = {sft: lambda p: "ab", rl_model: lambda p: "abcd" if p.endswith(("1", "3", "5")) else "ab"}
    monkeypatch.setattr(ev, "greedy_negatives", lambda model, tok, ps, params: [decodes[model](p) for p in ps])
    rendered = []

    def fake_score(acc, pipe, profile, reward_fn, ps, negs, seeds, batch_size):
        assert profile is params.active  # the profile's own steps, as users render (not rl.rollout_inference_steps)
        rendered.extend(zip(ps, negs, seeds, strict=True))
        return {"reward": torch.tensor([reward_fn(n, s) for n, s in zip(negs, seeds, strict=True)])}

    monkeypatch.setattr(ev, "score_triples", fake_score)
    gain = ev.ValRewardGain(None, None, None, sft, prompts, params)
    plan, seeds = ev.eval_plan(prompts, 4, 7, 2)
    assert gain.prompts == plan and gain.seeds == seeds and len(plan) == 4
    with pytest.raises(RuntimeError, match="bind"):
        gain(rl_model)
    gain.bind(lambda negative, seed: float(len(negative) + seed % 3))
    assert len(rendered) == 8 and gain.images_rendered == 8  # SFT's plan: 4 prompts x 2 seeds, once
    rendered.clear()
    g, se = gain(rl_model)
    changed = [i for i, p in enumerate(plan) if p.endswith(("1", "3", "5"))]
    assert {r[0] for r in rendered} == {plan[i] for i in changed} and len(rendered) == 2 * len(changed)
    # the seeds cancel (same seeds for SFT and RL): a changed prompt gains len("abcd") - len("ab") = 2, others 0
    want = torch.tensor([2.0 if i in changed else 0.0 for i in range(4)], dtype=torch.float64)
    assert (g, se) == pytest.approx(mean_and_se(want))
    rendered.clear()
    assert gain(sft) == (0.0, 0.0) and rendered == []  # nothing changed: nothing rendered, exactly no gain


def test_val_decode_decodes_each_prompt_once_per_weights(monkeypatch):
    """A check's two reads (diversity share, reward plan) cost one decode; any weight change decodes anew."""
    from negopt.rl import heldout as ev

    calls = []

    def fake_greedy(model, tok, ps, params):
        calls.append(list(ps))
        return [f"{p}|{model.weight.item():.1f}" for p in ps]

    monkeypatch.setattr(ev, "greedy_negatives", fake_greedy)
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    decode = ev.ValDecode(None, None)
    assert decode(model, ["a", "b", "c"]) == ["a|1.0", "b|1.0", "c|1.0"] and calls == [["a", "b", "c"]]
    assert decode(model, ["c", "a"]) == ["c|1.0", "a|1.0"] and len(calls) == 1  # the plan's subset: free
    assert decode(model, ["a", "d", "d"]) == ["a|1.0", "d|1.0", "d|1.0"] and calls[-1] == ["d"]  # only the new one
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    model(torch.ones(1, 1)).sum().backward()
    opt.step()  # an RL update writes the weights in place
    assert decode(model, ["a"])[0] != "a|1.0" and calls[-1] == ["a"]
    model.load_state_dict({"weight": torch.full((1, 1), 2.0), "bias": torch.zeros(1)})  # the guard's restore
    assert decode(model, ["a"]) == ["a|2.0"] and len(calls) == 4
    other = torch.nn.Linear(1, 1)
    with torch.no_grad():
        other.weight.fill_(2.0)
    decode(other, ["a"])  # another model (SFT's) with equal weights is still decoded itself
    assert len(calls) == 5 and decode.decoded == 3 + 1 + 1 + 1 + 1


def gain_guard(gains: dict[float, float], stale_steps: int) -> tuple[DiversityGuard, Scalar]:
    """A guard selecting by reward: every share passes, the val gain (SE 0.1) is looked up by the weight."""
    policy = Scalar()
    return DiversityGuard(2, 0.5, lambda m: 0.4, policy, gain=lambda m: (gains[m.w.item()], 0.1), min_z=3.0,
                          stale_steps=stale_steps), policy


def test_guard_stops_once_the_kept_step_is_stale_steps_old():
    # val gains at steps 2..10 (SE 0.1, z >= 3 needs 0.3): step 4 is kept, 6 and 8 gain less, 10 more
    gains = {2.0: 0.1, 4.0: 0.5, 6.0: 0.4, 8.0: 0.45, 10.0: 0.9}
    guard, policy = gain_guard(gains, stale_steps=4)
    reasons = []
    for step in (2, 4, 6, 8):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
        reasons.append(guard.stop_reason())
    # step 2 is not significant (SFT kept, 2 steps old); at 8 the kept step 4 is 4 steps old
    assert reasons == [None, None, None, "stale"] and guard.kept_step == 4 and guard.stopped()
    assert guard.report()["stop_reason"] == "stale" and guard.report()["stale_steps"] == 4
    longer, p = gain_guard(gains, stale_steps=5)  # one step more of patience: step 10 beats step 4
    for step in (2, 4, 6, 8, 10):
        p.w.data.fill_(step)
        longer.observe(step, p)
        assert not longer.stopped()
    assert longer.kept_step == 10
    never, q = gain_guard(gains, stale_steps=0)
    for step in (2, 4, 6, 8):
        q.w.data.fill_(step)
        never.observe(step, q)
    assert never.kept_step == 4 and never.stop_reason() is None


def test_an_attempt_keeping_sft_is_stale_stale_steps_after_its_start():
    # no check gains 3 SE, so SFT (step 0) stays kept: the attempt is stale once stale_steps steps have passed
    guard, policy = gain_guard({2.0: 0.1, 4.0: 0.0, 6.0: -0.2}, stale_steps=4)
    reasons = []
    for step in (2, 4, 6):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
        reasons.append(guard.stop_reason())
    assert reasons == [None, "stale", "stale"] and guard.kept_step == 0
    guard.new_attempt()  # a restart starts with no history, so not stale
    assert not guard.stopped() and guard.report()["stop_reason"] is None


def test_a_collapse_is_reported_before_staleness():
    shares = {0.0: 0.4, 2.0: 0.4, 4.0: 0.1, 6.0: 0.1}
    guard, policy = guard_over(shares, every=2)
    guard.patience, guard.stale_steps = 2, 2
    for step in (2, 4, 6):
        policy.w.data.fill_(step)
        guard.observe(step, policy)
    assert guard.kept_step == 2 and guard.stop_reason() == "collapse"
