"""The RL loop: calibrate the reward, then per step rollout -> reward -> advantages -> update.

Checkpoint I/O is ``negopt.rl.checkpoint``, the dvclive rewind on resume ``negopt.rl.live``, the reward
and its terms ``negopt.reward.weighted`` over the registry ``negopt.reward.terms``.

One step (``B = rl.batch_prompts`` prompts, ``k = rl.k`` samples each, ``N = B * k``):

1. **rollout**: sample ``k`` negatives per prompt from the policy (temperature / top-p), and record
   ``log pi_old(y|x)`` and ``log pi_ref(y|x)`` (frozen SFT copy), summed over generated tokens.
2. **reward**: one image per (prompt, negative) with the prompt's *one* diffusion seed shared by its
   ``k`` samples, so reward differences within a group come from the negatives; images are sharded
   over accelerate processes and the rewards gathered. ``R = sum_t w_t z_t`` (see ``rewards.py``).
3. **advantages**: ``R' = R - kl_coef * (log pi_old - log pi_ref) - diversity_coef * d - cross_diversity_coef * c``
   (k1 KL estimator in the reward; ``d`` the share of the sample's group that is the same string, ``c`` the
   share of the other prompts' samples that are, ``shaping.py``), then RLOO
   ``A_i = R'_i - mean_{j != i} R'_j`` within each prompt's group.
4. **update**: RLOO: one AdamW step on ``-mean(A * log pi) - entropy_coef * mean(H)`` (``H`` the mean
   per-token entropy of a sample; ``rl.entropy_coef`` 0 leaves it out); PPO: ``ppo_epochs`` steps on the
   clipped surrogate. Gradients clipped to ``rl.max_grad_norm``. Every process holds the whole batch
   and the same gathered rewards, so the update is identical on all ranks without gradient sync.
5. **selection** (``rl.select_every``, ``selection.py``): every few steps the deployed decode of the
   validation prompts is checked for diversity and, at a diverse step, scored by the val reward; the best
   significant diverse step's weights are what the run returns, and a run that kept none restarts from SFT
   (``rl.restarts``).

Every random choice of a step (prompts, diffusion seeds, sampling seed) derives from
``(base.seed, step)``, so a resumed run repeats the steps an uninterrupted run would take.
Dropout stays off (``eval()``): the log-probs in the update are those of the sampling policy.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from negopt.core.io import recover_dir
from negopt.core.params import Params
from negopt.policy.decode import format_sources, saved_retrieval
from negopt.policy.sampling import Rollout, sample_rollout, sequence_logprobs
from negopt.reward.term_stats import TermStats
from negopt.reward.terms import TermBatch, score_terms
from negopt.reward.weighted import fit_term_stats, score_triples, weighted_sum_reward
from negopt.rl.advantages import duplicate_shares, kl_penalised_rewards, rloo_advantages
from negopt.rl.checkpoint import RlState, fingerprint, load_checkpoint, save_checkpoint
from negopt.rl.live import restore_live, truncate_live
from negopt.rl.loss import policy_loss
from negopt.rl.selection import DiversityGuard
from negopt.rl.shaping import cross_prompt_shares


@dataclass
class Components:
    """Everything a step needs, loaded once (``stages/rl.py`` builds it)."""

    policy: torch.nn.Module
    ref: torch.nn.Module  # frozen SFT copy, the KL anchor
    tokenizer: object
    pipe: object  # StableDiffusionPipeline
    scorer: object  # negopt.images.scorers.ImageScorer
    sft_dir: str = ""  # where the SFT weights came from (part of the checkpoint fingerprint)
    anchor: dict[str, str] | None = None  # train prompt -> its human negative, for rl.anchor_coef


# --- one step, as small functions ------------------------------------------------------------------


def step_plan(seed: int, step: int, prompts: list[str], batch_prompts: int,
              attempt: int = 0) -> tuple[list[str], list[int], int]:
    """The step's prompts, one diffusion seed per prompt, and the sampling seed, from (seed, step) only; a
    restart (``attempt`` > 0, rl.restarts) draws from (seed, step, attempt), its own training stream."""
    rng = np.random.default_rng([seed, step, attempt] if attempt else [seed, step])
    pick = rng.choice(len(prompts), size=min(batch_prompts, len(prompts)), replace=False)
    image_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    return [prompts[i] for i in pick], image_seeds, int(rng.integers(0, 2**31 - 1))


def rollout_profile(params: Params):
    """The profile the training rollouts and the reward calibration render with: ``rl.rollout_inference_steps``
    denoising steps when set (cheaper images for the training signal), else the profile's own. Checkpoint
    selection and the test render with the profile's steps: they judge the images users get."""
    steps = params.rl.rollout_inference_steps
    return params.active.model_copy(update={"num_inference_steps": steps}) if steps else params.active


