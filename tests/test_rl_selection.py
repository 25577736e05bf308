"""Checkpoint selection (negopt/rl/selection.py): scripted val shares and gains -> the step kept, by hand."""

from __future__ import annotations

import pytest
import torch

from negopt.core.params import Selection
from negopt.core.stats import mean_and_se
from negopt.rl.selection import Check, CheckpointSelector, best_step


class Scalar(torch.nn.Module):
    """A one-weight 'policy' whose weight says which step it is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def selector_over(shares: dict[float, float], every: int = 10, gain=None, **cfg) -> tuple[CheckpointSelector, Scalar]:
    """A selector whose measure looks the distinct share up by the policy's weight (0 = SFT); every diverse check
    gains the same significant +1 (SE 0) unless ``gain`` says otherwise, so ties keep the later step."""
    policy = Scalar()
    settings = dict(every=every, min_ratio=0.5, dense_steps=0, patience=0, stale_steps=0, min_z=3.0) | cfg
    return CheckpointSelector(Selection(**settings), lambda m: shares[m.w.item()],
                              gain or (lambda m: (1.0, 0.0)), policy), policy


def observe(selector: CheckpointSelector, policy: Scalar, steps) -> list:
    """Check the policy at each step (its weight set to the step); the kept step after each check."""
    kept = []
    for step in steps:
        policy.w.data.fill_(step)
        selector.observe(step, policy)
        kept.append(selector.kept_step)
    return kept


def test_the_last_of_equal_gains_among_diverse_checks_is_kept_and_restored():
    # SFT share 0.4; steps 10, 20, 30, 35 (the last): ratios 1.0, 0.75, 0.25, 0.125
    shares = {0.0: 0.4, 10.0: 0.4, 20.0: 0.3, 30.0: 0.1, 35.0: 0.05}
    selector, policy = selector_over(shares)
    assert selector.sft_share == 0.4
    assert [selector.due(s, 35) for s in (5, 10, 34, 35)] == [False, True, False, True]
    assert observe(selector, policy, (10, 20, 30, 35)) == [10, 20, 20, 20]
    assert [c.ratio for c in selector.checks] == pytest.approx([1.0, 0.75, 0.25, 0.125])
    assert selector.restore(policy, 35) == 20 and policy.w.item() == 20.0
    assert selector.report()["kept_step"] == 20 and selector.report()["val_distinct_sft"] == 0.4


def test_the_final_weights_stay_when_the_final_step_is_kept():
    selector, policy = selector_over({0.0: 0.2, 10.0: 0.05, 20.0: 0.2})
    observe(selector, policy, (10, 20))
    assert selector.kept_step == 20
    policy.w.data.fill_(99.0)  # restore must not touch the final weights when they are the kept ones
    assert selector.restore(policy, 20) == 20 and policy.w.item() == 99.0


def test_sft_is_restored_when_no_check_is_kept():
    selector, policy = selector_over({0.0: 0.5, 10.0: 0.1})
    observe(selector, policy, (10,))
    assert selector.restore(policy, 10) == 0 and policy.w.item() == 0.0


def test_state_round_trips_and_a_replayed_step_replaces_its_check():
    shares = {0.0: 0.4, 10.0: 0.4, 20.0: 0.1}
    selector, policy = selector_over(shares)
    observe(selector, policy, (10,))
    other, _ = selector_over(shares)
    other.load_state_dict(selector.state_dict(), selector.kept)
    assert other.kept_step == 10 and other.checks == selector.checks
    observe(other, policy, (20, 20))  # a resumed run repeats step 20: one check, not two
    assert [c.step for c in other.checks] == [10, 20] and other.kept_step == 10


def test_a_collapse_stops_after_patience_non_diverse_checks_in_a_row_only():
    # SFT 0.4; ratios at steps 2, 4, 6, 8, 10: 1.0, 0.25 (fail), 0.75, 0.25, 0.25 (fail, fail)
    shares = {0.0: 0.4, 2.0: 0.4, 4.0: 0.1, 6.0: 0.3, 8.0: 0.1, 10.0: 0.1}
    selector, policy = selector_over(shares, every=2, patience=2)
    stops = []
    for step in (2, 4, 6, 8, 10):
        observe(selector, policy, (step,))
        stops.append(selector.stopped())
    assert stops == [False, False, False, False, True]  # one failure (step 4) is not a stop; two in a row are
    assert selector.kept_step == 6 and selector.report()["stopped_early"] is True
    assert selector.report()["stop_reason"] == "collapse"
    never, p = selector_over(shares, every=2)  # patience 0: never stops
    observe(never, p, (4, 8, 10))
    assert not never.stopped()


def test_checks_every_step_while_dense_then_every_n():
    # dense 3, every 5, last 12: steps 1, 2, 3 (dense), 5, 10 (every 5), 12 (the last)
    selector, _ = selector_over({0.0: 1.0}, every=5, dense_steps=3)
    assert [s for s in range(1, 13) if selector.due(s, 12)] == [1, 2, 3, 5, 10, 12]
    assert selector.report()["dense_steps"] == 3


def test_overhead_share_is_the_time_outside_images_over_the_loop():
    from negopt.rl.loop import overhead_share

    # 212 s images, 42 sample, 23 update, 97 select (the fresh-clone run before the dense schedule): 162 / 374
    assert overhead_share({"images": 212.0, "sample": 42.0, "update": 23.0, "select": 97.0}) == pytest.approx(162 / 374)
    assert overhead_share({"images": 0.0, "sample": 0.0}) == 0.0
    # selection's val images are generation + scoring too: 100 + 20 of 150 s, overhead 30 / 150
    assert overhead_share({"images": 100.0, "select_images": 20.0, "sample": 10.0, "update": 10.0,
                           "select": 10.0}) == pytest.approx(30 / 150)


def test_best_step_is_the_largest_significant_gain_among_diverse_checks():
    # 1 diverse but under 2 SE; 2 the best significant; 3 larger but not diverse; 4 significant and smaller;
    # 5 not scored (a failing check)
    checks = [Check(1, 0.1, 1.0, 0.30, 0.2), Check(2, 0.1, 0.9, 0.25, 0.1), Check(3, 0.1, 0.4, 0.9, 0.1),
              Check(4, 0.1, 0.8, 0.21, 0.1), Check(5, 0.1, 0.3)]
    assert best_step(checks, 0.5, 2.0) == 2
    assert best_step(checks, 0.5, 1.0) == 1  # at 1 SE step 1's +0.30 counts and is the largest
    assert best_step(checks, 0.3, 2.0) == 3  # step 3 passes a looser diversity bound
    assert best_step(checks, 0.5, 3.0) == 0  # nothing is 3 SE above SFT: the SFT weights
    assert best_step([Check(1, 0.1, 1.0, 0.0, 0.0), Check(2, 0.1, 1.0, -0.5, 0.1)], 0.5, 0.0) == 0  # never a loss
    assert best_step([Check(1, 0.1, 1.0, 0.2, 0.05), Check(2, 0.1, 1.0, 0.2, 0.05)], 0.5, 2.0) == 2  # tie: later
    assert Check.from_dict(Check(5, 0.1, 0.3).to_dict()) == Check(5, 0.1, 0.3)


class Gain:
    """A scripted val gain measure: (gain, se) by the policy's weight; records bind and the steps it scored."""

    def __init__(self, table: dict[float, tuple[float, float]]) -> None:
        self.table, self.bound, self.scored = table, None, []

    def bind(self, reward_fn) -> None:
        self.bound = reward_fn

    def __call__(self, model) -> tuple[float, float]:
        self.scored.append(model.w.item())
        return self.table[model.w.item()]


