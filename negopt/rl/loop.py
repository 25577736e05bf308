"""The RL loop: calibrate the reward once, then train step after step; checkpoint selection picks what ships.

One step (:func:`train_step`; ``B = rl.batch_prompts`` prompts, ``k = rl.k`` samples each, ``N = B * k``):

1. **plan**: the step's prompts, one diffusion seed per prompt and the sampling seed, from
   ``(base.seed, step, attempt)`` alone (:func:`step_plan`), so a resumed run repeats the steps an
   uninterrupted one takes and a restart draws a stream of its own.
2. **rollout**: ``k`` negatives per prompt from the policy's sampler (``sampling.*``), with ``log pi_old(y|x)``
   from the sampling pass and ``log pi_ref(y|x)`` under the frozen SFT copy, summed over generated tokens.
3. **reward**: one image per (prompt, negative) on the prompt's one seed, shared by its ``k`` samples, so reward
   differences within a group come from the negatives; sharded over processes and gathered.
   ``R = sum_t w_t z_t`` (``negopt.reward.weighted``).
4. **advantages**: ``R' = R - kl_coef * (log pi_old - log pi_ref)`` (the k1 KL estimator in the reward), then
   RLOO's ``A_i = R'_i - mean_{j != i} R'_j`` within each prompt's group.
5. **update**: RLOO: one AdamW step on ``-mean(A * log pi)``; PPO: ``rl.ppo.epochs`` steps on the clipped
   surrogate. Gradients clipped to ``rl.max_grad_norm``. Every process holds the whole batch and the same
   gathered rewards, so the update is identical on all ranks without gradient sync.

Around the steps (:func:`run_rl`): the reward is calibrated once (``negopt.reward.calibration``) or restored with
a checkpoint; after a step, a due check of checkpoint selection (``negopt.rl.selection``) reads the val prompts;
a checkpoint every ``rl.checkpoint_every`` steps; an attempt that ends keeping nothing restarts from the SFT
weights with a fresh optimizer (``rl.restarts``). Dropout stays off (``eval()``): the log-probs in the update are
those of the sampling policy.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from negopt.core.io import recover_dir
from negopt.core.params import Params
from negopt.policy.decode import format_sources, saved_retrieval
from negopt.policy.sampling import Rollout, sample_rollout, sequence_logprobs
from negopt.reward.calibration import calibrate_rewards
from negopt.reward.weighted import rollout_profile, score_triples, weighted_sum_reward
from negopt.rl.advantages import kl_penalised_rewards, rloo_advantages
from negopt.rl.checkpoint import RunState, fingerprint, load_checkpoint, save_checkpoint
from negopt.rl.live import restore_live, truncate_live
from negopt.rl.loss import policy_loss
from negopt.rl.selection import CheckpointSelector


@dataclass
class Components:
    """The models a run uses, loaded once (``stages/rl.py`` builds them)."""

    policy: torch.nn.Module
    ref: torch.nn.Module  # frozen SFT copy, the KL anchor
    tokenizer: Any
    pipe: Any  # a diffusers text-to-image pipeline
    scorer: Any  # negopt.images.scorers.ImageScorer
    sft_dir: str = ""  # where the SFT weights came from (the fingerprint, the retrieval context)


@dataclass
class Run:
    """What stays fixed over a run: its settings, models, training prompts and plumbing."""

    params: Params
    comp: Components
    prompts: list[str]  # the training prompts
    ckpt_dir: Path
    fingerprint: str
    accelerator: Any = None
    live: Any = None  # dvclive's Live on the main process
    selector: CheckpointSelector | None = None

    @property
    def main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def sft_dir(self) -> str:
        return self.comp.sft_dir or self.params.paths.sft

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


# --- one step, as small functions ------------------------------------------------------------------


def step_plan(seed: int, step: int, prompts: list[str], batch_prompts: int,
              attempt: int = 0) -> tuple[list[str], list[int], int]:
    """The step's prompts, one diffusion seed per prompt, and the sampling seed, from (seed, step) only; a
    restart (``attempt`` > 0) draws from (seed, step, attempt), its own training stream."""
    rng = np.random.default_rng([seed, step, attempt] if attempt else [seed, step])
    pick = rng.choice(len(prompts), size=min(batch_prompts, len(prompts)), replace=False)
    image_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    return [prompts[i] for i in pick], image_seeds, int(rng.integers(0, 2**31 - 1))


def rollout(comp: Components, params: Params, prompts: list[str], sample_seed: int) -> tuple[Rollout, torch.Tensor]:
    """``rl.k`` samples per prompt, with the sampling pass's log-probs and entropy (``Rollout.logp``,
    ``.entropy``), and the reference's log-probs [N]. The source is the deployed model's (its saved retrieval
    context, if any): RL optimises what users run."""
    sampling, sft = params.sampling, params.sft
    sources = format_sources(prompts, sft.task_prefix, saved_retrieval(comp.sft_dir or params.paths.sft))
    ro = sample_rollout(comp.policy, comp.tokenizer, sources, params.rl.k, sampling.temperature, sampling.top_p,
                        sampling.max_new_tokens, sft.max_source_length, sample_seed, scored=True)
    with torch.no_grad():
        logp_ref, _ = sequence_logprobs(comp.ref, ro, sampling.temperature)
    return ro, logp_ref.cpu()


def compute_advantages(rewards: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, kl_coef: float,
                       k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages [N], penalised rewards [N], kl [N]): ``R' = R - kl_coef * KL``, then RLOO within groups."""
    penalised, kl = kl_penalised_rewards(rewards, logp_old, logp_ref, kl_coef)
    return rloo_advantages(penalised, k), penalised, kl


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The learning rate of 0-based ``step``: linear from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps``
    (from the step alone, so a resumed run gets the same rate)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def update(policy, optimizer, ro: Rollout, advantages: torch.Tensor, logp_old: torch.Tensor, rl,
           temperature: float) -> dict:
    """One RLOO step, or ``rl.ppo.epochs`` PPO-clip steps, on the whole batch; returns loss statistics. The
    log-probs are at the sampling ``temperature``: those of the distribution the samples came from."""
    device = next(policy.parameters()).device
    adv, old = advantages.to(device), logp_old.to(device)
    stats: dict[str, float] = {}
    for _ in range(rl.ppo.epochs if rl.algo == "ppo" else 1):
        logp, _ = sequence_logprobs(policy, ro, temperature)
        loss, extra = policy_loss(rl.algo, logp, adv, old, rl.ppo.clip_range)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), rl.max_grad_norm)
        optimizer.step()
        stats = {"loss": loss.item(), "grad_norm": float(grad_norm), **extra}
    return stats