def deployed_sources(comp: Components, params: Params, prompts: list[str]) -> list[str]:
    """The deployed model's source for each prompt (with its saved retrieval context, if any): RL optimises
    what users run."""
    return format_sources(prompts, params.sft.task_prefix, saved_retrieval(comp.sft_dir or params.paths.sft))


def rollout(comp: Components, params: Params, prompts: list[str], sample_seed: int) -> tuple[Rollout, dict]:
    """Sample k negatives per prompt; log-probs under the policy (old: the sampling pass's own) and the
    reference, entropy."""
    rl, sft = params.rl, params.sft
    sources = deployed_sources(comp, params, prompts)
    ro = sample_rollout(comp.policy, comp.tokenizer, sources, rl.k, rl.temperature, rl.top_p, rl.max_new_tokens,
                        sft.max_source_length, sample_seed, scored=True)
    with torch.no_grad():
        logp_ref, _ = sequence_logprobs(comp.ref, ro, rl.temperature)
    return ro, {"logp_old": ro.logp.cpu(), "logp_ref": logp_ref.cpu(), "entropy": ro.entropy.cpu()}


def compute_advantages(rewards: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, kl_coef: float,
                       k: int, negatives: list[str] | None = None,
                       diversity_coef: float = 0.0, cross_diversity_coef: float = 0.0,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages [N], penalised rewards [N], kl [N]); ``R' = R - kl_coef * KL - diversity_coef * d -
    cross_diversity_coef * c`` with ``d`` the ``duplicate_shares`` of the group and ``c`` the
    ``cross_prompt_shares`` of the step (a coefficient of 0 leaves its term out)."""
    penalised, kl = kl_penalised_rewards(rewards, logp_old, logp_ref, kl_coef)
    if diversity_coef and negatives is not None:
        penalised = penalised - diversity_coef * duplicate_shares(negatives, k)
    if cross_diversity_coef and negatives is not None:
        penalised = penalised - cross_diversity_coef * cross_prompt_shares(negatives, k)
    return rloo_advantages(penalised, k), penalised, kl


def anchor_batch(comp: Components, params: Params, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The step's prompts with their human negatives, teacher-forced, for the SFT anchor (``rl.anchor_coef``).

    Same source as the rollout (the deployed model's, with its retrieval context), encoded and padded as
    SFT training encodes its pairs (``encode_pairs``, label padding -100): the anchor is the SFT loss.
    """
    from transformers import DataCollatorForSeq2Seq

    from negopt.policy.sft import encode_pairs

    sft = params.sft
    retrieval = saved_retrieval(comp.sft_dir or params.paths.sft)
    contexts = retrieval.context(prompts) if retrieval is not None else None
    features = encode_pairs(comp.tokenizer, prompts, [comp.anchor[p] for p in prompts], sft.task_prefix,
                            sft.max_source_length, sft.max_target_length, contexts)
    return dict(DataCollatorForSeq2Seq(comp.tokenizer, label_pad_token_id=-100, return_tensors="pt")(features))