def test_the_best_val_gain_is_kept_and_only_diverse_checks_are_scored():
    # SFT share 0.4; steps 1-4: ratios 1, 1, 0.25 (fails: not scored), 1; gains +0.1 (1 SE), +0.5 (5 SE), -, +0.3
    shares = {0.0: 0.4, 1.0: 0.4, 2.0: 0.4, 3.0: 0.1, 4.0: 0.4}
    gain = Gain({1.0: (0.1, 0.1), 2.0: (0.5, 0.1), 4.0: (0.3, 0.1)})
    selector, policy = selector_over(shares, every=1, gain=gain, min_z=2.0)
    selector.bind_reward("the reward")
    assert gain.bound == "the reward"
    assert observe(selector, policy, (1, 2, 3, 4)) == [0, 2, 2, 2]  # step 1 is under 2 SE: SFT stays kept
    assert gain.scored == [1.0, 2.0, 4.0]
    assert selector.checks[2] == Check(3, 0.1, 0.25) and (selector.checks[1].gain, selector.checks[1].se) == (0.5, 0.1)
    assert selector.restore(policy, 4) == 2 and policy.w.item() == 2.0  # the best step, not the last diverse one
    assert selector.report()["by"] == "val_reward" and selector.report()["min_z"] == 2.0
    assert selector.report()["history"][2] == {"step": 3, "share": 0.1, "ratio": 0.25, "gain": None, "se": None}
    # the checks (with their unscored ones) round-trip through a checkpoint
    other, _ = selector_over(shares, every=1, gain=Gain({}), min_z=2.0)
    other.load_state_dict(selector.state_dict(), selector.kept)
    assert other.checks == selector.checks and other.kept_step == 2