def step_logs(rewards: dict[str, torch.Tensor], penalised, kl, ro: Rollout, upd: dict,
              terms: tuple[str, ...]) -> dict[str, float]:
    """Per-step scalars for dvclive: reward and each of ``terms`` (z and raw), KL, entropy, negative length."""
    logs = {"reward": rewards["reward"].mean().item(), "reward_abs_max": rewards["reward"].abs().max().item(),
            "reward_kl": penalised.mean().item(), "kl": kl.mean().item(),
            "entropy": ro.entropy.mean().item(), "negative_tokens": ro.gen_mask.sum(1).float().mean().item(),
            "negative_chars": float(np.mean([len(n) for n in ro.negatives])),
            "distinct_negatives": len(set(ro.negatives)) / len(ro.negatives)}
    for t in terms:
        logs[t] = rewards[f"z/{t}"].mean().item()
        logs[f"{t}_raw"] = rewards[f"raw/{t}"].mean().item()
    return logs | upd


def train_step(run: Run, state: RunState, optimizer, step: int) -> tuple[dict[str, float], dict[str, float]]:
    """Train 0-based ``step`` of ``state.attempt`` (the module docstring's five steps); returns (logs, seconds)."""
    params, comp, rl = run.params, run.comp, run.params.rl
    t0 = time.perf_counter()
    prompts, image_seeds, sample_seed = step_plan(params.base.seed, step, run.prompts, rl.batch_prompts,  # 1. plan
                                                  state.attempt)
    ro, logp_ref = rollout(comp, params, prompts, sample_seed)  # 2. rollout
    t1 = time.perf_counter()
    reward_fn = weighted_sum_reward(comp.scorer, params.reward.weights.scored(), state.stats, state.marginal)
    rep = [p for p in prompts for _ in range(rl.k)]  # prompt-major, like the rollout
    seeds = [s for s in image_seeds for _ in range(rl.k)]  # one seed shared by a prompt's k samples
    rewards = score_triples(run.accelerator, comp.pipe, rollout_profile(params), reward_fn, rep, ro.negatives,  # 3.
                            seeds, params.reward.image_batch_size)
    t2 = time.perf_counter()
    logp_old = ro.logp.cpu()
    adv, penalised, kl = compute_advantages(rewards["reward"], logp_old, logp_ref, rl.kl_coef, rl.k)  # 4. advantages
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(rl.learning_rate, step, rl.warmup_steps)
    upd = update(comp.policy, optimizer, ro, adv, logp_old, rl, params.sampling.temperature)  # 5. update
    t3 = time.perf_counter()
    state.step = step + 1
    logs = step_logs(rewards, penalised, kl, ro, upd, state.stats.names)
    logs |= {"attempt": float(state.attempt), "lr": optimizer.param_groups[0]["lr"]}
    return logs, {"sample": t1 - t0, "images": t2 - t1, "update": t3 - t2}


