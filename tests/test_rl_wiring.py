"""The RL loop's wiring, with a fake diffusion pipeline and a fake scorer whose numbers are known by hand.

The ``fake_images`` fixture replaces ``negopt.images.render.generate_images`` with ``rl_fakes.FakeImages``, whose
images say which (prompt, negative, seed) made them; ``tests/rl_fakes.py`` gives each reward term as a known
function of those. Weights and temperatures are never 1, so a loop that ignores them gives other numbers.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import RL_NEGATIVES as NEGATIVES
from rl_fakes import (
    PROMPTS,
    TERMS,
    WEIGHTS,
    FakeScorer,
    Named,
    fake_decode,
    hand_terms,
    hand_z,
    make_components,
    make_params,
    probs_of,
)

from negopt.core.prompt_syntax import syntax_counts
from negopt.core.stats import mean_and_se
from negopt.images.render import distinct_triples
from negopt.policy.sampling import sequence_logprobs
from negopt.reward.calibration import calibrate_rewards, fit_term_stats
from negopt.reward.weighted import score_triples, weighted_sum_reward
from negopt.rl import heldout as rl_evaluate
from negopt.rl.loop import compute_advantages, rollout, run_rl, step_plan, update

# --- the fakes -------------------------------------------------------------------------------------


# --- the reward: standardised terms, weighted --------------------------------------------------------


def test_weighted_sum_reward_is_weights_times_standardised_terms(fake_images):
    scorer = FakeScorer(fake_images)
    marginal = torch.tensor([0.25, 0.75])
    # calibration: 2 groups of k=2; aesthetic (1, 3 | 5, 7): mean 4, within-group std sqrt((4 * 1) / 2) = sqrt(2)
    calib = {"aesthetic": torch.tensor([1.0, 3.0, 5.0, 7.0]), "clip": torch.tensor([10.0, 12.0, 10.0, 11.0]),
             "fidelity": torch.tensor([0.1, 0.3, 0.2, 0.2])}
    _, stats = fit_term_stats(torch.tensor([[0.5, 0.5]] * 4), lambda m: calib, group_size=2)
    triples = [("a red fox in snow", "blurry", 12), ("a castle at dusk", "ugly, text", 1003)]
    images = fake_images(None, [t[0] for t in triples], [t[1] for t in triples],
                         [t[2] for t in triples], None)
    reward, info = weighted_sum_reward(scorer, WEIGHTS, stats, marginal)(images, [t[0] for t in triples], {})
    raw = hand_terms(triples, marginal)
    # by hand for the first image: aesthetic 6 + 2 = 8 -> z (8 - 4) / sqrt(2)
    assert info["raw"]["aesthetic"].tolist() == [8.0, 13.0]
    assert info["z"]["aesthetic"][0].item() == pytest.approx(4 / math.sqrt(2), rel=1e-6)
    z = hand_z(raw, calib, 2)
    expected = sum(WEIGHTS[t] * z[t] for t in TERMS)
    assert torch.allclose(reward.double(), expected, rtol=1e-5)
    for t in TERMS:
        assert torch.allclose(info["z"][t].double(), z[t], rtol=1e-5), t


def test_score_triples_scores_each_image_with_its_own_prompt_and_seed(fake_images):
    scorer = FakeScorer(fake_images)
    calib = {t: torch.tensor([0.0, 2.0, 1.0, 5.0]) for t in TERMS}
    _, stats = fit_term_stats(torch.tensor([[0.5, 0.5]] * 4), lambda m: calib, group_size=2)
    marginal = torch.tensor([0.3, 0.7])
    prompts, negatives, seeds = PROMPTS[:5], NEGATIVES[:5], [7, 11, 250, 999, 4]
    out = score_triples(None, None, None, weighted_sum_reward(scorer, WEIGHTS, stats, marginal),
                        prompts, negatives, seeds, batch_size=2)
    assert [len(c) for c in fake_images.calls] == [2, 2, 1]  # micro-batches of 2
    raw = hand_terms(list(zip(prompts, negatives, seeds, strict=True)), marginal)
    for t in TERMS:  # clip 10 + ... everywhere: every image was scored against its own prompt
        assert torch.allclose(out[f"raw/{t}"].double(), raw[t].double(), rtol=1e-6), t
    z = hand_z(raw, calib, 2)
    assert torch.allclose(out["reward"].double(), sum(WEIGHTS[t] * z[t] for t in TERMS), rtol=1e-5)


def test_score_triples_renders_a_repeated_triple_once_and_copies_its_values_to_every_row(fake_images):
    scorer = FakeScorer(fake_images)
    calib = {t: torch.tensor([0.0, 2.0, 1.0, 5.0]) for t in TERMS}
    _, stats = fit_term_stats(torch.tensor([[0.5, 0.5]] * 4), lambda m: calib, group_size=2)
    marginal = torch.tensor([0.3, 0.7])
    # rows 0, 2, 5 are one triple, rows 1, 3 another; row 4 differs from row 0 by its seed alone
    a, b, c = (PROMPTS[0], NEGATIVES[0], 7), (PROMPTS[1], NEGATIVES[1], 11), (PROMPTS[0], NEGATIVES[0], 8)
    triples = [a, b, a, b, c, a]
    out = score_triples(None, None, None, weighted_sum_reward(scorer, WEIGHTS, stats, marginal),
                        *map(list, zip(*triples, strict=True)), batch_size=2)
    assert fake_images.triples == [a, b, c]  # first appearance order, each once
    assert [len(call) for call in fake_images.calls] == [2, 1]  # micro-batches of the distinct items
    raw = hand_terms(triples, marginal)
    for t in TERMS:
        assert torch.allclose(out[f"raw/{t}"].double(), raw[t].double(), rtol=1e-6), t
    z = hand_z(raw, calib, 2)
    assert torch.allclose(out["reward"].double(), sum(WEIGHTS[t] * z[t] for t in TERMS), rtol=1e-5)
    assert out["reward"][0] == out["reward"][2] == out["reward"][5] and out["reward"][1] == out["reward"][3]
    assert out["reward"][4] != out["reward"][0]


def test_distinct_triples_rows_and_inverse_by_hand():
    rows, inverse = distinct_triples(["p", "q", "p", "p", "q"], ["n", "n", "n", "m", "n"], [1, 1, 1, 1, 2])
    assert rows == [0, 1, 3, 4] and inverse.tolist() == [0, 1, 0, 2, 3]
    rows, inverse = distinct_triples([], [], [])
    assert rows == [] and inverse.tolist() == []


def test_evaluate_rl_renders_a_prompt_once_where_rl_kept_sfts_negative(fake_images, tmp_path, monkeypatch):
    sft_decode = fake_decode([])

    def decode(model, tokenizer, prompts, *a, **kw):  # RL keeps SFT's negative on the even-indexed prompts
        sft = sft_decode(Named("sft"), tokenizer, prompts, *a, **kw)
        rl = sft_decode(model, tokenizer, prompts, *a, **kw)
        return [x if model.name == "sft" or PROMPTS.index(p) % 2 == 0 else y for p, x, y in zip(prompts, sft, rl, strict=True)]

    monkeypatch.setattr(rl_evaluate, "decode_negatives", decode)
    monkeypatch.setattr(rl_evaluate, "kl_to_sft", lambda *a, **k: 0.0)
    params = make_params(tmp_path, {"reward": {"image_batch_size": 5}})

    def reward_fn(images, prompts, metadata):
        r = torch.tensor([float(s % 97) + len(n) for _, n, s in (FakeScorer(fake_images).triple(x) for x in images)])
        return r, {"raw": {t: r for t in TERMS}, "z": {t: r for t in TERMS}}

    metrics, _ = rl_evaluate.evaluate_rl(None, Named("sft"), Named("rl"), None, None, reward_fn, PROMPTS, params)
    prompts, _ = rl_evaluate.eval_plan(PROMPTS, 4, params.rl.test.seed, 3)
    idx = torch.tensor([PROMPTS.index(p) for p in prompts], dtype=torch.float64)
    changed = idx % 2 == 1
    assert 0 < int(changed.sum()) < 4  # the plan holds prompts of both kinds
    assert len(fake_images.triples) == 12 + 3 * int(changed.sum()) == metrics["test_images_rendered"]
    assert metrics["n_test_images"] == 12
    gain, gain_se = mean_and_se(torch.where(changed, idx + 2, torch.zeros_like(idx)))  # exactly 0 where unchanged
    assert metrics["reward_test_gain"] == pytest.approx(gain) and metrics["reward_test_gain_se"] == pytest.approx(gain_se)


def test_calibration_marginal_is_the_mean_posterior_of_the_calibration_images(fake_images, wiring_t5, tmp_path):
    params = make_params(tmp_path)  # 4 calibration prompts x 3 samples
    comp = make_components(wiring_t5, fake_images)
    marginal, stats = calibrate_rewards(None, params, PROMPTS, policy=comp.policy, tokenizer=comp.tokenizer,
                                        sft_dir=comp.sft_dir, pipe=comp.pipe, scorer=comp.scorer)
    triples = fake_images.triples
    assert len(triples) == 4 * 3
    groups = [triples[i:i + 3] for i in range(0, 12, 3)]
    assert all(len({p for p, _, _ in g}) == 1 and len({s for _, _, s in g}) == 1 for g in groups)
    expected = torch.stack([probs_of(n, s) for _, n, s in triples]).mean(0)
    assert torch.allclose(marginal, expected, atol=1e-6)
    assert abs(marginal[0].item() - 0.5) > 1e-3  # the fixture is not accidentally uniform
    # the statistics are those of the calibration terms under that marginal
    raw = hand_terms(triples, expected)
    for t in TERMS:
        assert stats.mean[t] == pytest.approx(raw[t].double().mean().item(), rel=1e-5, abs=1e-7), t


# --- advantages, rollout log-probs, update ------------------------------------------------------------


def test_compute_advantages_subtracts_the_kl_before_the_baseline():
    rewards = torch.tensor([1.0, 2.0, 4.0, 0.0])
    logp_old = torch.tensor([-1.0, -2.0, -3.0, -1.0])
    logp_ref = torch.tensor([-2.0, -2.0, -1.0, -1.0])
    adv, penalised, kl = compute_advantages(rewards, logp_old, logp_ref, kl_coef=0.5, k=2)
    # kl = (1, 0, -2, 0); penalised = (0.5, 2, 5, 0); RLOO with k=2: A_i = r_i - r_other
    assert kl.tolist() == [1.0, 0.0, -2.0, 0.0]
    assert penalised.tolist() == [0.5, 2.0, 5.0, 0.0]
    assert adv.tolist() == [-1.5, 1.5, 5.0, -5.0]


def test_rollout_logprobs_use_the_temperature_and_the_frozen_reference(fake_images, wiring_t5, tmp_path):
    params = make_params(tmp_path, k=2)  # sampling.temperature 0.7
    comp = make_components(wiring_t5, fake_images)
    ro, logp_ref = rollout(comp, params, PROMPTS[:3], sample_seed=5)
    assert len(ro.negatives) == 6
    with torch.no_grad():
        at_t, _ = sequence_logprobs(comp.policy, ro, 0.7)
        at_1, _ = sequence_logprobs(comp.policy, ro, 1.0)
        ref_t, _ = sequence_logprobs(comp.ref, ro, 0.7)
    assert torch.allclose(ro.logp, at_t, atol=1e-5)
    assert not torch.allclose(at_t, at_1, atol=1e-3)  # the temperature matters for these samples
    assert torch.allclose(logp_ref, ref_t, atol=1e-5)
    assert (ro.logp - logp_ref).abs().max() > 1e-2  # reference is not the policy


def test_ppo_update_moves_the_ratio_from_the_rollout_logprobs(fake_images, wiring_t5, tmp_path):
    params = make_params(tmp_path, algo="ppo", ppo={"epochs": 3, "clip_range": 0.1}, learning_rate=5e-2, k=2)
    comp = make_components(wiring_t5, fake_images)
    ro, _ = rollout(comp, params, PROMPTS[:2], sample_seed=1)
    optimizer = torch.optim.AdamW(comp.policy.parameters(), lr=params.rl.learning_rate, weight_decay=0.0)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    stats = update(comp.policy, optimizer, ro, adv, ro.logp, params.rl, params.sampling.temperature)
    # the last epoch's ratio is against the rollout's log-probs, after two steps: it has moved
    assert abs(stats["approx_kl"]) > 1e-4 and stats["clip_frac"] > 0
    with torch.no_grad():
        after, _ = sequence_logprobs(comp.policy, ro, params.sampling.temperature)
    moved = after - ro.logp
    assert (moved[adv > 0] > moved[adv < 0].max()).all()  # positive advantages gained probability


def test_rloo_update_raises_the_logprob_of_positive_advantages(fake_images, wiring_t5, tmp_path):
    params = make_params(tmp_path, algo="rloo", learning_rate=1e-2, k=2)
    comp = make_components(wiring_t5, fake_images)
    ro, _ = rollout(comp, params, PROMPTS[:2], sample_seed=2)
    optimizer = torch.optim.AdamW(comp.policy.parameters(), lr=params.rl.learning_rate, weight_decay=0.0)
    adv = torch.tensor([2.0, -2.0, -2.0, 2.0])
    logp_old = ro.logp.clone()
    update(comp.policy, optimizer, ro, adv, logp_old, params.rl, params.sampling.temperature)
    with torch.no_grad():
        after, _ = sequence_logprobs(comp.policy, ro, params.sampling.temperature)
    moved = after - logp_old
    assert moved[adv > 0].min() > moved[adv < 0].max()


# --- the loop: seed pairing and what reaches the update ------------------------------------------------


def test_run_rl_pairs_seeds_and_feeds_weighted_z_rewards_and_kl(fake_images, wiring_t5, tmp_path, monkeypatch):
    import negopt.rl.loop as loop

    # training images and the calibration at 3 denoising steps (reward.rollout_inference_steps), not the profile's
    params = make_params(tmp_path, {"reward": {"rollout_inference_steps": 3}}, steps=2, batch_prompts=3, k=3)
    assert params.active.num_inference_steps != 3
    comp = make_components(wiring_t5, fake_images)
    seen = []
    real = loop.compute_advantages

    def spy(rewards, logp_old, logp_ref, kl_coef, k, *rest):
        seen.append((rewards.clone(), logp_old.clone(), logp_ref.clone(), kl_coef, k))
        return real(rewards, logp_old, logp_ref, kl_coef, k, *rest)

    rolled = []
    real_rollout = loop.rollout

    def spy_rollout(*args, **kwargs):
        ro, logp_ref = real_rollout(*args, **kwargs)
        rolled.append((ro, logp_ref))
        return ro, logp_ref

    monkeypatch.setattr(loop, "compute_advantages", spy)
    monkeypatch.setattr(loop, "rollout", spy_rollout)
    state = run_rl(params, comp, PROMPTS)
    assert state.step == 2 and len(seen) == 2
    calib = fake_images.triples[:12]
    calib_marginal = torch.stack([probs_of(n, s) for _, n, s in calib]).mean(0)
    calib_terms = hand_terms(calib, calib_marginal)
    rendered, steps_seeds = 12, []
    for step in range(2):
        prompts, image_seeds, _ = step_plan(params.base.seed, step, PROMPTS, 3)
        ro, ref = rolled[step]  # the calibration samples through its own sampler, not the rollout
        # prompt-major: a prompt's k samples share its one seed; different prompts have different seeds
        triples = [(p, n, s) for (p, s), n in zip([(p, s) for p, s in zip(prompts, image_seeds, strict=True)
                                                   for _ in range(3)], ro.negatives, strict=True)]
        distinct = list(dict.fromkeys(triples))  # a sample repeated within its group is rendered once
        assert fake_images.triples[rendered:rendered + len(distinct)] == distinct
        rendered += len(distinct)
        assert len(set(image_seeds)) == 3
        rewards, logp_old, logp_ref, kl_coef, k = seen[step]
        z = hand_z(hand_terms(triples, calib_marginal), calib_terms, 3)  # every sample's reward, repeats too
        assert torch.allclose(rewards.double(), sum(WEIGHTS[t] * z[t] for t in TERMS), rtol=1e-4, atol=1e-5)
        assert kl_coef == 0.7 and k == 3
        assert (logp_old - logp_ref).abs().max() > 1e-2  # the frozen reference, not the policy
        assert torch.equal(logp_old, ro.logp) and torch.equal(logp_ref, ref)  # the KL's sign
        steps_seeds.append({s for _, _, s in distinct})
    assert rendered == len(fake_images.triples)
    assert steps_seeds[0] != steps_seeds[1]  # each step draws its own seeds
    assert fake_images.steps and set(fake_images.steps) == {3}  # calibration and training: the rollout steps


# --- the test evaluation: same seeds for SFT and RL, averaged per prompt ---------------------------------


def test_evaluate_rl_same_seeds_for_both_models_and_per_prompt_means(fake_images, tmp_path, monkeypatch):
    seen: list = []
    monkeypatch.setattr(rl_evaluate, "decode_negatives", fake_decode(seen))
    monkeypatch.setattr(rl_evaluate, "kl_to_sft", lambda *a, **k: 0.0)  # the fake models have no weights to sample
    params = make_params(tmp_path, {"reward": {"image_batch_size": 5, "rollout_inference_steps": 3}})

    def reward_fn(images, prompts, metadata):
        # reward = a seed effect (large, shared by the pair) + len(negative): the paired gain is len_rl - len_sft
        ts = [FakeScorer(fake_images).triple(x) for x in images]
        assert [p for p, _, _ in ts] == list(prompts)
        r = torch.tensor([float(s % 97) + len(n) for _, n, s in ts])
        return r, {"raw": {t: r for t in TERMS}, "z": {t: r for t in TERMS}}

    metrics, examples = rl_evaluate.evaluate_rl(None, Named("sft"), Named("rl"), None, None, reward_fn, PROMPTS,
                                                params)
    prompts, seeds = rl_evaluate.eval_plan(PROMPTS, 4, params.rl.test.seed, 3)
    n_img = 4 * 3
    sft_t, rl_t = fake_images.triples[:n_img], fake_images.triples[n_img:]
    assert [s for _, _, s in sft_t] == [s for _, _, s in rl_t] == [s for row in seeds for s in row]
    assert [p for p, _, _ in rl_t] == [p for p in prompts for _ in range(3)]
    assert {name for name, *_ in seen} == {"sft", "rl"}
    assert all(cfg is params.decode and (pre, msl) == (params.sft.task_prefix, params.sft.max_source_length)
               for _, cfg, pre, msl in seen)  # the deployed decode and input format
    # per-prompt means over the 3 seeds; the gain is len_rl - len_sft = (2i + 3) - (i + 1) = i + 2 for prompt i
    idx = torch.tensor([PROMPTS.index(p) for p in prompts], dtype=torch.float64)
    gain, gain_se = mean_and_se(idx + 2)
    seed_mean = torch.tensor([sum(s % 97 for s in row) / 3 for row in seeds], dtype=torch.float64)
    sft_mean, sft_se = mean_and_se(seed_mean + idx + 1)
    assert metrics["reward_test_gain"] == pytest.approx(gain) and metrics["reward_test_gain_se"] == pytest.approx(gain_se)
    assert metrics["reward_test_sft"] == pytest.approx(sft_mean) and metrics["reward_test_sft_se"] == pytest.approx(sft_se)
    assert metrics["n_test"] == 4 and metrics["n_test_images"] == 12 and metrics["test_images_rendered"] == 24
    assert metrics["negative_chars_sft"] == pytest.approx(float((idx + 1).mean()))
    # per-term means over each model's own images (the fake's terms all equal its reward)
    assert metrics["aesthetic_test_sft"] == pytest.approx(sft_mean) and metrics["clip_raw_test_rl"] == pytest.approx(
        float((seed_mean + 2 * idx + 3).mean()))
    assert [e["prompt"] for e in examples] == prompts
    assert set(fake_images.steps) == {params.active.num_inference_steps}  # the test renders as users do
    # how each model writes, counted on its own negatives (one counting function: negopt.core.prompt_syntax)
    assert metrics["syntax_sft"] == syntax_counts(["x" * (PROMPTS.index(p) + 1) for p in prompts])
    assert metrics["syntax_rl"] == syntax_counts(["y" * (2 * PROMPTS.index(p) + 3) for p in prompts])
    assert metrics["syntax_rl"] != metrics["syntax_sft"]


def test_rl_test_decode_is_the_deployed_decode_with_its_repetition_penalty(wiring_t5, tmp_path):
    from negopt.models.loader import load_policy
    from negopt.policy.decode import decode_negatives

    params = make_params(tmp_path)
    params = params.model_copy(update={"decode": params.decode.model_copy(
        update={"repetition_penalty": 3.0, "max_new_tokens": 12})})
    model, tok = load_policy(wiring_t5, torch.device("cpu"))
    got = rl_evaluate.greedy_negatives(model, tok, PROMPTS, params)
    fmt = (params.sft.task_prefix, params.sft.max_source_length)
    assert got == decode_negatives(model, tok, PROMPTS, params.decode, *fmt)
    plain = params.decode.model_copy(update={"repetition_penalty": 1.0})
    assert got != decode_negatives(model, tok, PROMPTS, plain, *fmt)
