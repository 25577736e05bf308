"""Mutation testing for the science code: plant one curated bug at a time, run the fast tests, list survivors.

Each mutant is one edit (an operator flipped, a constant changed, arguments swapped, a term dropped)
that changes a published number: the RL objective and its seed pairing, the test evaluation, the image
metrics, the drop-reason table, the SFT baseline. The edit is made in a scratch copy of the project
(the worktree is never touched), the relevant *fast* unit tests run with ``-x``, and a mutant that
passes them all is a survivor: either a missing test or an edit shown equivalent (``EQUIVALENT``).

    python tools/mutate.py                       # all mutants, the tests of this checkout
    python tools/mutate.py --only rl/ --only sft # a subset (substring of file or description)
    python tools/mutate.py --tests-from 6806169  # the same mutants against an older commit's tests
    python tools/mutate.py --list                # print the mutants and exit

A mutant whose target text is not in the file (the code was rewritten) is reported ``n/a``, never run:
update its ``old`` text rather than delete it. Slow tests (the tiny-zoo RL loop, SFT training) are not
run per mutant; ``.ci/run`` runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    file: str
    old: str
    new: str
    what: str


M = Mutant
MUTANTS: list[Mutant] = [
    # --- the RL objective -------------------------------------------------------------------------
    M("negopt/rl/loop.py", "logp_ref, _ = sequence_logprobs(comp.ref, ro, sampling.temperature)",
      "logp_ref, _ = sequence_logprobs(comp.policy, ro, sampling.temperature)", "reference log-probs from the policy (KL 0)"),
    M("negopt/policy/sampling.py", "masked_logprobs(torch.stack(out.logits, dim=1), gen, mask, temperature)",
      "masked_logprobs(torch.stack(out.logits, dim=1), gen, mask, 1.0)", "temperature missing from the rollout log-probs"),
    M("negopt/policy/sampling.py", "masked_logprobs(torch.stack(out.logits, dim=1), gen, mask, temperature)",
      "masked_logprobs(torch.stack(out.logits, dim=1)[:, :-1], gen[:, 1:], mask[:, 1:], temperature)",
      "the rollout's log-probs one token off"),
    M("negopt/data/neardup.py", "return inter / (size[a] + size[b] - inter)", "return inter / (size[a] + size[b])",
      "Jaccard over the sum of the set sizes, not the union"),
    M("negopt/data/neardup.py", "key = distinct(owner << np.uint64(32) | rank.astype(np.uint64))",
      "key = np.sort(owner << np.uint64(32) | rank.astype(np.uint64))", "a text's repeated shingles counted twice"),
    M("negopt/data/neardup.py", "return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x",
      "return x[np.r_[False, x[1:] != x[:-1]]] if len(x) else x", "distinct() drops the smallest value"),
    M("negopt/data/neardup.py", "hi = max(lo + 1, int(np.searchsorted(asked, (asked[lo - 1] if lo else 0) + chunk, side=\"right\")))",
      "hi = max(lo + 1, int(np.searchsorted(asked, chunk, side=\"right\")))", "chunks past the first restart their budget at 0"),
    M("negopt/data/neardup.py", "word = pc.not_equal(pc.utf8_length(flat), 0)",
      "word = pc.greater_equal(pc.utf8_length(flat), 0)", "the empty piece at a text's edge counted as a word"),
    M("negopt/data/neardup.py", "pieces = pc.utf8_split_whitespace(arr)", "pieces = pc.split_pattern(arr, \" \")",
      "words split on the space only, not on every whitespace character"),
    M("negopt/data/neardup.py", "np.maximum(size_a, size_b) >= threshold]",
      "np.maximum(size_a, size_b) > threshold]",
      "the set-size filter drops a pair exactly at the threshold"),
    M("negopt/data/neardup.py", "    inter[by_big] = inter_sorted", "    inter = inter_sorted",
      "the exact check's intersections left in the order they were asked"),
    M("negopt/core/runtime.py", "    if uses_torch:\n", "    if True:\n", "uses_torch=False still seeds torch"),
    M("negopt/core/runtime.py", "        torch.manual_seed(seed)", "        pass", "torch's generator never seeded"),
    M("stages/clean.py", "params = start_stage(uses_torch=False)", "params = start_stage()",
      "clean imports torch again"),
    M("negopt/policy/nucleus.py", "cut = (mass <= 1 - self.top_p)", "cut = (mass < 1 - self.top_p)",
      "nucleus edge off by one tie (mass exactly 1 - top_p kept)"),
    M("negopt/policy/nucleus.py", "scores < ascending.gather(-1, cut)", "scores <= ascending.gather(-1, cut)",
      "the nucleus' lowest kept token cut too"),
    M("negopt/policy/nucleus.py", "        if self.temperature != 1.0:\n            scores = scores / self.temperature\n", "",
      "nucleus sampling ignores the temperature"),
    M("negopt/rl/loop.py", "return rloo_advantages(penalised, k), penalised, kl",
      "return rloo_advantages(rewards, k), penalised, kl", "KL penalty never reaches the advantages"),
    M("negopt/rl/loop.py", "loss, extra = policy_loss(rl.algo, logp, adv, old, rl.ppo.clip_range)",
      "loss, extra = policy_loss(rl.algo, logp, adv, logp.detach(), rl.ppo.clip_range)",
      "PPO old log-probs recomputed after the update (ratio 1)"),
    M("negopt/rl/loop.py", 'for _ in range(rl.ppo.epochs if rl.algo == "ppo" else 1):', "for _ in range(1):",
      "rl.ppo.epochs ignored"),
    M("negopt/rl/loop.py", "seeds = [s for s in image_seeds for _ in range(rl.k)]",
      "seeds = [s for _ in range(rl.k) for s in image_seeds]", "a prompt's k samples on different seeds"),
    M("negopt/rl/loop.py", "seeds = [s for s in image_seeds for _ in range(rl.k)]",
      "seeds = [image_seeds[0] for _ in rep]", "all prompts of a step on one seed"),
    M("negopt/rl/loop.py", "image_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()",
      "image_seeds = [int(rng.integers(0, 2**31 - 1))] * len(pick)", "step_plan draws one seed for all prompts"),
    M("negopt/rl/loop.py", "weighted_sum_reward(comp.scorer, params.reward.weights.scored(), state.stats, state.marginal)",
      "weighted_sum_reward(comp.scorer, dict.fromkeys(params.reward.weights.scored(), 1.0), state.stats, state.marginal)",
      "reward weights ignored in training"),
    M("negopt/rl/loop.py", 'compute_advantages(rewards["reward"], logp_old, logp_ref, rl.kl_coef, rl.k)',
      'compute_advantages(rewards["reward"], logp_ref, logp_old, rl.kl_coef, rl.k)', "KL sign flipped in the loop"),
    M("negopt/rl/loop.py", 'compute_advantages(rewards["reward"], logp_old, logp_ref, rl.kl_coef, rl.k)',
      'compute_advantages(rewards["reward"], logp_old, logp_ref, 0.0, rl.k)', "rl.kl_coef ignored"),
    M("negopt/reward/calibration.py", "seeds = [s for s in group_seeds for _ in range(k)]",
      "seeds = [s for _ in range(k) for s in group_seeds]", "calibration groups on different seeds"),
    M("negopt/rl/loop.py", "rep = [p for p in prompts for _ in range(rl.k)]",
      "rep = [p for _ in range(rl.k) for p in prompts]", "rollout rows paired with the wrong prompts"),
    # --- rewards --------------------------------------------------------------------------------
    M("negopt/reward/weighted.py", 'return weighted_reward(z, weights).float(), {"raw": raw, "z": z}',
      'return weighted_reward(raw, weights).float(), {"raw": raw, "z": z}', "reward sums raw, not standardised, terms"),
    M("negopt/reward/calibration.py", "marginal = probs.double().mean(0).float()",
      "marginal = torch.full_like(probs[0], 1.0 / probs.shape[1])", "uniform calibration marginal"),
    M("negopt/reward/weighted.py", "rewards, info = reward_fn(images, p, ", "rewards, info = reward_fn(images, p[::-1], ",
      "score_triples scores images against reversed prompts"),
    M("negopt/reward/weighted.py", "p = [prompts[rows[i]] for i in idx]", "p = sorted(prompts[rows[i]] for i in idx)",
      "score_triples generates with shuffled prompts"),
    # --- the reward-term registry ----------------------------------------------------------------
    M("negopt/reward/terms.py", "return {name: REWARD_TERMS[name].score(batch).float().cpu() for name in names}",
      "return {name: REWARD_TERMS[names[0]].score(batch).float().cpu() for name in names}",
      "every term scored by the first term's scorer"),
    M("negopt/reward/calibration.py", "names = tuple(cfg.weights.scored())",
      "names = tuple(cfg.weights.scored())[:3]", "calibration leaves out a registered term"),
    M("negopt/rl/loop.py", "    for t in terms:\n", "    for t in terms[:3]:\n", "step logs leave out a registered term"),
    M("negopt/reward/calibration.py", "batch = TermBatch(images[part[0]:part[-1] + 1],", "batch = TermBatch(images[:len(part)],",
      "calibration pass 2 scores the first micro-batch's images again"),
    M("negopt/rl/card.py", "        for t, w in weights.items())", "        for t, w in list(weights.items())[:3])",
      "model card's scale table leaves out a registered term"),
    M("negopt/rl/live.py", "r[col].isdigit() and int(r[col]) < step]", "r[col].isdigit() and int(r[col]) <= step]",
      "resume keeps the dvclive row of the resume step"),
    M("negopt/core/params.py", "return default_weights() | weights", "return default_weights()",
      "reward.weights replaced by the registered defaults"),
    # --- advantages -----------------------------------------------------------------------------
    M("negopt/rl/advantages.py", "return rewards - kl_coef * kl, kl", "return rewards + kl_coef * kl, kl",
      "KL added to the reward"),
    M("negopt/rl/advantages.py", "baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)",
      "baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / k", "RLOO baseline divides by k"),
    M("negopt/reward/weighted.py", "return sum(float(w) * z_terms[name] for name, w in weights.items())",
      "return sum(z_terms[name] for name, w in weights.items())", "weighted_reward ignores the weights"),
    M("negopt/reward/term_stats.py", "(terms[n] - self.mean[n]) / self.scale(n)", "terms[n] / self.scale(n)",
      "standardise does not centre"),
    M("negopt/reward/term_stats.py", "return max(self.within_std(name), self.floor * self.std(name))",
      "return self.std(name)", "terms scaled by their global spread, not the within-group one"),
    M("negopt/core/stats.py", "t.std(unbiased=True)", "t.std(unbiased=False)", "standard error with ddof 0"),
    M("negopt/reward/term_stats.py", "self.within_df += n_b - n_b // group_size", "self.within_df += n_b",
      "within-group degrees of freedom = n"),
    # --- loss and policy ------------------------------------------------------------------------
    M("negopt/rl/loss.py", "loss = torch.maximum(unclipped, clipped).mean()",
      "loss = torch.minimum(unclipped, clipped).mean()", "PPO pessimistic bound flipped"),
    M("negopt/rl/loss.py", "return -(advantages.detach() * logp).mean()", "return (advantages.detach() * logp).mean()",
      "RLOO loss sign"),
    M("negopt/policy/sampling.py", "logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)",
      "logp_all = torch.log_softmax(logits.float(), dim=-1)",
      "token log-probs ignore the temperature"),
    M("negopt/policy/sampling.py", "eos_before = is_eos.cumsum(dim=1) - is_eos", "eos_before = is_eos.cumsum(dim=1)",
      "generated mask drops the eos token"),
    # --- RL test evaluation ---------------------------------------------------------------------
    M("negopt/rl/heldout.py", 'per_prompt = scores["reward"].reshape(2, n, s).mean(dim=2)',
      'per_prompt = scores["reward"].reshape(2, s, n).mean(dim=1)', "per-prompt mean over the wrong axis"),
    M("negopt/rl/heldout.py", "triples = (flat_p + flat_p, flat_sft + flat_rl, flat_s + flat_s)",
      "triples = (flat_p + flat_p, flat_sft + flat_rl, flat_s + flat_s[::-1])", "RL images on other seeds than SFT's"),
    M("negopt/rl/heldout.py", "return decode_negatives(model, tokenizer, prompts, params.decode, ",
      "return decode_negatives(model, tokenizer, prompts, params.decode.model_copy(update={'repetition_penalty': 1.0}), ",
      "RL test decode without the repetition penalty"),
    M("negopt/rl/heldout.py", "gain, gain_se = mean_and_se(r_rl - r_sft)", "gain, gain_se = mean_and_se(r_sft - r_rl)",
      "paired gain sign"),
    M("negopt/rl/heldout.py", 'scores[f"{kind}/{t}"][: n * s].mean().item()',
      'scores[f"{kind}/{t}"][n * s:].mean().item()', "SFT term means read from RL's rows"),
    # --- image metrics --------------------------------------------------------------------------
    M("negopt/images/scorers.py", "isc_splits=splits,", "isc_splits=1,", "Inception Score splits ignored"),
    M("negopt/images/scorers.py", "p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())",
      "q * (q.clamp_min(1e-300).log() - p.clamp_min(1e-300).log())", "KL direction reversed"),
    M("negopt/images/scorers.py", "return cls.clip_cosine_from_embeddings(image_emb, text_emb).clamp_min(0)",
      "return cls.clip_cosine_from_embeddings(image_emb, text_emb)",
      "CLIP score not clamped at 0"),
    M("negopt/images/scorers.py", "emb = F.normalize(embeddings.to(self.device).float(), dim=-1)",
      "emb = embeddings.to(self.device).float()", "aesthetic MLP on unnormalised embeddings"),
    M("negopt/images/scorers.py", "q = probs.mean(dim=0) if marginal is None else marginal.cpu().float()",
      "q = probs.mean(dim=0)", "fixed marginal ignored in reward_terms"),
    M("negopt/images/scorers.py", "return (x - mean) / std", "return x - mean", "CLIP pixels not divided by std"),
    M("negopt/core/distinct.py", "position[key] = len(rows)", "position[key] = row",
      "a repeated key maps to its first row's index, not its position among the distinct rows"),
    M("negopt/images/render.py", '"negative_prompt_embeds": embeds[inverse[len(prompts):]]',
      '"negative_prompt_embeds": embeds[inverse[:len(prompts)]]', "each image guided away from its own prompt"),
    M("negopt/images/render.py", "    if not isinstance(pipe, StableDiffusionPipeline):\n",
      "    if isinstance(pipe, StableDiffusionPipeline):\n", "SD 1.x given strings and SDXL given one encoder's embeddings"),
    # --- finding models, file sources ------------------------------------------------------------------
    M("negopt/models/find.py", "available, how, n = loc.where is not None and bool(loc.files), loc.how, None",
      "available, how, n = loc.where is not None, loc.how, None", "a component without weight files counts as available"),
    M("negopt/models/find.py", '"aesthetic": lambda p: url_file(p.aesthetic, p.aesthetic_url),',
      '"aesthetic": lambda p: url_file(p.aesthetic, p.inception_url),', "aesthetic how-to downloads the Inception URL"),
    M("negopt/data/sources.py", "if Path(os.path.abspath(path)).is_relative_to(os.path.abspath(sources_dir)):",
      "if Path(os.path.abspath(path)).is_relative_to(os.path.abspath(sources_dir)) or path.is_absolute():",
      "an absolute file: source outside paths.sources not warned about"),
    # --- evaluate stage ---------------------------------------------------------------------------
    M("negopt/compare/evaluate.py", 'rows["prompt"].astype(str).tolist(),', 'rows["prompt"].astype(str).tolist()[::-1],',
      "CLIP of each image against another image's prompt"),
    M("negopt/compare/evaluate.py", "inception_score_from_logits(logits, is_splits)", "inception_score_from_logits(logits, 1)",
      "evaluate.is_splits not passed on"),
    M("negopt/compare/evaluate.py", '"inception_probs": posteriors(logits)}', '"inception_probs": logits}',
      "logits stored as the posteriors"),
    M("negopt/images/scorers.py", 'isc_features_to_metric(logits.cpu(), splits, DEFAULTS["samples_shuffle"]',
      'isc_features_to_metric(logits.cpu(), splits, False', "one-pass IS without torch-fidelity's shuffle"),
    M("negopt/policy/sft.py", "chosen = np.random.default_rng(seed).random(len(prompts)) < self_share",
      "chosen = np.random.default_rng(0).random(len(prompts)) < self_share", "self-retrieval rows ignore the seed"),
    M("negopt/policy/sft.py", "return [[own, *ctx[:retrieval.k - 1]] if pick else ctx",
      "return [[*ctx[:retrieval.k - 1], own] if pick else ctx", "own negative retrieved last, not first"),
    M("negopt/models/t5.py", 'behavior="merged_with_previous"', 'behavior="isolated"',
      "phrase tokens without their comma"),
    M("negopt/models/t5.py", 'feed_forward_proj="relu", dropout_rate=0.0,', 'feed_forward_proj="relu", dropout_rate=0.1,',
      "tiny T5 built with dropout"),
    M("negopt/compare/evaluate.py", "if len(images) < is_splits:", "if len(images) <= is_splits:",
      "as many images as splits refused"),
    M("negopt/compare/evaluate.py", "aesthetic = batched_scores(scorer.aesthetic, images, batch_size)",
      "aesthetic = batched_scores(scorer.aesthetic, images[:batch_size], batch_size)", "aesthetic of the first batch only"),
    M("negopt/compare/evaluate.py", "preference = {name: batched_scores(partial(scorer.preference_score, name), images, batch_size, prompts)",
      "preference = {name: batched_scores(scorer.clip_score, images, batch_size, prompts)", "preference metric is the CLIP score"),
    # --- human-preference scorers, pipelines ----------------------------------------------------------
    M("negopt/images/preference.py", "SCALE = 100.0", "SCALE = 10.0", "HPSv2 not 100 x cosine"),
    M("negopt/images/preference.py", "scaled_cosine(img, txt, self.model.logit_scale.exp())",
      "scaled_cosine(img, txt, self.model.logit_scale)", "PickScore scaled by logit_scale, not its exp"),
    M("negopt/reward/terms.py", "return {n: w for n, w in weights.items() if w or not REWARD_TERMS[n].model}",
      "return dict(weights)", "a preference model scored at weight 0"),
    M("negopt/models/find.py", "return [c for c in LOCATORS if c not in OPTIONAL or getattr(p, OPTIONAL[c])]",
      "return list(LOCATORS)", "an unnamed preference model required"),
    M("negopt/models/loader.py", '    if not {"prompt", "negative_prompt", "height", "width"} <= set(call):',
      "    if not isinstance(cls, type):", "a pipeline without negative_prompt accepted"),
    M("negopt/models/find.py", 'SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2")',
      'SD_SUBFOLDERS = ("unet", "vae", "text_encoder")', "SDXL's second text encoder not checked"),
    # --- clean ------------------------------------------------------------------------------------
    M("negopt/data/clean.py", 'drop("short_prompt", p_len < rules.min_prompt_chars)\n    drop("long_prompt", ',
      'drop("long_prompt", p_len < rules.min_prompt_chars)\n    drop("short_prompt", ', "two drop reasons swapped"),
    M("negopt/data/clean.py", 'drop("short_prompt", p_len < rules.min_prompt_chars)',
      'drop("short_prompt", p_len <= rules.min_prompt_chars)', "min_prompt_chars off by one"),
    M("negopt/data/clean.py", "(likes < rules.min_likes)", "(likes <= rules.min_likes)", "min_likes off by one"),
    M("negopt/data/clean.py", "if rules.nsfw_filter:", "if not rules.nsfw_filter:", "nsfw filter inverted"),
    M("negopt/data/clean.py", 'dup[alive] = pair[alive].duplicated(keep="first").to_numpy()',
      'dup[alive] = pair[alive].duplicated(keep="last").to_numpy()', "normalised duplicates keep the last row"),
    M("negopt/data/clean.py", 'drop("empty_negative", n_len == 0)', 'drop("empty_negative", p_len == 0)',
      "empty-negative rule reads the prompt"),
    # --- compare ----------------------------------------------------------------------------------
    M("negopt/compare/gains.py", "return 100.0 * (candidate - baseline) / abs(baseline)",
      "return 100.0 * (candidate - baseline) / baseline", "relative gain over a signed baseline"),
    M("negopt/compare/gains.py", "relative_gain(float(eval_metrics[cand][metric]), float(eval_metrics[base][metric]))",
      "relative_gain(float(eval_metrics[base][metric]), float(eval_metrics[cand][metric]))",
      "candidate and baseline swapped"),
    M("negopt/compare/gains.py", "if base not in eval_metrics or base == cand:", "if base not in eval_metrics:",
      "a method compared with itself"),
    # --- sft --------------------------------------------------------------------------------------
    M("negopt/policy/sft.py", 'preds = {"most_frequent": [most_frequent(train_negatives)] * len(references)',
      'preds = {"most_frequent": [most_frequent(references)] * len(references)',
      "most-frequent baseline from the test references"),
    M("negopt/policy/sft.py", "return min(counts, key=lambda t: (-counts[t], t))", "return max(counts, key=lambda t: (counts[t], t))",
      "most_frequent ties go to the last text"),
    M("negopt/policy/sft.py", "use_stemmer=True", "use_stemmer=False", "ROUGE without stemming"),
    M("negopt/policy/sft.py", "if self.resumed is not None and self.resumed[0] == self.epoch:", "if self.resumed is not None:",
      "SFT resume's saved order used for every epoch"),
    M("negopt/policy/sft.py", "        save_sampler_state(self.sampler, Path(output_dir))\n", "",
      "SFT checkpoint without its order's RNG state (a resume in epoch 2+ trains on another order)"),
    M("negopt/policy/sft.py", "self.resumed = load_sampler_state(resume_from_checkpoint) if resume_from_checkpoint else None",
      "self.resumed = None", "SFT resume ignores the saved order"),
    M("negopt/policy/sft.py", "state, self.generator = torch.random.get_rng_state(), None",
      "state, self.generator = torch.random.get_rng_state(), torch.Generator()", "SFT order not transformers' own draw"),
    M("negopt/policy/sft.py", "        self.epoch = epoch\n", "        pass\n", "SFT sampler ignores set_epoch"),
    M("negopt/policy/sft.py", 'scores[f"rougeL_gain_over_{name}"], scores[f"rougeL_gain_over_{name}_se"] = gain, se',
      'scores[f"rougeL_gain_over_{name}"], scores[f"rougeL_gain_over_{name}_se"] = -gain, se', "gain sign flipped"),
    # --- the deployed decode ------------------------------------------------------------------------
    M("negopt/policy/decode.py", '"repetition_penalty": decode.repetition_penalty,', '"repetition_penalty": 1.0,',
      "deployed decode without the repetition penalty"),
    M("negopt/policy/decode.py", 'kw["num_beams"] = max(decode.num_beams, num)', 'kw["num_beams"] = num', "decode.num_beams ignored"),
    M("negopt/policy/decode.py", 'return f"{task_prefix}{prompt.strip()}"', 'return f"{prompt.strip()}"', "task prefix dropped"),
    M("negopt/policy/decode.py", '"top_p": decode.top_p, "temperature": decode.temperature', '"top_p": decode.top_p, "temperature": 1.0',
      "sampling temperature ignored"),
    # --- outputs a reader trusts, the models a stage asks for ------------------------------------------
    M("negopt/compare/generate.py", """    (images_dir / MANIFEST).unlink(missing_ok=True)
    for method in METHODS:""", """    for method in METHODS:""", "clear_outputs leaves the old manifest while it removes images"),
    # --- checkpoint selection by val reward, and restarts -------------------------------------------
    M("negopt/rl/selection.py", "\n                and self.gain >= min_z * self.se)", ")",
      "selection ignores rl.selection.min_z"),
    M("negopt/rl/selection.py", "return (self.ratio >= min_ratio and self.gain is not None",
      "return (self.gain is not None", "selection keeps a collapsed step"),
    M("negopt/rl/selection.py", "return max(ok)[1] if ok else 0", "return ok[-1][1] if ok else 0",
      "selection by reward keeps the last significant step, not the best"),
    M("negopt/rl/selection.py", "*(self.gain(policy) if ratio >= self.cfg.min_ratio else (None, None)))",
      "*self.gain(policy))", "val reward scored at collapsed checks too"),
    M("negopt/rl/selection.py", "if a != b]", "]", "val reward re-renders the prompts whose negative did not change"),
    M("negopt/rl/selection.py", "- self.sft_rewards[changed].mean(1))", "- self.sft_rewards.mean(1)[: len(changed)])",
      "val gain against the wrong SFT prompts"),
    M("negopt/rl/loop.py", "rng = np.random.default_rng([seed, step, attempt] if attempt else [seed, step])",
      "rng = np.random.default_rng([seed, step])", "a restart repeats the first attempt's training stream"),
    M("negopt/reward/terms.py", "return {t.model for t in REWARD_TERMS.values() if t.model} - set(models_needed(weights))",
      "return {t.model for t in REWARD_TERMS.values() if t.model}", "a weighted preference model counted as unused"),
    # --- the retrieve-and-rerank decode --------------------------------------------------------------
    M("negopt/policy/rerank.py", "v = ((v + u) | (v - u)) & full", "v = (v - u) & full", "bit-parallel LCS without the carry"),
    M("negopt/policy/rerank.py", "BaseModelOutput(last_hidden_state=hidden[inverse])",
      "BaseModelOutput(last_hidden_state=hidden[inverse.clamp(max=1)])",
      "a candidate's log-prob read under another prompt's encoding"),
    M("negopt/policy/rerank.py", "decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels)",
      "decoder_input_ids=labels", "candidate log-probs teacher-forced without the shift (each token sees itself)"),
    M("negopt/policy/rerank.py", "return 0.0 if n == 0 else 2 * n / (len(a) + len(b))", "return 0.0 if n == 0 else n / max(len(a), len(b))",
      "ROUGE-L as LCS over the longer text, not the F-measure"),
    M("negopt/policy/rerank.py", "            if t not in row:\n", "            if True:\n", "a neighbour's repeated negative is a second candidate"),
    M("negopt/policy/rerank.py", "weight = np.clip(c.cos, 0.0, None) ** w.sharpness", "weight = np.clip(c.cos, 0.0, None) ** 1.0",
      "rerank.sharpness ignored"),
    M("negopt/policy/rerank.py", "+ w.similarity * c.sim +", "+ w.similarity * c.sim * 0 +", "neighbour similarity dropped from the score"),
    M("negopt/policy/rerank.py", "np.where(c.own, w.own, 0.0)", "np.where(c.own, 0.0, w.own)", "own bonus given to the neighbours"),
    M("negopt/policy/rerank.py", 'order = np.argsort(-scores(c, w), axis=1, kind="stable")', 'order = np.argsort(scores(c, w), axis=1, kind="stable")',
      "rerank chooses the worst candidate"),
    M("negopt/policy/rerank.py", "keep = bool(gain > 0 and z >= min_z)", "keep = bool(gain > 0)", "rerank kept whatever its val z"),
    M("negopt/policy/rerank.py", "own = rouge[:, 0]  # column 0", "own = rouge[:, 1]  # column 0", "rerank gate against a neighbour"),
    M("negopt/policy/rerank.py", "c.logprob[rows, cols] = lp", "c.logprob[rows, cols] = 0.0 * lp", "candidate log-probs never filled"),
    M("negopt/policy/decode.py", "own = [t for row in choose(c, w, num) for t in row]", "own = own", "the saved rerank not applied"),
    M("negopt/policy/decode.py", '"rerank": self.retrieval.rerank.to_dict() if self.retrieval and self.retrieval.rerank else None}',
      '"rerank": None}', "rerank weights not saved with the model"),
    # --- the stale stop -----------------------------------------------------------------------------
    M("negopt/rl/selection.py", "self.checks[-1].step - self.kept_step >= stale",
      "self.checks[-1].step - self.kept_step > stale", "stale stop one check late"),
    M("negopt/rl/selection.py", "if stale and self.checks and", "if stale and self.kept_step and",
      "never stale while SFT is kept (an attempt keeping SFT trains all rl.steps)"),
    M("negopt/rl/selection.py", "if stale and self.checks", "if self.checks",
      "rl.selection.stale_steps 0 stops at once"),
    M("negopt/rl/card.py", 'steps{stop} (', 'steps (', "the card hides an early stop"),
    # --- best_of_n reads the rl stage's calibration ---------------------------------------------------
    M("negopt/reward/calibration.py", 'if meta.get("key") != key:', "if False:", "a saved calibration read whatever run made it"),
    M("negopt/reward/calibration.py", '{"reward": params.reward.model_dump(),',
      '{"reward": params.reward.model_dump(exclude={"calibration": {"prompts"}}),',
      "the calibration key ignores reward.calibration.prompts"),
    M("negopt/compare/best_of_n.py", "saved = load_calibration(params.paths.rl, calibration_key(params, device))", "saved = None",
      "best_of_n never reads the rl stage's calibration"),
    # --- reward.rollout_inference_steps --------------------------------------------------------------
    M("negopt/rl/loop.py", "score_triples(run.accelerator, comp.pipe, rollout_profile(params), reward_fn,",
      "score_triples(run.accelerator, comp.pipe, params.active, reward_fn,",
      "training images ignore reward.rollout_inference_steps"),
    M("negopt/reward/calibration.py", "profile = rollout_profile(params)", "profile = params.active",
      "calibration at other steps than the training images"),
    M("negopt/rl/selection.py", "score_triples(self.accelerator, self.pipe, self.params.active,",
      "score_triples(self.accelerator, self.pipe, __import__('negopt.reward.weighted', fromlist=['x']).rollout_profile("
      "self.params),", "checkpoint selection renders at the rollout steps"),
    M("negopt/reward/calibration.py", '{"reward": params.reward.model_dump(),',
      '{"reward": params.reward.model_dump(exclude={"rollout_inference_steps"}),',
      "the calibration key ignores reward.rollout_inference_steps"),
    # --- held out means held out: no choice reads test, the choices that must read val do -----------------
    M("stages/rl.py", 'read_prompts(params.paths.clean, "val"), accelerator,', 'read_prompts(params.paths.clean, "test"), accelerator,',
      "checkpoint selection reads the test prompts"),
    M("stages/rl.py", 'read_prompts(params.paths.clean, "test")\n', 'read_prompts(params.paths.clean, "val")\n',
      "RL's test metrics computed on val"),
    M("stages/sft.py", "fit_rerank(model, tokenizer, val.prompt.tolist(), val.negative_prompt.tolist(),",
      "fit_rerank(model, tokenizer, test.prompt.tolist(), test.negative_prompt.tolist(),",
      "the rerank fitted and gated on test"),
    M("stages/sft.py", 'test = read_split(paths.clean, "test")', 'test = read_split(paths.clean, "val")',
      "SFT's test ROUGE computed on val"),
    M("negopt/policy/retrieval.py", "s[np.asarray(exclude[i:i + batch_size])[:, None]", "s[np.asarray(exclude[:len(s)])[:, None]",
      "the near-duplicate exclusion uses the first batch's groups in every batch"),
    M("negopt/reward/calibration.py", '"sampling": params.sampling.model_dump(), "seed"', '"seed"',
      "the calibration key ignores the sampler"),
    M("negopt/rl/checkpoint.py", '"decode": params.decode.model_dump(), ', "",
      "the RL checkpoint's fingerprint ignores the deployed decode selection reads"),
    M("negopt/rl/checkpoint.py", 'NOT_TRAINING = {"checkpoint_every": True,', 'NOT_TRAINING = {"steps": True, "checkpoint_every": True,',
      "the RL checkpoint's fingerprint ignores rl.steps"),
    M("negopt/policy/sft.py", 'NOT_TRAINING = {"max_test_samples", "rerank"}', 'NOT_TRAINING = {"max_test_samples", "rerank", "eval_steps"}',
      "the SFT checkpoint's fingerprint ignores sft.eval_steps"),
    M("negopt/policy/sft.py", "rows = [*train_features, *eval_features]", "rows = [*train_features]",
      "the SFT checkpoint's fingerprint ignores the val rows"),
    M("negopt/rl/loop.py", "        optimizer = restart(run, state)\n", "        restart(run, state)\n",
      "a restart keeps the failed attempt's optimizer state"),
    M("negopt/rl/selection.py", '        self.past.append({"checks": [c.to_dict() for c in self.checks], "kept_step": 0})\n        self.checks = []',
      '        self.past.append({"checks": [c.to_dict() for c in self.checks], "kept_step": 0})',
      "a restart keeps the failed attempt's checks"),
    # --- prompts and negatives as their authors wrote them ------------------------------------------------
    M("negopt/core/prompt_syntax.py", "EMPHASIS = 1.1 ", "EMPHASIS = 1.2 ", "A1111's bracket factor 1.2, not 1.1"),
    M("negopt/core/prompt_syntax.py", "scale(square_open.pop(), 1 / EMPHASIS)", "scale(square_open.pop(), EMPHASIS)",
      "a square bracket multiplies by 1.1 instead of dividing"),
    M("negopt/core/prompt_syntax.py", "scale(round_open.pop(), float(weight))", "scale(round_open.pop(), EMPHASIS)",
      "(x:w) read as (x): the weight ignored"),
    M("negopt/core/prompt_syntax.py", "    for start in round_open:  # unclosed brackets run to the end\n        scale(start, EMPHASIS)\n",
      "", "an unclosed round bracket weighs nothing"),
    M("negopt/core/prompt_syntax.py", "out.append([token[1:], 1.0])", "out.append([token, 1.0])",
      "an escaped bracket keeps its backslash"),
    M("negopt/core/prompt_syntax.py", "_ATTENTION.finditer(re.sub(_EXTRA_NETWORK, \"\", text))", "_ATTENTION.finditer(text)",
      "a <lora:...> tag read as text"),
    M("negopt/core/prompt_syntax.py", "weight = round(weight, 10)", "weight = weight",
      "((x)) and (x:1.21) one float apart"),
    M("negopt/core/prompt_syntax.py", '"over_window": share(tokens > WINDOW)', '"over_window": share(tokens >= WINDOW)',
      "a text of exactly 75 tokens counted past the window"),
    M("negopt/core/prompt_syntax.py", "({'|'.join(map(re.escape, names))})($|[^\\w-])", "({'|'.join(map(re.escape, names))})($|\\W)",
      "bad-artist found inside bad-artist-anime"),
    M("negopt/core/prompt_syntax.py", "return running[offsets[1:]] - running[offsets[:-1]]", "return running[offsets[1:]]",
      "token counts accumulate over the texts"),
    M("negopt/core/prompt_syntax.py", '"tokens_p90": round(float(np.quantile(tokens, 0.9)), 1)',
      '"tokens_p90": round(float(np.quantile(tokens, 0.5)), 1)',
      "the token p90 is the median"),
    M("negopt/core/prompt_syntax.py", "items() if name not in have}", "items() if name in have}",
      "an embedding the pipeline lacks is not reported (the loaded ones are)"),
    M("negopt/images/render.py", '    if syntax == "a1111":\n        return _a1111_inputs', '    if syntax in ("a1111", "literal"):\n        return _a1111_inputs',
      "literal takes the a1111 path"),
    M("negopt/images/render.py", "groups.setdefault(max(length) if one_call else length[i], [])", "groups.setdefault(max(length), [])",
      "an a1111 row padded to its neighbours' length"),
    M("negopt/images/render.py", "    negatives = [spell_embeddings(t, names) for t in negatives]\n", "",
      "an embedding name in a negative not spelt as its token"),
    M("negopt/images/render.py", 'pooled = provider.get_pooled_embeddings(["".join(pieces)], device=compel.device)',
      "pooled = provider.get_pooled_embeddings([text], device=compel.device)", "SDXL pools the text with its syntax"),
    M("negopt/images/render.py", "pieces = [pipe.maybe_convert_prompt(f, tokenizer) for f in pieces]", "pass",
      "a multi-vector embedding gets one vector under a1111"),
    M("negopt/models/loader.py", "    with torch.random.fork_rng(devices=[]):\n", "    with torch.no_grad():\n",
      "loading an embedding moves the global RNG"),
    M("negopt/models/loader.py", 'pipe.load_textual_inversion(state["clip_g"], token=name, text_encoder=pipe.text_encoder_2,',
      'pipe.load_textual_inversion(state["clip_l"], token=name, text_encoder=pipe.text_encoder_2,',
      "an SDXL embedding's clip_l half in both encoders"),
    M("negopt/models/find.py", "complete = bool(found) and not how", "complete = bool(found)",
      "textual inversions found when only some are"),
    M("negopt/models/hub.py", 'kind = [] if repo_type == "model" else ["--repo-type", repo_type]', "kind = []",
      "a dataset repo's hf download line without --repo-type"),
    M("negopt/models/fetch.py", "hub_download(hub[0], allow_patterns=[hub[1]], repo_type=hub[2])",
      "hub_download(hub[0], allow_patterns=[hub[1]])", "an embedding in a dataset repo fetched from a model repo"),
    M("negopt/data/clean.py", '"negative_prompt": c.negative[c.alive]}', '"negative_prompt": c.negative}',
      "data.json counts the negatives of dropped rows"),
    M("negopt/compare/generate.py", "unloaded_embeddings(c, loaded)", "unloaded_embeddings(c, ())",
      "generate reports the loaded embedding as missing"),
    M("negopt/rl/heldout.py", '"syntax_rl": syntax_counts(neg_rl, names)', '"syntax_rl": syntax_counts(neg_sft, names)',
      "rl.json counts SFT's negatives as RL's"),
    # --- the world: its truth, its detectors, its users -------------------------------------------
    M("negopt/world/defects.py", "out[a] = p[a] * (1 - p[b] * (1 - KEEP_BOTH) / 2)",
      "out[a] = p[a] * (1 - p[b] * (1 - KEEP_BOTH))", "an exclusive pair's presence rate without the coin flip"),
    M("negopt/world/defects.py", "return float(0.4 + 0.6 * np.clip(", "return float(0.6 * np.clip(",
      "a mild present defect costs nothing"),
    M("negopt/world/quality.py", "return q - ALIGNMENT_WEIGHT * (1.0 - alignment(truth, asked))", "return q",
      "true quality ignores what the prompt asked"),
    M("negopt/world/detectors.py", "return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))",
      "return float((ranks[y].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))", "AUC's rank-sum offset off by one"),
    M("negopt/world/users.py", "seen_defects = {d for _ in range(seen) for d, s in sample_defects(content, rng).items() if s > 0}",
      "seen_defects = {d for _ in range(seen) for d, s in sample_defects(content, rng).items() if s >= 0}",
      "observers name every defect, seen or not"),
    M("negopt/world/oracle.py", "mean, se = paired_gain(a, b)", "mean, se = paired_gain(b, a)",
      "paired difference's sign flipped"),
    M("negopt/core/stats.py", "np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)",
      "np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64).mean()",
      "a paired gain's SE ignores the pairing"),
    M("negopt/data/sources.py", "df = generate_world_pairs(data.world.rows, data.world.seed)",
      "df = generate_world_pairs(data.world.rows, data.sample.seed)", "the world source reads the sample's seed"),
    # --- the world's oracle in evaluate, compare and RL ----------------------------------------------
    M("negopt/world/oracle.py", "judged = judge(np.asarray(images), calibration, contents)",
      "judged = judge(np.asarray(images), calibration, contents[::-1])", "the oracle judges images against other prompts"),
    M("negopt/world/oracle.py", 'out |= {f"rate_{d}": judged[f"{d}_found"].to_numpy(np.float64) for d in DEFECTS}',
      'out |= {f"rate_{d}": (judged[d] > 0.5).to_numpy(np.float64) for d in DEFECTS}',
      "a defect's rate from its strength above 0.5, not the calibrated detection"),
    M("negopt/world/train_diffusion.py", "weight = snr.clamp(max=snr_gamma) / (snr + 1 if",
      "weight = snr / (snr + 1 if", "min-SNR without its cap on the nearly clean steps"),
    M("negopt/world/train_diffusion.py", "target = abar.sqrt() * noise - (1 - abar).sqrt() * z0",
      "target = abar.sqrt() * noise + (1 - abar).sqrt() * z0", "the v target's sign on z0 flipped"),
    M("negopt/world/train_diffusion.py", '(snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)',
      "(snr + 1)", "an epsilon model weighted as a v model"),
    M("negopt/rl/heldout.py", "per_prompt = scores[\"oracle/true_quality\"].double().reshape(2, n, s).mean(dim=2)",
      "per_prompt = scores[\"oracle/true_quality\"].double().reshape(2, s, n).mean(dim=1)",
      "the test's oracle gain pairs images across prompts"),
    M("negopt/rl/heldout.py",
      'out[f"oracle_{key}_sft"], out[f"oracle_{key}_rl"] = values[: n * s].mean().item(), values[n * s:].mean().item()',
      'out[f"oracle_{key}_sft"], out[f"oracle_{key}_rl"] = values[n * s:].mean().item(), values[: n * s].mean().item()',
      "the oracle values of SFT and RL swapped"),
    M("negopt/rl/selection.py", "truth[changed] = true_quality.mean(1) - self.sft_truth[changed].mean(1)",
      "truth[changed] = true_quality.mean(1) - self.sft_rewards[changed].mean(1)",
      "the val oracle gain subtracts SFT's reward, not its true quality"),
    M("negopt/compare/intervals.py", '"diff": float(estimate_c - estimate_b),', '"diff": float(estimate_b - estimate_c),',
      "an oracle difference's sign flipped"),
    M("negopt/compare/intervals.py", '"diff_excludes_zero": excludes_zero(diff),', '"diff_excludes_zero": excludes_zero(gain),',
      "a difference marked by its percent gain's interval (None for a zero-rate baseline)"),
    M("negopt/compare/gains.py", "return METRICS | carried(PREFERENCE, eval_metrics) | carried(ORACLE, eval_metrics)",
      "return METRICS | carried(PREFERENCE, eval_metrics)", "compare drops the oracle's values"),
    # --- the frontier's oracle axis and kl_coef setting -----------------------------------------------
    M("negopt/compare/frontier.py", "terms = [t for t in [*terms, ORACLE_AXIS] if", "terms = [t for t in terms if",
      "the frontier leaves out the oracle's true quality"),
    M("negopt/compare/frontier.py", "if k in SETTINGS}", "if k in ()}", "a kl_coef sweep's points are unlabelled"),
    M("negopt/compare/frontier.py", 'if f"oracle_{ORACLE_AXIS}_rl" in metrics:', "if False:",
      "a world run's true quality is not read"),
]

# Fast tests per module (first match wins); slow ones (the tiny-zoo loop, SFT training) run in CI only.
_SFT_FAST = ["tests/test_sft.py", "-k", "not training_lowers and not interrupted and not stage_writes"]
TESTS: list[tuple[str, list[str]]] = [
    ("negopt/rl/advantages.py", ["tests/test_rl_advantages.py", "tests/test_rl_wiring.py"]),
    ("negopt/rl/live.py", ["tests/test_rl_loop.py", "-k", "truncate_live"]),
    ("negopt/rl/selection.py", ["tests/test_rl_selection.py", "tests/test_rl_loop.py", "-k",
                                "selection or restart or stale or kept"]),
    ("negopt/rl/heldout.py", ["tests/test_rl_selection.py", "tests/test_rl_wiring.py", "tests/test_rl_advantages.py",
                              "tests/test_reward_registry.py",
                              "tests/test_rl_loop.py::test_oracle_summary_pairs_per_prompt_means_by_hand"]),
    ("negopt/rl/loop.py", ["tests/test_rl_wiring.py", "tests/test_rl_advantages.py", "tests/test_reward_registry.py",
                           "tests/test_rl_loop.py::test_step_plan_is_a_function_of_seed_and_step",
                           "tests/test_rl_loop.py::test_an_attempt_after_a_restart_is_a_fresh_run_on_its_stream"]),
    ("negopt/rl/checkpoint.py", ["tests/test_rl_checkpoint.py", "tests/test_cache_keys.py"]),
    ("negopt/reward/calibration.py", ["tests/test_cache_keys.py", "tests/test_rl_wiring.py", "tests/test_best_of_n.py",
                                      "tests/test_reward_registry.py", "tests/test_reward_calibration.py",
                                      "tests/test_rl_loop.py::test_calibration_groups_share_prompt_and_seed"]),
    ("negopt/core/stats.py", ["tests/test_rl_advantages.py", "tests/test_rl_wiring.py", "tests/test_retrieval.py",
                              "tests/test_world_oracle.py"]),
    ("negopt/policy/retrieval.py", ["tests/test_batches.py", "tests/test_retrieval.py"]),
    ("stages/rl.py", ["tests/test_heldout.py"]),
    ("stages/sft.py", ["tests/test_heldout.py"]),
    ("negopt/compare/generate.py", ["tests/test_generate.py", "-k", "not sharded and not prompt_file"]),
    ("negopt/reward/term_stats.py", ["tests/test_rl_advantages.py", "tests/test_reward_calibration.py",
                                   "tests/test_rl_wiring.py"]),
    ("negopt/reward/terms.py", ["tests/test_reward_registry.py", "tests/test_rl_wiring.py", "tests/test_preference.py"]),
    ("negopt/core/params.py", ["tests/test_params.py", "tests/test_reward_registry.py"]),
    ("negopt/rl/loss.py", ["tests/test_rl_loss.py", "tests/test_rl_wiring.py"]),
    ("negopt/policy/sampling.py", ["tests/test_rl_policy.py", "tests/test_rl_wiring.py"]),
    ("negopt/reward/weighted.py", ["tests/test_best_of_n.py", "tests/test_rl_wiring.py", "tests/test_rl_advantages.py",
                              "tests/test_reward_registry.py"]),
    ("negopt/compare/best_of_n.py", ["tests/test_best_of_n.py"]),
    ("negopt/rl/", ["tests/test_rl_wiring.py", "tests/test_rl_advantages.py", "tests/test_reward_registry.py"]),
    ("negopt/images/scorers.py", ["tests/test_metrics.py", "tests/test_evaluate.py"]),
    ("negopt/images/render.py", ["tests/test_models.py", "tests/test_pipelines.py", "tests/test_prompt_syntax.py",
                                 "tests/test_generate.py", "-k", "not sharded and not prompt_file"]),
    ("negopt/core/prompt_syntax.py", ["tests/test_prompt_syntax.py", "tests/test_rl_wiring.py", "-k",
                                      "syntax or token or evaluate_rl or rouge or data_json or embedding"]),
    ("negopt/models/hub.py", ["tests/test_fetch.py", "tests/test_find.py", "tests/test_prompt_syntax.py", "-k",
                              "not rl_trains"]),
    ("negopt/models/fetch.py", ["tests/test_fetch.py"]),
    ("negopt/core/distinct.py", ["tests/test_rl_wiring.py", "tests/test_models.py", "tests/test_rerank.py"]),
    ("negopt/models/t5.py", ["tests/test_policy.py"]),
    ("negopt/compare/evaluate.py", ["tests/test_evaluate.py", "tests/test_preference.py", "-k", "not rl_trains"]),
    ("negopt/images/preference.py", ["tests/test_preference.py", "-k", "not rl_trains"]),
    ("negopt/models/loader.py", ["tests/test_pipelines.py", "tests/test_preference.py", "tests/test_prompt_syntax.py",
                                 "-k", "not rl_trains"]),
    ("negopt/data/clean.py", ["tests/test_clean.py", "tests/test_prompt_syntax.py"]),
    ("negopt/compare/gains.py", ["tests/test_compare.py", "tests/test_report.py", "tests/test_intervals.py"]),
    ("negopt/compare/intervals.py", ["tests/test_intervals.py", "tests/test_compare.py"]),
    ("negopt/compare/frontier.py", ["tests/test_frontier.py"]),
    ("negopt/policy/sft.py", _SFT_FAST + ["tests/test_retrieval.py", "tests/test_cache_keys.py"]),
    ("negopt/policy/decode.py", ["tests/test_decode.py", "tests/test_rerank.py"]),
    ("negopt/policy/nucleus.py", ["tests/test_nucleus.py", "tests/test_rl_policy.py"]),
    ("negopt/data/neardup.py", ["tests/test_neardup.py", "tests/test_clean.py"]),
    ("negopt/core/runtime.py", ["tests/test_errors.py"]),
    ("stages/clean.py", ["tests/test_errors.py"]),
    ("negopt/policy/rerank.py", ["tests/test_rerank.py"]),
    ("negopt/models/find.py", ["tests/test_find.py", "tests/test_fetch.py", "tests/test_models.py",
                               "tests/test_pipelines.py", "tests/test_preference.py", "tests/test_prompt_syntax.py",
                               "-k", "not rl_trains"]),
    ("negopt/data/sources.py", ["tests/test_source_tracking.py", "tests/test_sources.py", "tests/test_world_users.py",
                                "-m", "not e2e"]),
    ("negopt/world/train_diffusion.py", ["tests/test_world_diffusion_loss.py"]),
    ("negopt/world/", ["tests/test_world_scenes.py", "tests/test_world_quality.py", "tests/test_world_detectors.py",
                       "tests/test_world_oracle.py", "tests/test_world_users.py"]),
]

#: Survivors shown not to change behaviour, with the reason (keyed by the mutant's description).
EQUIVALENT: dict[str, str] = {
    "chunks past the first restart their budget at 0": "the same Jaccards: every later chunk then holds one pair "
    "(hi = lo + 1), so only the speed changes; the chunk size bounds memory, not results",
}


def tests_for(file: str, scratch: Path) -> list[str]:
    for prefix, args in TESTS:
        if file.startswith(prefix):
            present = [a for a in args if not a.startswith("tests/") or (scratch / a.split("::")[0]).exists()]
            return present if any(a.startswith("tests/") for a in present) else []
    return []


def make_scratch(tests_from: str | None) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="negopt-mutate-"))
    for name in ("negopt", "tests", "stages"):
        shutil.copytree(ROOT / name, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "pyproject.toml", "dvc.yaml"):
        shutil.copy2(ROOT / name, scratch / name)
    if tests_from:
        shutil.rmtree(scratch / "tests")
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
    return scratch


def run_tests(scratch: Path, args: list[str], timeout: int) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(scratch), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                              cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = -1  # a mutant that hangs the tests is caught too (by the CI timeout)
    return rc, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="substring of a mutant's file or description")
    ap.add_argument("--tests-from", help="git revision whose tests/ to run instead of this checkout's")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    mutants = [m for m in MUTANTS if not a.only or any(o in m.file or o in m.what for o in a.only)]
    if a.list:
        for m in mutants:
            print(f"{m.file:28} {m.what}")
        return 0
    scratch = make_scratch(a.tests_from)
    results = []
    try:
        for i, m in enumerate(mutants, 1):
            path = scratch / m.file
            original = path.read_text()
            args = tests_for(m.file, scratch)
            if original.count(m.old) != 1 or not args:
                status, rc, secs = "n/a", None, 0.0
            else:
                path.write_text(original.replace(m.old, m.new))
                try:
                    rc, secs = run_tests(scratch, args, a.timeout)
                finally:
                    path.write_text(original)
                status = "killed" if rc != 0 else ("equivalent" if m.what in EQUIVALENT else "SURVIVED")
            results.append({"file": m.file, "what": m.what, "status": status, "rc": rc, "seconds": round(secs, 1)})
            print(f"[{i:2}/{len(mutants)}] {status:10} {secs:6.1f}s  {m.file}: {m.what}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts = {s: sum(r["status"] == s for r in results) for s in ("killed", "SURVIVED", "equivalent", "n/a")}
    print(json.dumps(counts))
    for r in results:
        if r["status"] == "equivalent":
            print(f"equivalent: {r['file']}: {r['what']}: {EQUIVALENT[r['what']]}")
    if a.json:
        Path(a.json).write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    return 1 if counts["SURVIVED"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