def anchor_on(rl, comp: Components, guard: DiversityGuard | None) -> bool:
    """Whether this step's loss carries the SFT anchor: ``rl.anchor_when`` always, or (``collapse``) from the
    first checkpoint-selection check whose val distinct share fell below ``rl.select_min_ratio`` x SFT's on.

    A latch, not a switch: once the greedy decode has started to collapse the anchor stays on, so a run whose
    decode never collapses (the built-in sample) trains without it. Without a guard nothing measures a
    collapse, and ``collapse`` keeps the anchor off. Resumes alike: the guard's history is checkpointed."""
    if not (rl.anchor_coef and comp.anchor):
        return False
    return rl.anchor_when == "always" or (guard is not None and guard.failed_once())


def anchor_from_step(rl, guard: DiversityGuard | None) -> int | None:
    """The first step trained with the anchor (None: never), for rl.json: the step after the first failing check."""
    if not rl.anchor_coef:
        return None
    if rl.anchor_when == "always":
        return 1
    failed = guard.first_failure() if guard is not None else None
    return None if failed is None else failed + 1


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The learning rate of 0-based ``step``: linear from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``.

    Adam's first updates move every weight by about ``lr`` whatever the gradient's size, and on the real
    pairs one such step can already flip the greedy decode of every prompt (README, The RL stage)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def update(policy, optimizer, ro: Rollout, advantages: torch.Tensor, logp_old: torch.Tensor, params: Params,
           anchor: dict[str, torch.Tensor] | None = None) -> dict:
    """One RLOO step, or ``ppo_epochs`` PPO-clip steps, on the whole batch; returns loss statistics.

    ``anchor`` (with ``rl.anchor_coef`` > 0): the loss adds ``anchor_coef x`` the SFT loss (mean token
    cross-entropy) on human (prompt, negative) pairs, as InstructGPT's PPO-ptx mixes in its pretraining
    loss: a pull toward the data's prompt-conditional negatives, against one answer for every prompt.
    """
    rl = params.rl
    device = next(policy.parameters()).device
    adv, old = advantages.to(device), logp_old.to(device)
    stats: dict[str, float] = {}
    for _ in range(rl.ppo_epochs if rl.algo == "ppo" else 1):
        logp, entropy = sequence_logprobs(policy, ro, rl.temperature)
        loss, extra = policy_loss(rl.algo, logp, adv, old, rl.clip_range)
        if rl.entropy_coef:  # entropy bonus: -entropy_coef * mean per-token entropy, against early collapse
            loss = loss - rl.entropy_coef * entropy.mean()
        if anchor is not None and rl.anchor_coef:
            anchor_loss = policy(**{k: v.to(device) for k, v in anchor.items()}).loss
            loss = loss + rl.anchor_coef * anchor_loss
            extra = {**extra, "anchor_loss": anchor_loss.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), rl.max_grad_norm)
        optimizer.step()
        stats = {"loss": loss.item(), "grad_norm": float(grad_norm), **extra}
    return stats


# --- calibration -----------------------------------------------------------------------------------


def calibration_plan(params: Params, prompts: list[str]) -> tuple[list[str], list[int], int]:
    """The calibration's prompts, one diffusion seed per prompt and the sampling seed, from ``base.seed``
    on a stream no training step uses (steps draw from ``(seed, step)``, step < 2**31)."""
    rng = np.random.default_rng([params.base.seed, 2**31])
    pick = rng.choice(len(prompts), size=min(params.rl.calibration_prompts, len(prompts)), replace=False)
    group_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    return [prompts[i] for i in pick], group_seeds, int(rng.integers(0, 2**31 - 1))