def test_val_reward_gain_renders_only_changed_prompts_and_pairs_by_hand(monkeypatch):
    """reward(prompt, negative, seed) = len(negative) + seed % 3: the gain over SFT is known by hand."""
    from types import SimpleNamespace

    from negopt.rl import heldout, selection

    prompts = [f"prompt {i}" for i in range(6)]
    params = SimpleNamespace(rl=SimpleNamespace(selection=Selection(reward_prompts=4, reward_seeds=2, seed=7)),
                             reward=SimpleNamespace(image_batch_size=3),
                             active=SimpleNamespace(num_inference_steps=8))
    sft, rl_model = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)  # the decode is keyed by a module's weights
    decodes = {sft: lambda p: "ab", rl_model: lambda p: "abcd" if p.endswith(("1", "3", "5")) else "ab"}
    monkeypatch.setattr(selection, "greedy_negatives", lambda model, tok, ps, params: [decodes[model](p) for p in ps])
    rendered = []

    def fake_score(acc, pipe, profile, reward_fn, ps, negs, seeds, batch_size, oracle=None):
        assert profile is params.active  # the profile's own steps, as users render (not the rollouts')
        assert oracle is None
        assert batch_size == 3  # reward.image_batch_size
        rendered.extend(zip(ps, negs, seeds, strict=True))
        return {"reward": torch.tensor([reward_fn(n, s) for n, s in zip(negs, seeds, strict=True)])}

    monkeypatch.setattr(selection, "score_triples", fake_score)
    gain = selection.ValRewardGain(None, None, None, sft, prompts, params)
    plan, seeds = heldout.eval_plan(prompts, 4, 7, 2)
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


def test_val_oracle_gain_pairs_the_true_quality_by_hand_and_selection_never_reads_it(monkeypatch):
    """A gamed reward: the reward grows with the negative's length, the oracle's true quality falls with it. The
    val reward gain and the oracle gain are each the paired difference of their own values over the same plan."""
    from types import SimpleNamespace

    from negopt.rl import heldout, selection

    prompts = [f"prompt {i}" for i in range(6)]
    params = SimpleNamespace(rl=SimpleNamespace(selection=Selection(reward_prompts=4, reward_seeds=2, seed=7)),
                             reward=SimpleNamespace(image_batch_size=3), active=SimpleNamespace())
    sft, rl_model = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    decodes = {sft: lambda p: "ab", rl_model: lambda p: "abcd" if p.endswith(("1", "3", "5")) else "ab"}
    monkeypatch.setattr(selection, "greedy_negatives", lambda model, tok, ps, params: [decodes[model](p) for p in ps])
    oracle = object()

    def fake_score(acc, pipe, profile, reward_fn, ps, negs, seeds, batch_size, oracle_fn=None):
        assert oracle_fn is oracle
        return {"reward": torch.tensor([float(len(n)) for n in negs]),
                "oracle/true_quality": torch.tensor([-0.25 * len(n) + 0.01 * (s % 5) for n, s in zip(negs, seeds, strict=True)])}

    monkeypatch.setattr(selection, "score_triples", fake_score)
    gain = selection.ValRewardGain(None, None, None, sft, prompts, params, oracle=oracle)
    gain.bind(None)
    plan, _ = heldout.eval_plan(prompts, 4, 7, 2)
    changed = [i for i, p in enumerate(plan) if p.endswith(("1", "3", "5"))]
    g, _ = gain(rl_model)
    assert g == pytest.approx(2.0 * len(changed) / 4)  # the reward: +2 on each changed prompt
    assert gain.oracle_gain == pytest.approx(-0.5 * len(changed) / 4)  # the truth: -0.5 on each (seeds cancel)
    assert gain(sft) == (0.0, 0.0) and gain.oracle_gain == 0.0