def selection_check(run: Run, state: RunState, last: int) -> tuple[dict[str, float], dict[str, float]]:
    """Checkpoint selection's check after ``state.step`` when one is due; returns (logs, seconds): the val
    images it rendered count as images in the step's anatomy, its decode as ``select``."""
    selector = run.selector
    if selector is None or not selector.due(state.step, last):
        return {}, {"select": 0.0, "select_images": 0.0}
    t0, images_before = time.perf_counter(), selector.image_seconds
    check = selector.observe(state.step, run.comp.policy)
    images = selector.image_seconds - images_before
    logs = {"val_distinct_ratio": check.ratio} | ({"val_reward_gain": check.gain} if check.gain is not None else {})
    oracle_gain = getattr(selector.gain, "oracle_gain", None)  # the world profile: the same gain in true quality
    if check.gain is not None and oracle_gain is not None:
        logs["val_oracle_gain"] = oracle_gain
    return logs, {"select": time.perf_counter() - t0 - images, "select_images": images}


IMAGE_SECONDS = ("images", "select_images")  # generation + reward scoring: the training batch's and selection's


def overhead_share(seconds: dict[str, float]) -> float:
    """Share of the training loop's time outside image generation + reward scoring (``IMAGE_SECONDS``):
    ``(sum - images) / sum``; 0 for an empty loop."""
    total = sum(seconds.values())
    images = sum(seconds.get(name, 0.0) for name in IMAGE_SECONDS)
    return (total - images) / total if total > 0 else 0.0


# --- the loop ------------------------------------------------------------------------------------


def new_optimizer(policy, rl) -> torch.optim.Optimizer:
    return torch.optim.AdamW(policy.parameters(), lr=rl.learning_rate, weight_decay=0.0)


def checkpoint(run: Run, state: RunState, optimizer) -> None:
    """Save the run's state (main process), then hold every rank until it is written."""
    if run.main:
        save_checkpoint(run.ckpt_dir, run.comp.policy, optimizer, state, run.fingerprint, run.selector,
                        run.live.dir if run.live is not None else None)
    run.wait()


def resume_or_calibrate(run: Run, optimizer) -> RunState:
    """The state of this run's last checkpoint (weights and optimizer restored in place), else step 0 of a new
    run with the reward calibrated from the SFT policy."""
    if run.main:
        recover_dir(run.ckpt_dir)  # a kill between atomic_dir's two renames left the last checkpoint aside
    run.wait()  # ... and every rank reads it only once it is back
    state = load_checkpoint(run.ckpt_dir, run.comp.policy, optimizer, run.fingerprint, remove_stale=run.main,
                            selector=run.selector)
    run.wait()  # no rank may start writing before all have read
    if state is None:
        comp = run.comp
        marginal, stats = calibrate_rewards(run.accelerator, run.params, run.prompts, policy=comp.policy,
                                            tokenizer=comp.tokenizer, sft_dir=run.sft_dir, pipe=comp.pipe,
                                            scorer=comp.scorer)
        return RunState(step=0, stats=stats, marginal=marginal)
    if run.main:
        print(f"rl: resuming from step {state.step}" + (f" of attempt {state.attempt}" if state.attempt else "")
              + f" ({run.ckpt_dir})")
    return state