def calibrate_rewards(accelerator, comp: Components, params: Params, prompts: list[str]) -> tuple[torch.Tensor, TermStats]:
    """Inception marginal and term statistics from SFT samples: ``k`` per prompt sharing one seed, rendered
    as the training rollouts are (``rollout_profile``), so the statistics describe the images RL is rewarded on.

    Two sharded passes over the ``M = calibration_prompts * k`` samples, each handing the next its values:

    1. images [M, 3, H, W] (uint8) and their Inception posteriors [M, C], gathered on every process;
       the marginal is the posteriors' mean;
    2. every registered term of those gathered images under that marginal -> ``TermStats``.

    Both passes run the micro-batches of ``rl.image_batch_size`` that ``score_triples`` runs, so any
    process count gives the same numbers.
    """
    from negopt.core.sharding import map_sharded
    from negopt.images.render import generate_images

    k, mb = params.rl.k, params.rl.image_batch_size
    picked, group_seeds, sample_seed = calibration_plan(params, prompts)
    ro, _ = rollout(comp, params, picked, sample_seed)
    chosen = [p for p in picked for _ in range(k)]  # prompt-major, like the rollout
    seeds = [s for s in group_seeds for _ in range(k)]

    def images_and_probs(idx: list[int]) -> dict[str, torch.Tensor]:
        images, probs = [], []
        for j in range(0, len(idx), mb):  # the same micro-batches as score_triples, for any process count
            part = idx[j:j + mb]
            imgs = generate_images(comp.pipe, [chosen[i] for i in part], [ro.negatives[i] for i in part],
                                   [seeds[i] for i in part], rollout_profile(params), batch_size=mb)
            images.append(imgs)
            probs.append(comp.scorer.inception_probs(imgs).float().cpu())
        return {"images": torch.cat(images), "probs": torch.cat(probs)}

    first = map_sharded(accelerator, len(chosen), images_and_probs, granularity=mb)
    images = first["images"]  # [M, 3, H, W]: pass 2 reads these rows, whichever process made them

    def terms_for(marginal: torch.Tensor) -> dict[str, torch.Tensor]:
        names = tuple(params.rl.reward.scored())

        def work(idx: list[int]) -> dict[str, torch.Tensor]:
            parts = []
            for j in range(0, len(idx), mb):
                part = idx[j:j + mb]
                batch = TermBatch(images[part[0]:part[-1] + 1], [chosen[i] for i in part], comp.scorer, marginal,
                                  params.rl.clip_term)
                parts.append(score_terms(batch, names))
            return {name: torch.cat([p[name] for p in parts]) for name in names}

        return map_sharded(accelerator, len(chosen), work, granularity=mb)

    return fit_term_stats(first["probs"], terms_for, group_size=k, norm=params.rl.reward_norm,
                          floor=params.rl.scale_floor, weights=params.rl.reward.scored())


# --- the loop ------------------------------------------------------------------------------------


IMAGE_SECONDS = ("images", "select_images")  # generation + reward scoring: the training batch's and selection's val images


def overhead_share(seconds: dict[str, float]) -> float:
    """Share of the training loop's time outside image generation + reward scoring (``IMAGE_SECONDS``:
    the training images and checkpoint selection's val images): ``(sum - images) / sum``; 0 for an empty loop."""
    total = sum(seconds.values())
    images = sum(seconds.get(name, 0.0) for name in IMAGE_SECONDS)
    return (total - images) / total if total > 0 else 0.0


def step_logs(rewards: dict[str, torch.Tensor], penalised, kl, extra: dict, ro: Rollout, upd: dict,
              terms: tuple[str, ...]) -> dict[str, float]:
    """Per-step scalars for dvclive: reward and each of ``terms`` (raw and z), KL, entropy, negative length."""
    logs = {"reward": rewards["reward"].mean().item(), "reward_abs_max": rewards["reward"].abs().max().item(),
            "reward_kl": penalised.mean().item(), "kl": kl.mean().item(),
            "entropy": extra["entropy"].mean().item(), "negative_tokens": ro.gen_mask.sum(1).float().mean().item(),
            "negative_chars": float(np.mean([len(n) for n in ro.negatives])),
            "distinct_negatives": len(set(ro.negatives)) / len(ro.negatives)}
    for t in terms:
        logs[f"{t}"] = rewards[f"z/{t}"].mean().item()
        logs[f"{t}_raw"] = rewards[f"raw/{t}"].mean().item()
    return logs | upd