def test_val_decode_decodes_each_prompt_once_per_weights(monkeypatch):
    """A check's two reads (diversity share, reward plan) cost one decode; any weight change decodes anew."""
    from negopt.rl import selection

    calls = []

    def fake_greedy(model, tok, ps, params):
        calls.append(list(ps))
        return [f"{p}|{model.weight.item():.1f}" for p in ps]

    monkeypatch.setattr(selection, "greedy_negatives", fake_greedy)
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    decode = selection.ValDecode(None, None)
    assert decode(model, ["a", "b", "c"]) == ["a|1.0", "b|1.0", "c|1.0"] and calls == [["a", "b", "c"]]
    assert decode(model, ["c", "a"]) == ["c|1.0", "a|1.0"] and len(calls) == 1  # the plan's subset: free
    assert decode(model, ["a", "d", "d"]) == ["a|1.0", "d|1.0", "d|1.0"] and calls[-1] == ["d"]  # only the new one
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    model(torch.ones(1, 1)).sum().backward()
    opt.step()  # an RL update writes the weights in place
    assert decode(model, ["a"])[0] != "a|1.0" and calls[-1] == ["a"]
    model.load_state_dict({"weight": torch.full((1, 1), 2.0), "bias": torch.zeros(1)})  # the selector's restore
    assert decode(model, ["a"]) == ["a|2.0"] and len(calls) == 4
    other = torch.nn.Linear(1, 1)
    with torch.no_grad():
        other.weight.fill_(2.0)
    decode(other, ["a"])  # another model (SFT's) with equal weights is still decoded itself
    assert len(calls) == 5 and decode.decoded == 3 + 1 + 1 + 1 + 1


def gain_selector(gains: dict[float, float], stale_steps: int) -> tuple[CheckpointSelector, Scalar]:
    """Every share passes; the val gain (SE 0.1) is looked up by the weight."""
    return selector_over({0.0: 0.4, **dict.fromkeys(gains, 0.4)}, every=2, gain=lambda m: (gains[m.w.item()], 0.1),
                         stale_steps=stale_steps)


def test_a_stale_kept_step_stops_the_attempt():
    # val gains at steps 2..10 (SE 0.1, z >= 3 needs 0.3): step 4 is kept, 6 and 8 gain less, 10 more
    gains = {2.0: 0.1, 4.0: 0.5, 6.0: 0.4, 8.0: 0.45, 10.0: 0.9}
    selector, policy = gain_selector(gains, stale_steps=4)
    reasons = []
    for step in (2, 4, 6, 8):
        observe(selector, policy, (step,))
        reasons.append(selector.stop_reason())
    # step 2 is not significant (SFT kept, 2 steps old); at 8 the kept step 4 is 4 steps old
    assert reasons == [None, None, None, "stale"] and selector.kept_step == 4 and selector.stopped()
    assert selector.report()["stop_reason"] == "stale" and selector.report()["stale_steps"] == 4
    longer, p = gain_selector(gains, stale_steps=5)  # one step more of patience: step 10 beats step 4
    for step in (2, 4, 6, 8, 10):
        observe(longer, p, (step,))
        assert not longer.stopped()
    assert longer.kept_step == 10
    never, q = gain_selector(gains, stale_steps=0)
    observe(never, q, (2, 4, 6, 8))
    assert never.kept_step == 4 and never.stop_reason() is None


def test_an_attempt_keeping_sft_is_stale_stale_steps_after_its_start():
    # no check gains 3 SE, so SFT (step 0) stays kept: the attempt is stale once stale_steps steps have passed
    selector, policy = gain_selector({2.0: 0.1, 4.0: 0.0, 6.0: -0.2}, stale_steps=4)
    reasons = []
    for step in (2, 4, 6):
        observe(selector, policy, (step,))
        reasons.append(selector.stop_reason())
    assert reasons == [None, "stale", "stale"] and selector.kept_step == 0
    selector.new_attempt()  # a restart starts with no checks, so not stale
    assert not selector.stopped() and selector.report()["stop_reason"] is None
    assert selector.past[0]["kept_step"] == 0 and [c["step"] for c in selector.past[0]["checks"]] == [2, 4, 6]


def test_a_restart_after_a_kept_step_is_refused():
    selector, policy = selector_over({0.0: 0.4, 10.0: 0.4})
    observe(selector, policy, (10,))
    with pytest.raises(RuntimeError, match="kept step 10"):
        selector.new_attempt()


def test_a_collapse_is_reported_before_staleness():
    shares = {0.0: 0.4, 2.0: 0.4, 4.0: 0.1, 6.0: 0.1}
    selector, policy = selector_over(shares, every=2, patience=2, stale_steps=2)
    observe(selector, policy, (2, 4, 6))
    assert selector.kept_step == 2 and selector.stop_reason() == "collapse"
