"""The RL loop on a tiny rl_zoo: a few steps, checkpoint, resume == uninterrupted; the pure helpers by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import RL_PROMPTS as PROMPTS
from helpers import FakeLive, assert_same_weights, rl_components, rl_params

from negopt.core.sharding import gather_rows, map_sharded, shard_indices
from negopt.rl.heldout import distinct_share, eval_plan, oracle_summary, paired_summary
from negopt.rl.live import truncate_live
from negopt.rl.loop import step_plan


def test_shard_indices_by_hand():
    # 5 items, 2 ranks, micro-batches of 1: 3 + 2 items, both gather 3 rows
    assert shard_indices(5, 0, 2) == ([0, 1, 2], 3)
    assert shard_indices(5, 1, 2) == ([3, 4], 3)
    # 10 items in micro-batches of 4 -> blocks [0-3] [4-7] [8-9]; 2 ranks get 2 blocks and 1 block
    assert shard_indices(10, 0, 2, granularity=4) == (list(range(8)), 8)
    assert shard_indices(10, 1, 2, granularity=4) == ([8, 9], 8)
    # 32 items in micro-batches of 16: one micro-batch each, no padding
    assert shard_indices(32, 1, 2, granularity=16) == (list(range(16, 32)), 16)
    assert shard_indices(1, 1, 2) == ([], 1)  # an empty slice gathers padding only


def test_map_sharded_single_process_runs_whole_micro_batches():
    calls = []

    def fn(idx):
        calls.append(list(idx))
        return {"x": torch.tensor(idx, dtype=torch.float)}

    out = map_sharded(None, 5, fn, granularity=2)
    assert out["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and calls == [[0, 1, 2, 3, 4]]
    assert map_sharded(None, 0, fn) == {}


def test_gather_rows_single_process_drops_padding():
    assert gather_rows(None, torch.arange(4), 3).tolist() == [0, 1, 2]


def test_step_plan_is_a_function_of_seed_and_step():
    a = step_plan(0, 5, PROMPTS, 4)
    assert a == step_plan(0, 5, PROMPTS, 4)
    assert a != step_plan(0, 6, PROMPTS, 4) and a != step_plan(1, 5, PROMPTS, 4)
    prompts, seeds, sample_seed = a
    assert len(set(prompts)) == 4 and set(prompts) <= set(PROMPTS) and len(seeds) == 4
    assert step_plan(0, 0, PROMPTS[:2], 4)[0].__len__() == 2  # fewer prompts than the batch: all of them
    # a restart (rl.restarts) draws its own stream; attempt 0 is the stream of a run without restarts
    assert step_plan(0, 5, PROMPTS, 4, attempt=1) != a and step_plan(0, 5, PROMPTS, 4, attempt=0) == a
    assert step_plan(0, 5, PROMPTS, 4, attempt=1) != step_plan(0, 5, PROMPTS, 4, attempt=2)


def test_paired_summary_by_hand():
    # gains [1, 3, 2]: mean 2, sample std 1, se 1/sqrt(3)
    s = paired_summary(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 4.0, 4.0]))
    assert s["reward_test_sft"] == pytest.approx(1.0) and s["reward_test_rl"] == pytest.approx(3.0)
    assert s["reward_test_gain"] == pytest.approx(2.0)
    assert s["reward_test_gain_se"] == pytest.approx(3**-0.5)
    assert s["reward_test_sft_se"] == pytest.approx(3**-0.5)  # std 1 over 3 prompts


def test_oracle_summary_pairs_per_prompt_means_by_hand():
    """2 prompts x 2 seeds; rows are SFT's 4 images then RL's, prompt-major (as evaluate_rl scores them)."""
    scores = {"oracle/true_quality": torch.tensor([0.2, 0.4, 0.5, 0.5, 0.6, 0.4, 0.9, 0.5]),
              "oracle/rate_blur": torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])}
    s = oracle_summary(scores, n=2, s=2)
    # per-prompt means: SFT [0.3, 0.5], RL [0.5, 0.7]; gains [0.2, 0.2]: mean 0.2, se 0
    assert s["oracle_test_sft"] == pytest.approx(0.4) and s["oracle_test_rl"] == pytest.approx(0.6)
    assert s["oracle_test_gain"] == pytest.approx(0.2) and s["oracle_test_gain_se"] == pytest.approx(0.0, abs=1e-6)
    assert s["oracle_rate_blur_sft"] == 0.5 and s["oracle_rate_blur_rl"] == 0.25
    assert s["oracle_true_quality_rl"] == pytest.approx(0.6)


def test_distinct_share_and_eval_plan():
    assert distinct_share(["a", "a", "b", "c"]) == 0.75
    assert distinct_share(["x"] * 4) == 0.25
    prompts, seeds = eval_plan(PROMPTS + PROMPTS[:3], 5, seed=1)
    assert len(set(prompts)) == 5 and (prompts, seeds) == eval_plan(PROMPTS + PROMPTS[:3], 5, seed=1)
    assert len(eval_plan(PROMPTS, 100, 0)[0]) == len(PROMPTS)
    _, seeds = eval_plan(PROMPTS, 3, seed=1, seeds_per_prompt=2)
    assert len(seeds) == 3 and all(len(row) == 2 for row in seeds) and len({x for r in seeds for x in r}) == 6


def test_truncate_live_drops_rows_from_the_resume_step(tmp_path):
    tsv = tmp_path / "plots/metrics/train/reward.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\treward\n0\t0.1\n1\t0.2\n2\t0.3\n")
    truncate_live(tmp_path, 2)
    assert tsv.read_text() == "step\treward\n0\t0.1\n1\t0.2\n"


def test_truncate_live_drops_a_row_torn_by_a_kill(tmp_path):
    tsv = tmp_path / "plots/metrics/train/reward.tsv"
    tsv.parent.mkdir(parents=True)
    # a kill while dvclive appended step 2: the row has no newline (and a cut value)
    tsv.write_text("timestamp\tstep\treward\n10\t0\t0.1\n11\t1\t0.2\n12\t2\t0.3")
    truncate_live(tmp_path, 5)
    assert tsv.read_text() == "timestamp\tstep\treward\n10\t0\t0.1\n11\t1\t0.2\n"
    tsv.write_text("timestamp\tstep\treward\n10\t0\t0.1\n11\t1\n12\tx\t0.3\n")  # short row, bad step
    truncate_live(tmp_path, 5)
    assert tsv.read_text() == "timestamp\tstep\treward\n10\t0\t0.1\n"
    tsv.write_text("timestamp\tst")  # torn header: dvclive starts the file again
    truncate_live(tmp_path, 5)
    assert not tsv.exists()


# --- the loop on a tiny rl_zoo ------------------------------------------------------------------------


def test_loop_runs_checkpoints_and_resumes_exactly(rl_zoo):
    from negopt.rl.loop import run_rl

    full = rl_params(rl_zoo, "full")
    comp = rl_components(full)
    live = FakeLive(rl_zoo / "full")
    state = run_rl(full, comp, PROMPTS, live=live)
    assert state.step == 3 and (Path(full.paths.checkpoints) / "rl/state.json").exists()
    names = {n for _, n, _ in live.rows}
    assert {"train/reward", "train/kl", "train/entropy", "train/negative_tokens", "train/aesthetic",
            "train/clip", "train/fidelity", "train/loss"} <= names
    assert sorted({s for s, _, _ in live.rows}) == [0, 1, 2]
    sft_weights = rl_components(full).policy.state_dict()
    moved = any(not torch.equal(v, sft_weights[k]) for k, v in comp.policy.state_dict().items())
    assert moved  # the update changed the policy

    # stop after 2 steps, then resume with fresh objects: same weights as the uninterrupted run
    part = rl_params(rl_zoo, "part")
    first = rl_components(part)
    assert run_rl(part, first, PROMPTS, stop_after=2).step == 2
    again = rl_components(part)
    resumed = run_rl(part, again, PROMPTS)
    assert resumed.step == 3
    assert_same_weights(comp.policy, again.policy)
    assert resumed.stats.state_dict() == state.stats.state_dict()

    # other settings invalidate the checkpoint instead of resuming it
    other = rl_params(rl_zoo, "part", kl_coef=0.5)
    assert run_rl(other, rl_components(other), PROMPTS, stop_after=1).step == 1


def _curves(live_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """(step, value) rows of each dvclive tsv but the step-time curves, which measure the machine."""
    out = {}
    for tsv in sorted(Path(live_dir).glob("plots/metrics/**/*.tsv")):
        if not tsv.stem.startswith("seconds_"):
            rows = [r.split("\t") for r in tsv.read_text().splitlines()]
            step = rows[0].index("step")
            out[tsv.relative_to(live_dir).as_posix()] = [(r[step], r[-1]) for r in rows[1:]]
    return out


def test_a_run_resumed_under_dvc_repro_keeps_the_curves_dvc_deleted(rl_zoo):
    """dvc repro deletes dvclive/rl/plots before it reruns the stage: a run resumed from its checkpoint (after a
    kill, or finished and rerun for a changed evaluation) puts back the curves up to the checkpoint, so they
    equal an uninterrupted run's, and the stage's plots output exists."""
    import shutil

    from dvclive import Live

    from negopt.rl.loop import run_rl

    def live_at(path):
        return Live(str(path), dvcyaml=False, save_dvc_exp=False, resume=True)

    whole = rl_params(rl_zoo, "curves-whole")
    run_rl(whole, rl_components(whole), PROMPTS, live=live_at(rl_zoo / "curves-whole/live"))
    want = _curves(rl_zoo / "curves-whole/live")
    assert len(want["plots/metrics/train/reward.tsv"]) == 3

    part = rl_params(rl_zoo, "curves-part")
    live_dir = rl_zoo / "curves-part/live"
    run_rl(part, rl_components(part), PROMPTS, live=live_at(live_dir), stop_after=2)
    shutil.rmtree(live_dir / "plots")  # what dvc repro does before it reruns the stage
    run_rl(part, rl_components(part), PROMPTS, live=live_at(live_dir))
    assert _curves(live_dir) == want

    shutil.rmtree(live_dir / "plots")  # finished: the rerun resumes at the last step and trains nothing
    assert run_rl(part, rl_components(part), PROMPTS, live=live_at(live_dir)).step == 3
    assert _curves(live_dir) == want


def scripted_selector(policy, shares: list[float], gains=None, **cfg):
    """A CheckpointSelector checking every step whose val distinct shares come from a script, SFT's first; its
    val gains from ``gains`` (SE 0.1), or rising ones (1, 2, ...; SE 0), so the last diverse check is kept."""
    from negopt.core.params import Selection
    from negopt.rl.selection import CheckpointSelector

    it = iter(shares)
    if gains is None:
        count = iter(range(1, 1000))

        def gain(model):
            return float(next(count)), 0.0
    else:
        scripted = iter(gains)

        def gain(model):
            return next(scripted), 0.1
    settings = dict(every=1, min_ratio=0.5, patience=0, stale_steps=0, min_z=3.0) | cfg
    return CheckpointSelector(Selection(**settings), lambda model: next(it), gain, policy)


def test_a_stale_kept_step_ends_training_and_a_rerun_stays_stopped(rl_zoo):
    from negopt.rl.loop import run_rl

    one = rl_params(rl_zoo, "stale-1")
    after_one = rl_components(one)
    run_rl(one, after_one, PROMPTS, stop_after=1)  # the step-1 weights, for reference
    # SFT 0.5; steps 1, 2, 3: 0.5, 0.1, 0.1: step 1 is kept; 2 steps later (stale_steps 2) training stops at 3 of 5
    params = rl_params(rl_zoo, "stale", steps=5)
    comp = rl_components(params)
    selector = scripted_selector(comp.ref, [0.5, 0.5, 0.1, 0.1], stale_steps=2)
    state = run_rl(params, comp, PROMPTS, selector=selector)
    assert (state.step, state.attempt, selector.kept_step, selector.stop_reason()) == (3, 0, 1, "stale")
    assert_same_weights(after_one.policy, comp.policy)
    again = rl_components(params)  # the checkpoint written at the stop: a rerun trains no further step
    rerun = scripted_selector(again.ref, [0.5], stale_steps=2)
    assert run_rl(params, again, PROMPTS, selector=rerun).step == 3 and rerun.kept_step == 1
    assert_same_weights(after_one.policy, again.policy)
    # the stale stop is not part of the checkpoint's fingerprint: turning it off resumes at step 3, not from 0
    off = rl_params(rl_zoo, "stale", steps=5, selection={"stale_steps": 0})
    later = rl_components(off)
    resumed = scripted_selector(later.ref, [0.5, 0.5, 0.5])  # SFT, then steps 4 and 5 diverse: 5 is kept
    state = run_rl(off, later, PROMPTS, selector=resumed)
    assert state.step == 5 and [c.step for c in resumed.checks] == [1, 2, 3, 4, 5] and resumed.kept_step == 5


def test_an_attempt_that_keeps_sft_for_stale_steps_restarts(rl_zoo):
    from negopt.rl.loop import run_rl

    # every check diverse; val gains (SE 0.1): attempt 0 steps 1, 2 below 3 SE, so SFT is kept and at step 2
    # (stale_steps 2) the attempt ends and restarts; attempt 1 keeps step 1 (5 SE), and step 3 ends it (stale)
    params = rl_params(rl_zoo, "stale-sft", restarts=1, steps=5)
    comp = rl_components(params)
    selector = scripted_selector(comp.ref, [0.5] * 6, gains=[0.1, 0.2, 0.5, 0.2, 0.3], stale_steps=2)
    state = run_rl(params, comp, PROMPTS, selector=selector)
    assert (state.attempt, state.steps_before, state.step, selector.kept_step) == (1, 2, 3, 1)
    assert [c["step"] for c in selector.past[0]["checks"]] == [1, 2] and selector.stop_reason() == "stale"


def test_loop_deploys_the_kept_step_and_a_resumed_run_remembers_it(rl_zoo):
    from negopt.rl.loop import run_rl

    one = rl_params(rl_zoo, "kept-1")
    after_one = rl_components(one)
    run_rl(one, after_one, PROMPTS, stop_after=1)  # the step-1 weights, for reference
    # SFT 0.5; steps 1, 2, 3: 0.5, 0.1, 0.1 -> ratios 1, 0.2, 0.2: step 1 is the only diverse check
    full = rl_params(rl_zoo, "kept-full")
    comp = rl_components(full)
    selector = scripted_selector(comp.ref, [0.5, 0.5, 0.1, 0.1])
    live = FakeLive(rl_zoo / "kept-full")
    assert run_rl(full, comp, PROMPTS, live=live, selector=selector).step == 3
    assert selector.kept_step == 1 and [c.step for c in selector.checks] == [1, 2, 3]
    assert {n for _, n, _ in live.rows} >= {"train/val_distinct_ratio", "train/val_reward_gain"}
    assert_same_weights(after_one.policy, comp.policy)

    # stopped after step 2 and resumed with a fresh selector: the kept step and weights come from the checkpoint
    part = rl_params(rl_zoo, "kept-part")
    run_rl(part, rl_components(part), PROMPTS, stop_after=2,
           selector=scripted_selector(rl_components(part).ref, [0.5, 0.5, 0.1]))
    again = rl_components(part)
    resumed = scripted_selector(again.ref, [0.5, 0.1])
    run_rl(part, again, PROMPTS, selector=resumed)
    assert resumed.kept_step == 1 and [c.step for c in resumed.checks] == [1, 2, 3]
    assert_same_weights(after_one.policy, again.policy)

    # early stop: patience 1 stops after step 2 (the first failing check) and deploys step 1
    stop = rl_params(rl_zoo, "kept-stop", checkpoint_every=50)
    early = rl_components(stop)
    g = scripted_selector(early.ref, [0.5, 0.5, 0.1], patience=1)
    assert run_rl(stop, early, PROMPTS, selector=g).step == 2 and g.stopped() and g.kept_step == 1
    meta = json.loads((Path(stop.paths.checkpoints) / "rl/state.json").read_text())  # checkpoint_every 50: written
    assert meta["step"] == 2 and meta["selection"]["kept_step"] == 1  # because of the stop, so a rerun stops at once
    assert_same_weights(after_one.policy, early.policy)


def test_ppo_and_evaluation_run(rl_zoo):
    from negopt.reward.weighted import weighted_sum_reward
    from negopt.rl.heldout import evaluate_rl
    from negopt.rl.loop import run_rl

    params = rl_params(rl_zoo, "ppo", algo="ppo", steps=1, test={"seeds_per_prompt": 2})
    comp = rl_components(params)
    state = run_rl(params, comp, PROMPTS)
    assert state.stats.count == 4 * 2  # the calibration's 4 prompts x 2 samples; training leaves the statistics
    assert state.stats.within_df == 4  # one degree of freedom per group of 2
    reward_fn = weighted_sum_reward(comp.scorer, params.reward.weights.scored(), state.stats, state.marginal)
    metrics, examples = evaluate_rl(None, comp.ref, comp.policy, comp.tokenizer, comp.pipe, reward_fn, PROMPTS, params)
    assert metrics["n_test"] == 4 and metrics["n_test_images"] == 8 and len(examples) == 4
    for key in ("reward_test_sft", "reward_test_rl", "reward_test_gain", "reward_test_gain_se",
                "aesthetic_test_rl", "clip_test_sft", "fidelity_test_rl", "distinct_negatives_rl"):
        assert key in metrics
    # the examples are the deployed decode of each model (the by-hand pairing test is in test_rl_wiring.py)
    from negopt.policy.decode import decode_negatives

    shown = [e["prompt"] for e in examples]
    for model, key in ((comp.ref, "sft"), (comp.policy, "rl")):
        assert [e[key] for e in examples] == decode_negatives(model, comp.tokenizer, shown, params.decode,
                                                              params.sft.task_prefix, params.sft.max_source_length)


def test_calibration_groups_share_prompt_and_seed(rl_zoo, monkeypatch):
    # the within-group scale is only the negatives' effect if a group's samples share prompt and seed
    import negopt.images.render
    from negopt.reward.calibration import calibrate_rewards

    params = rl_params(rl_zoo, "calib", overlay={"reward": {"calibration": {"prompts": 4, "samples_per_prompt": 3},
                                                          "image_batch_size": 5}})
    comp = rl_components(params)
    calls = []
    real = negopt.images.render.generate_images

    def spy(pipe, prompts, negatives, seeds, profile, **kw):
        calls.append((list(prompts), list(seeds)))
        return real(pipe, prompts, negatives, seeds, profile, **kw)

    monkeypatch.setattr(negopt.images.render, "generate_images", spy)
    marginal, stats = calibrate_rewards(None, params, PROMPTS, policy=comp.policy, tokenizer=comp.tokenizer,
                                        sft_dir=comp.sft_dir, pipe=comp.pipe, scorer=comp.scorer)
    prompts = [p for c in calls for p in c[0]]
    seeds = [s for c in calls for s in c[1]]
    assert len(prompts) == 4 * 3 and [len(c[0]) for c in calls] == [5, 5, 2]  # micro-batches cut across groups
    groups = [(prompts[i:i + 3], seeds[i:i + 3]) for i in range(0, 12, 3)]
    assert all(len(set(p)) == 1 and len(set(s)) == 1 for p, s in groups)
    assert len({p[0] for p, _ in groups}) == 4 and len({s[0] for _, s in groups}) == 4
    assert stats.count == 12 and stats.within_df == 4 * 2
    assert marginal.shape[0] > 1 and torch.isclose(marginal.sum(), torch.tensor(1.0), atol=1e-4)


def test_the_stage_builds_the_selector_from_the_selection_params(rl_zoo):
    from negopt.rl.heldout import distinct_share, greedy_negatives
    from negopt.rl.selection import checkpoint_selector

    assert checkpoint_selector(rl_params(rl_zoo, "g0", selection={"by": "last_step"}), None, None, PROMPTS) is None
    params = rl_params(rl_zoo, "g", selection={"every": 2, "min_ratio": 0.6, "patience": 4, "diversity_prompts": 5,
                                            "reward_prompts": 3, "stale_steps": 7})
    comp = rl_components(params)
    selector = checkpoint_selector(params, comp.tokenizer, comp.ref, PROMPTS, None, comp.pipe)
    assert selector.cfg is params.rl.selection
    # SFT's share is measured on rl.selection.diversity_prompts val prompts with the deployed decode
    sel = params.rl.selection
    sft = greedy_negatives(comp.ref, comp.tokenizer, eval_plan(PROMPTS, 5, sel.seed)[0], params)
    assert len(sft) == 5 and selector.sft_share == distinct_share(sft)
    assert selector.gain.prompts == eval_plan(PROMPTS, 3, sel.seed, sel.reward_seeds)[0]


def test_selection_by_reward_is_bound_to_the_calibrated_reward_and_scores_each_diverse_check(rl_zoo):
    from negopt.rl.loop import run_rl
    from negopt.rl.selection import checkpoint_selector

    params = rl_params(rl_zoo, "by-reward", selection={"every": 1, "min_ratio": 0.01, "reward_prompts": 3,
                                                    "reward_seeds": 2, "min_z": 0.0})
    comp = rl_components(params)
    selector = checkpoint_selector(params, comp.tokenizer, comp.ref, PROMPTS, None, comp.pipe)
    live = FakeLive(rl_zoo / "by-reward")
    run_rl(params, comp, PROMPTS, live=live, selector=selector)
    assert selector.gain.reward_fn is not None and selector.gain.sft_rewards.shape == (3, 2)
    assert len(selector.checks) == 3 and all(c.gain is not None for c in selector.checks)
    gains = [c.gain for c in selector.checks]
    assert [v for _, n, v in live.rows if n == "train/val_reward_gain"] == pytest.approx(gains)
    best = max(((c.gain, c.step) for c in selector.checks if c.gain > 0), default=(0, 0))[1]
    assert selector.kept_step == best and selector.report()["by"] == "val_reward"


def test_selections_val_images_count_as_images_in_the_steps_anatomy(rl_zoo):
    """Checkpoint selection's val rendering + scoring is generation, not overhead: the loop logs it as
    ``seconds_select_images`` (the gain measure's own clock) and the rest of the check as ``seconds_select``."""
    from negopt.core.params import Selection
    from negopt.rl.loop import overhead_share, run_rl
    from negopt.rl.selection import CheckpointSelector

    class ClockedGain:  # a gain whose val images "took" 2.5 s a check, on its own clock
        image_seconds = 0.0

        def __call__(self, model):
            self.image_seconds += 2.5
            return 1.0, 0.1

    params = rl_params(rl_zoo, "anatomy")
    comp = rl_components(params)
    selector = CheckpointSelector(Selection(every=1, min_ratio=0.5, min_z=0.0), lambda model: 0.5, ClockedGain(), comp.ref)
    live = FakeLive(rl_zoo / "anatomy")
    state = run_rl(params, comp, PROMPTS, live=live, selector=selector)
    rows = {name: [v for _, n, v in live.rows if n == name] for name in ("train/seconds_select_images", "train/seconds_select")}
    assert rows["train/seconds_select_images"] == [2.5] * state.step
    assert state.seconds["select_images"] == pytest.approx(2.5 * state.step)
    assert state.seconds["select"] == pytest.approx(sum(rows["train/seconds_select"]))
    moved = dict(state.seconds, images=state.seconds["images"] + state.seconds["select_images"], select_images=0.0)
    assert overhead_share(state.seconds) == pytest.approx(overhead_share(moved))


def test_warmup_follows_the_step_from_a_fraction_to_the_full_rate(rl_zoo):
    """rl.warmup_steps 4 at learning_rate 1e-3: 1/4, 2/4, 3/4, 4/4 of it at steps 1-4; 0: the full rate."""
    from negopt.rl.loop import run_rl

    rates = {}
    for name, warmup in (("warm", 4), ("cold", 0)):
        params = rl_params(rl_zoo, name, steps=4, warmup_steps=warmup)
        live = FakeLive(rl_zoo / name)
        run_rl(params, rl_components(params), PROMPTS, live=live)
        rates[name] = [v for _, n, v in sorted(live.rows) if n == "train/lr"]
    assert rates["warm"] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and rates["cold"] == pytest.approx([1e-3] * 4)


def test_warmup_lr_is_linear_to_the_full_rate_by_hand():
    from negopt.rl.loop import warmup_lr

    assert [warmup_lr(0.8, s, 4) for s in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    assert warmup_lr(0.8, 0, 0) == 0.8


def test_a_run_that_kept_nothing_restarts_from_sft_on_its_own_stream_and_resumes_alike(rl_zoo):
    from negopt.rl.loop import run_rl

    # SFT 0.5; attempt 0, step 1: 0.1 (fails: stop, nothing kept); attempt 1, steps 1-2: 0.5, 0.5 (kept 2)
    full = rl_params(rl_zoo, "restart-full", restarts=1, steps=2)
    comp = rl_components(full)
    selector = scripted_selector(comp.ref, [0.5, 0.1, 0.5, 0.5], patience=1)
    live = FakeLive(rl_zoo / "restart-full")
    state = run_rl(full, comp, PROMPTS, live=live, selector=selector)
    assert (state.attempt, state.steps_before, state.step, selector.kept_step) == (1, 1, 2, 2)
    assert selector.past == [{"checks": [{"step": 1, "share": 0.1, "ratio": pytest.approx(0.2), "gain": None,
                                          "se": None}], "kept_step": 0}]
    assert [v for _, n, v in live.rows if n == "train/attempt"] == [0.0, 1.0, 1.0]
    assert selector.report()["attempt"] == 1 and len(selector.report()["past_attempts"]) == 1

    # without restarts the same script deploys SFT after the first attempt
    once = rl_params(rl_zoo, "restart-none", steps=2, restarts=0)
    c0 = rl_components(once)
    g0 = scripted_selector(c0.ref, [0.5, 0.1], patience=1)
    s0 = run_rl(once, c0, PROMPTS, selector=g0)
    assert (s0.attempt, s0.step, g0.kept_step) == (0, 1, 0)
    for k, v in c0.ref.state_dict().items():
        assert torch.equal(v, c0.policy.state_dict()[k]), k

    # stopped one step into the restart and resumed with a fresh selector: the same final weights
    part = rl_params(rl_zoo, "restart-part", restarts=1, steps=2)
    first = rl_components(part)
    s1 = run_rl(part, first, PROMPTS, stop_after=1, selector=scripted_selector(first.ref, [0.5, 0.1, 0.5], patience=1))
    assert (s1.attempt, s1.step) == (1, 1)
    again = rl_components(part)
    resumed = scripted_selector(again.ref, [0.5, 0.5], patience=1)
    s2 = run_rl(part, again, PROMPTS, selector=resumed)
    assert (s2.attempt, s2.steps_before, s2.step, resumed.kept_step) == (1, 1, 2, 2) and resumed.past == selector.past
    assert_same_weights(comp.policy, again.policy)


def test_an_attempt_after_a_restart_is_a_fresh_run_on_its_stream(rl_zoo, monkeypatch):
    """A restart starts fresh: the SFT weights, a new optimizer, the attempt's own draws. Attempt 1 of a run
    that restarted equals a run started directly as attempt 1 (same calibration): weights, optimizer moments and
    every step's samples."""
    from negopt.rl import loop
    from negopt.rl.checkpoint import RunState, fingerprint

    samples: dict[str, list[list[str]]] = {"restarted": [], "fresh": []}
    real = loop.sample_rollout
    current = ["restarted"]

    def spy(*args, **kwargs):
        ro = real(*args, **kwargs)
        samples[current[0]].append(list(ro.negatives))
        return ro

    monkeypatch.setattr(loop, "sample_rollout", spy)
    # SFT 0.5; attempt 0, step 1: 0.1 (collapse, patience 1: nothing kept, restart); attempt 1: steps 1-3 diverse
    params = rl_params(rl_zoo, "restart-fresh", restarts=1, steps=3)
    comp = rl_components(params)
    selector = scripted_selector(comp.ref, [0.5, 0.1, 0.5, 0.5, 0.5], patience=1)
    optimizers = []
    real_new = loop.new_optimizer
    monkeypatch.setattr(loop, "new_optimizer", lambda *a: optimizers.append(real_new(*a)) or optimizers[-1])
    state = loop.run_rl(params, comp, PROMPTS, selector=selector)
    assert (state.attempt, state.step, selector.kept_step) == (1, 3, 3)
    restarted = samples["restarted"][1:]  # attempt 0's one step first

    current[0] = "fresh"
    fresh = rl_components(params)
    run = loop.Run(params, fresh, PROMPTS, Path(params.paths.checkpoints) / "fresh", fingerprint(params, params.paths.sft),
                   selector=scripted_selector(fresh.ref, [0.5, 0.5, 0.5, 0.5], patience=1))
    started = RunState(step=0, stats=state.stats, marginal=state.marginal, attempt=1)
    optimizer = real_new(fresh.policy, params.rl)
    loop.train_attempt(run, started, optimizer, None)
    assert samples["fresh"] == restarted and len(restarted) == 3
    assert_same_weights(fresh.policy, comp.policy)
    ours, theirs = optimizers[-1].state_dict()["state"], optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert int(ours[key]["step"]) == int(theirs[key]["step"]) == 3, key
        assert torch.allclose(ours[key]["exp_avg_sq"], theirs[key]["exp_avg_sq"], atol=1e-9), key