def run_rl(params: Params, comp: Components, train_prompts: list[str], accelerator=None, live=None,
           stop_after: int | None = None, guard: DiversityGuard | None = None) -> RlState:
    """Train ``comp.policy`` in place up to ``rl.steps`` (or ``stop_after`` steps, to test resume).

    With a ``guard`` (checkpoint selection), the policy ends with the weights of ``guard.kept_step``
    once ``rl.steps`` is reached or the guard stopped the run early (the last checkpoint keeps the trained
    weights, so a longer run resumes). An attempt that finished keeping nothing restarts from the SFT
    weights with a fresh optimizer on the next training stream, up to ``rl.restarts`` times; the reward
    statistics stay the first attempt's, so every attempt is judged by one reward.

    Resumes from ``paths.checkpoints/rl`` when a checkpoint of the same run exists. Only the main
    process writes checkpoints and logs. Returns the final state (reward statistics, marginal).
    """
    rl = params.rl
    main = accelerator is None or accelerator.is_main_process
    ckpt_dir = Path(params.paths.checkpoints) / "rl"
    comp.policy.eval()
    comp.ref.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(comp.policy.parameters(), lr=rl.learning_rate, weight_decay=0.0)
    fp = fingerprint(params, comp.sft_dir or params.paths.sft)
    if main:
        recover_dir(ckpt_dir)  # a kill between atomic_dir's two renames left the last checkpoint aside
    if accelerator is not None:
        accelerator.wait_for_everyone()  # ... and every rank reads it only once it is back
    state = load_checkpoint(ckpt_dir, comp.policy, optimizer, fp, remove_stale=main, guard=guard)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # no rank may start writing before all have read
    if state is None:
        marginal, stats = calibrate_rewards(accelerator, comp, params, train_prompts)
        state = RlState(step=0, stats=stats, marginal=marginal)
    elif main:
        print(f"rl: resuming from step {state.step}" + (f" of attempt {state.attempt}" if state.attempt else "")
              + f" ({ckpt_dir})")
    if guard is not None:  # selection by val reward scores with the calibrated reward, frozen for the run
        guard.bind_reward(weighted_sum_reward(comp.scorer, params.rl.reward.scored(), copy.deepcopy(state.stats),
                                              state.marginal, rl.clip_term))
    if live is not None and main:
        restore_live(ckpt_dir, live.dir)  # the resumed checkpoint's curves: dvc repro deleted the plots before the stage
        truncate_live(live.dir, state.steps_before + state.step)
        live.step = state.steps_before + state.step
    while True:  # one training run per attempt (rl.restarts)
        train_attempt(params, comp, train_prompts, state, optimizer, accelerator, live, stop_after, guard, fp)
        finished = state.step == rl.steps or (guard is not None and guard.stopped())
        if guard is not None and finished:
            guard.restore(comp.policy, state.step)
        if not (guard is not None and finished and guard.kept_step == 0 and state.attempt < rl.restarts):
            return state
        # nothing kept (no diverse step gained on val): start again from the SFT weights on the next training stream
        if main:
            print(f"rl: attempt {state.attempt} kept no step (SFT stays deployed); restart {state.attempt + 1} of "
                  f"rl.restarts = {rl.restarts} from the SFT weights on its own training stream")
        guard.new_attempt()
        optimizer = torch.optim.AdamW(comp.policy.parameters(), lr=rl.learning_rate, weight_decay=0.0)
        state.steps_before, state.step, state.attempt = state.steps_before + state.step, 0, state.attempt + 1
        if main:
            save_checkpoint(ckpt_dir, comp.policy, optimizer, state, fp, guard, live.dir if live is not None else None)
        if accelerator is not None:
            accelerator.wait_for_everyone()