def train_attempt(run: Run, state: RunState, optimizer, stop_after: int | None) -> None:
    """Steps ``state.step + 1 ..`` of ``state.attempt`` until ``rl.steps``, ``stop_after`` or selection's early
    stop; ``state``, the policy, the optimizer and the selector change in place."""
    rl = run.params.rl
    last = rl.steps if stop_after is None else min(rl.steps, stop_after)
    bar = tqdm(range(state.step, last), desc="rl" if not state.attempt else f"rl (attempt {state.attempt})",
               unit="step", disable=not run.main)
    for step in bar:
        if run.selector is not None and run.selector.stopped():  # selection's early stop (also on resume)
            break
        logs, seconds = train_step(run, state, optimizer, step)
        check_logs, check_seconds = selection_check(run, state, last)
        for name, dt in (seconds | check_seconds).items():  # the step's anatomy: in dvclive and summed in rl.json
            state.seconds[name] = state.seconds.get(name, 0.0) + dt
            logs[f"seconds_{name}"] = dt
        logs |= check_logs
        bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs['kl']:.2f}")
        if run.live is not None and run.main:
            for name, value in logs.items():
                run.live.log_metric(f"train/{name}", value)
            run.live.next_step()
        stopped = run.selector is not None and run.selector.stopped()
        if state.step % rl.checkpoint_every == 0 or state.step == last or stopped:
            checkpoint(run, state, optimizer)


def finish_attempt(run: Run, state: RunState) -> bool:
    """After an attempt: a finished one (``rl.steps`` reached or stopped early) gets its kept weights back.
    True when it kept nothing and a restart is left (``rl.restarts``)."""
    selector = run.selector
    if selector is None:
        return False
    finished = state.step == run.params.rl.steps or selector.stopped()
    if not finished:
        return False
    selector.restore(run.comp.policy, state.step)
    return selector.kept_step == 0 and state.attempt < run.params.rl.restarts


def restart(run: Run, state: RunState):
    """Start the next attempt from the SFT weights (the kept ones: nothing was kept) with a fresh optimizer on
    its own training stream; checkpointed at once, so a kill resumes the new attempt. Returns the optimizer."""
    rl = run.params.rl
    if run.main:
        print(f"rl: attempt {state.attempt} kept no step (SFT stays deployed); restart {state.attempt + 1} of "
              f"rl.restarts = {rl.restarts} from the SFT weights on its own training stream")
    run.selector.new_attempt()
    optimizer = new_optimizer(run.comp.policy, rl)
    state.steps_before, state.step, state.attempt = state.steps_before + state.step, 0, state.attempt + 1
    checkpoint(run, state, optimizer)
    return optimizer


def run_rl(params: Params, comp: Components, train_prompts: list[str], accelerator=None, live=None,
           stop_after: int | None = None, selector: CheckpointSelector | None = None) -> RunState:
    """Train ``comp.policy`` in place up to ``rl.steps`` (or ``stop_after`` steps, to test resume).

    With a ``selector`` the policy ends with the weights of its kept step once an attempt finishes; an attempt
    that kept nothing restarts (:func:`restart`). The reward statistics stay the first attempt's, so every
    attempt is judged by one reward. Resumes from ``paths.checkpoints/rl`` when a checkpoint of the same run
    exists; only the main process writes checkpoints and logs. Returns the final state.
    """
    run = Run(params, comp, train_prompts, Path(params.paths.checkpoints) / "rl",
              fingerprint(params, comp.sft_dir or params.paths.sft), accelerator, live, selector)
    comp.policy.eval()
    comp.ref.eval().requires_grad_(False)
    optimizer = new_optimizer(comp.policy, params.rl)
    state = resume_or_calibrate(run, optimizer)
    if selector is not None:  # selection scores with the calibrated reward, frozen for the run
        selector.bind_reward(weighted_sum_reward(comp.scorer, params.reward.weights.scored(),
                                                 copy.deepcopy(state.stats), state.marginal))
    if live is not None and run.main:
        restore_live(run.ckpt_dir, live.dir)  # the resumed checkpoint's curves: dvc repro deleted the plots first
        truncate_live(live.dir, state.steps_before + state.step)
        live.step = state.steps_before + state.step
    train_attempt(run, state, optimizer, stop_after)
    while finish_attempt(run, state):
        optimizer = restart(run, state)
        train_attempt(run, state, optimizer, stop_after)
    return state