def train_attempt(params: Params, comp: Components, train_prompts: list[str], state: RlState, optimizer, accelerator,
                  live, stop_after: int | None, guard: DiversityGuard | None, fp: str) -> None:
    """Steps ``state.step + 1 ..`` of ``state.attempt`` until rl.steps, ``stop_after`` or the guard's early stop;
    updates ``state`` (and the policy, the optimizer, the guard) in place and checkpoints."""
    rl = params.rl
    main = accelerator is None or accelerator.is_main_process
    ckpt_dir = Path(params.paths.checkpoints) / "rl"
    weights = params.rl.reward.scored()
    last = rl.steps if stop_after is None else min(rl.steps, stop_after)
    bar = tqdm(range(state.step, last), desc="rl" if not state.attempt else f"rl (attempt {state.attempt})",
               unit="step", disable=not main)
    for step in bar:
        if guard is not None and guard.stopped():  # checkpoint selection's early stop (also on resume)
            break
        prompts, image_seeds, sample_seed = step_plan(params.base.seed, step, train_prompts, rl.batch_prompts,
                                                      state.attempt)
        t0 = time.perf_counter()
        ro, extra = rollout(comp, params, prompts, sample_seed)
        t1 = time.perf_counter()
        reward_fn = weighted_sum_reward(comp.scorer, weights, state.stats, state.marginal, rl.clip_term)
        rep = [p for p in prompts for _ in range(rl.k)]  # prompt-major, like the rollout
        seeds = [s for s in image_seeds for _ in range(rl.k)]  # one seed shared by a prompt's k samples
        rewards = score_triples(accelerator, comp.pipe, rollout_profile(params), reward_fn, rep, ro.negatives, seeds,
                                rl.image_batch_size)
        t2 = time.perf_counter()
        adv, penalised, kl = compute_advantages(rewards["reward"], extra["logp_old"], extra["logp_ref"], rl.kl_coef, rl.k,
                                                ro.negatives, rl.diversity_coef, rl.cross_diversity_coef)
        anchor = anchor_batch(comp, params, prompts) if anchor_on(rl, comp, guard) else None
        for group in optimizer.param_groups:  # from the step alone, so a resumed run gets the same rate
            group["lr"] = warmup_lr(rl.learning_rate, step, rl.warmup_steps)
        upd = update(comp.policy, optimizer, ro, adv, extra["logp_old"], params, anchor)
        if rl.reward_stats == "running":
            state.stats.update({t: rewards[f"raw/{t}"] for t in state.stats.names}, group_size=rl.k)
        t3 = time.perf_counter()
        state.step = step + 1
        logs = step_logs(rewards, penalised, kl, extra, ro, upd, state.stats.names)
        logs["anchor_on"] = float(anchor is not None)
        logs["attempt"] = float(state.attempt)
        logs["lr"] = optimizer.param_groups[0]["lr"]
        select_images = 0.0
        if guard is not None and guard.due(state.step, last):
            before = guard.image_seconds
            logs["val_distinct_ratio"] = guard.observe(state.step, comp.policy)
            select_images = guard.image_seconds - before
            row = guard.history[-1]
            if len(row) > 3 and row[3] is not None:  # scored by reward (a diverse step)
                logs["val_reward_gain"] = row[3]
        t4 = time.perf_counter()
        # the step's anatomy, per step in dvclive and summed in rl.json: what is not images + scoring is overhead
        for name, dt in (("sample", t1 - t0), ("images", t2 - t1), ("update", t3 - t2),
                         ("select", t4 - t3 - select_images), ("select_images", select_images)):
            state.seconds[name] = state.seconds.get(name, 0.0) + dt
            logs[f"seconds_{name}"] = dt
        bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs['kl']:.2f}")
        if live is not None and main:
            for name, value in logs.items():
                live.log_metric(f"train/{name}", value)
            live.next_step()
        if state.step % rl.checkpoint_every == 0 or state.step == last or (guard is not None and guard.stopped()):
            if main:
                save_checkpoint(ckpt_dir, comp.policy, optimizer, state, fp, guard, live.dir if live is not None else None)
            if accelerator is not None:
                accelerator.wait_for_everyone()
