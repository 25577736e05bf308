"""The RL loop: rollout -> reward -> advantages -> update, with checkpoints and dvclive logs.

One step (``B = rl.batch_prompts`` prompts, ``k = rl.k`` samples each, ``N = B * k``):

1. **rollout**: sample ``k`` negatives per prompt from the policy (temperature / top-p), and record
   ``log pi_old(y|x)`` and ``log pi_ref(y|x)`` (frozen SFT copy), summed over generated tokens.
2. **reward**: one image per (prompt, negative) with the prompt's *one* diffusion seed shared by its
   ``k`` samples, so reward differences within a group come from the negatives; images are sharded
   over accelerate processes and the rewards gathered. ``R = sum_t w_t z_t`` (see ``rewards.py``).
3. **advantages**: ``R' = R - kl_coef * (log pi_old - log pi_ref) - diversity_coef * d`` (k1 KL estimator
   in the reward; ``d`` the share of the sample's group that is the same string), then RLOO
   ``A_i = R'_i - mean_{j != i} R'_j`` within each prompt's group.
4. **update**: RLOO: one AdamW step on ``-mean(A * log pi) - entropy_coef * mean(H)`` (``H`` the mean
   per-token entropy of a sample; ``rl.entropy_coef`` 0 leaves it out); PPO: ``ppo_epochs`` steps on the
   clipped surrogate. Gradients clipped to ``rl.max_grad_norm``. Every process holds the whole batch
   and the same gathered rewards, so the update is identical on all ranks without gradient sync.

Every random choice of a step (prompts, diffusion seeds, sampling seed) derives from
``(base.seed, step)``, so a resumed run repeats the steps an uninterrupted run would take.
Dropout stays off (``eval()``): the log-probs in the update are those of the sampling policy.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from negopt.decode import format_sources, saved_retrieval
from negopt.fingerprint import file_chunks
from negopt.fingerprint import fingerprint as run_fingerprint
from negopt.io import atomic_dir
from negopt.params import Params
from negopt.rl.advantages import TermStats, duplicate_shares, kl_penalised_rewards, rloo_advantages
from negopt.rl.loss import policy_loss
from negopt.rl.policy import Rollout, sample_rollout, sequence_logprobs
from negopt.rl.rewards import TERMS, calibrate, score_triples, weighted_sum_reward


@dataclass
class Components:
    """Everything a step needs, loaded once (``stages/rl.py`` builds it)."""

    policy: torch.nn.Module
    ref: torch.nn.Module  # frozen SFT copy, the KL anchor
    tokenizer: object
    pipe: object  # StableDiffusionPipeline
    scorer: object  # negopt.metrics.ImageScorer
    sft_dir: str = ""  # where the SFT weights came from (part of the checkpoint fingerprint)


@dataclass
class RlState:
    """What a checkpoint restores besides weights and optimizer."""

    step: int
    stats: TermStats
    marginal: torch.Tensor  # [C] Inception marginal of the fidelity term
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("sample", "images", "update"), 0.0))


# --- one step, as small functions ------------------------------------------------------------------


def step_plan(seed: int, step: int, prompts: list[str], batch_prompts: int) -> tuple[list[str], list[int], int]:
    """The step's prompts, one diffusion seed per prompt, and the sampling seed, from (seed, step) only."""
    rng = np.random.default_rng([seed, step])
    pick = rng.choice(len(prompts), size=min(batch_prompts, len(prompts)), replace=False)
    image_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    return [prompts[i] for i in pick], image_seeds, int(rng.integers(0, 2**31 - 1))


def rollout(comp: Components, params: Params, prompts: list[str], sample_seed: int) -> tuple[Rollout, dict]:
    """Sample k negatives per prompt; log-probs under the policy (old) and the reference, entropy."""
    rl, sft = params.rl, params.sft
    # the deployed model's source (with its saved retrieval context, if any): RL optimises what users run
    sources = format_sources(prompts, sft.task_prefix, saved_retrieval(comp.sft_dir or params.paths.sft))
    ro = sample_rollout(comp.policy, comp.tokenizer, sources, rl.k, rl.temperature, rl.top_p, rl.max_new_tokens,
                        sft.max_source_length, sample_seed)
    with torch.no_grad():
        logp_old, entropy = sequence_logprobs(comp.policy, ro, rl.temperature)
        logp_ref, _ = sequence_logprobs(comp.ref, ro, rl.temperature)
    return ro, {"logp_old": logp_old.cpu(), "logp_ref": logp_ref.cpu(), "entropy": entropy.cpu()}


def compute_advantages(rewards: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, kl_coef: float,
                       k: int, negatives: list[str] | None = None,
                       diversity_coef: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages [N], penalised rewards [N], kl [N]); ``R' = R - kl_coef * KL - diversity_coef * d``
    with ``d`` the ``duplicate_shares`` of the group (``rl.diversity_coef``; 0 leaves it out)."""
    penalised, kl = kl_penalised_rewards(rewards, logp_old, logp_ref, kl_coef)
    if diversity_coef and negatives is not None:
        penalised = penalised - diversity_coef * duplicate_shares(negatives, k)
    return rloo_advantages(penalised, k), penalised, kl


def update(policy, optimizer, ro: Rollout, advantages: torch.Tensor, logp_old: torch.Tensor, params: Params) -> dict:
    """One RLOO step, or ``ppo_epochs`` PPO-clip steps, on the whole batch; returns loss statistics."""
    rl = params.rl
    device = next(policy.parameters()).device
    adv, old = advantages.to(device), logp_old.to(device)
    stats: dict[str, float] = {}
    for _ in range(rl.ppo_epochs if rl.algo == "ppo" else 1):
        logp, entropy = sequence_logprobs(policy, ro, rl.temperature)
        loss, extra = policy_loss(rl.algo, logp, adv, old, rl.clip_range)
        if rl.entropy_coef:  # entropy bonus: -entropy_coef * mean per-token entropy, against early collapse
            loss = loss - rl.entropy_coef * entropy.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), rl.max_grad_norm)
        optimizer.step()
        stats = {"loss": loss.item(), "grad_norm": float(grad_norm), **extra}
    return stats


# --- calibration -----------------------------------------------------------------------------------


def calibrate_rewards(accelerator, comp: Components, params: Params, prompts: list[str]) -> tuple[torch.Tensor, TermStats]:
    """Inception marginal and term statistics from SFT samples: ``k`` per prompt sharing one seed."""
    from negopt.diffusion import generate_images
    from negopt.sharding import map_sharded

    k = params.rl.k
    rng = np.random.default_rng([params.base.seed, 2**31])  # a stream no training step uses
    pick = rng.choice(len(prompts), size=min(params.rl.calibration_prompts, len(prompts)), replace=False)
    group_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    ro, _ = rollout(comp, params, [prompts[i] for i in pick], int(rng.integers(0, 2**31 - 1)))
    chosen = [prompts[i] for i in pick for _ in range(k)]  # prompt-major, like the rollout
    seeds = [s for s in group_seeds for _ in range(k)]
    images: dict[int, torch.Tensor] = {}

    mb = params.rl.image_batch_size

    def probs(idx: list[int]) -> dict[str, torch.Tensor]:
        out = []
        for j in range(0, len(idx), mb):  # the same micro-batches as score_triples, for any process count
            part = idx[j:j + mb]
            imgs = generate_images(comp.pipe, [chosen[i] for i in part], [ro.negatives[i] for i in part],
                                   [seeds[i] for i in part], params.active, batch_size=mb)
            images.update({i: img for i, img in zip(part, imgs, strict=True)})
            out.append(comp.scorer.inception_probs(imgs).float().cpu())
        return {"probs": torch.cat(out)}

    all_probs = map_sharded(accelerator, len(chosen), probs, granularity=mb)["probs"]

    def terms_for(marginal: torch.Tensor) -> dict[str, torch.Tensor]:
        def work(idx: list[int]) -> dict[str, torch.Tensor]:
            parts = []
            for j in range(0, len(idx), mb):
                part = idx[j:j + mb]
                imgs = torch.stack([images[i] for i in part])
                t = comp.scorer.reward_terms(imgs, [chosen[i] for i in part], marginal=marginal,
                                             clip=params.rl.clip_term)
                parts.append({name: v.float().cpu() for name, v in t.items()})
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

        return map_sharded(accelerator, len(chosen), work, granularity=mb)

    return calibrate(all_probs, terms_for, group_size=k, norm=params.rl.reward_norm, floor=params.rl.scale_floor,
                     weights=params.rl.reward.model_dump())


# --- checkpoints ---------------------------------------------------------------------------------


def fingerprint(params: Params, sft_dir: str) -> str:
    """Hash of what makes a checkpoint reusable: RL settings that shape training and the SFT weights.

    Step counts, checkpoint interval, evaluation size and health bounds are left out: raising rl.steps resumes.
    """
    rl = params.rl.model_dump(exclude={"steps", "checkpoint_every", "eval_prompts", "eval_seed", "health"})
    settings = {"rl": rl, "seed": params.base.seed, "profile": params.active.model_dump(),
                "task_prefix": params.sft.task_prefix, "max_source_length": params.sft.max_source_length}
    return run_fingerprint(settings, file_chunks(sorted(Path(sft_dir).glob("*.safetensors"))))


def save_checkpoint(ckpt_dir: Path, policy, optimizer, state: RlState, fp: str) -> None:
    """policy.safetensors, optimizer.pt, tensors.safetensors (marginal, torch RNG), state.json."""
    with atomic_dir(ckpt_dir) as tmp:
        save_model(policy, str(tmp / "policy.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"marginal": state.marginal.contiguous(), "torch_rng": torch.get_rng_state()},
                  str(tmp / "tensors.safetensors"))
        np_state = np.random.get_state()
        meta = {"step": state.step, "fingerprint": fp, "stats": state.stats.state_dict(), "seconds": state.seconds,
                "python_rng": random.getstate(), "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
        (tmp / "state.json").write_text(json.dumps(meta))


def load_checkpoint(ckpt_dir: Path, policy, optimizer, fp: str, remove_stale: bool = True) -> RlState | None:
    """Restore a checkpoint of the same run (same fingerprint); drop one of a different run.

    Only one process may remove a stale checkpoint (``remove_stale``); the others just ignore it.
    """
    meta_path = ckpt_dir / "state.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta["fingerprint"] != fp:
        if remove_stale:
            print(f"rl: checkpoint in {ckpt_dir} is from other settings or SFT weights; starting afresh")
            shutil.rmtree(ckpt_dir)
        return None
    load_model(policy, str(ckpt_dir / "policy.safetensors"), device=str(next(policy.parameters()).device))
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
    tensors = load_file(str(ckpt_dir / "tensors.safetensors"))
    torch.set_rng_state(tensors["torch_rng"])
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_rng = meta["numpy_rng"]
    np.random.set_state((np_rng[0], np.array(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    stats = TermStats()
    stats.load_state_dict(meta["stats"])
    return RlState(step=int(meta["step"]), stats=stats, marginal=tensors["marginal"], seconds=meta["seconds"])


def truncate_live(live_dir: str | Path, step: int) -> None:
    """Drop dvclive rows logged at or after ``step`` (a run stopped after its last checkpoint)."""
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) < step]
        tsv.write_text("\n".join(kept) + "\n")


# --- the loop ------------------------------------------------------------------------------------


def step_logs(rewards: dict[str, torch.Tensor], penalised, kl, extra: dict, ro: Rollout, upd: dict) -> dict[str, float]:
    """Per-step scalars for dvclive: reward and each term (raw and z), KL, entropy, negative length."""
    logs = {"reward": rewards["reward"].mean().item(), "reward_abs_max": rewards["reward"].abs().max().item(),
            "reward_kl": penalised.mean().item(), "kl": kl.mean().item(),
            "entropy": extra["entropy"].mean().item(), "negative_tokens": ro.gen_mask.sum(1).float().mean().item(),
            "negative_chars": float(np.mean([len(n) for n in ro.negatives])),
            "distinct_negatives": len(set(ro.negatives)) / len(ro.negatives)}
    for t in TERMS:
        logs[f"{t}"] = rewards[f"z/{t}"].mean().item()
        logs[f"{t}_raw"] = rewards[f"raw/{t}"].mean().item()
    return logs | upd


def run_rl(params: Params, comp: Components, train_prompts: list[str], accelerator=None, live=None,
           stop_after: int | None = None) -> RlState:
    """Train ``comp.policy`` in place up to ``rl.steps`` (or ``stop_after`` steps, to test resume).

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
    state = load_checkpoint(ckpt_dir, comp.policy, optimizer, fp, remove_stale=main)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # no rank may start writing before all have read
    if state is None:
        marginal, stats = calibrate_rewards(accelerator, comp, params, train_prompts)
        state = RlState(step=0, stats=stats, marginal=marginal)
    elif main:
        print(f"rl: resuming from step {state.step} ({ckpt_dir})")
    if live is not None and main:
        truncate_live(live.dir, state.step)
        live.step = state.step
    weights = params.rl.reward.model_dump()
    last = rl.steps if stop_after is None else min(rl.steps, stop_after)
    bar = tqdm(range(state.step, last), desc="rl", unit="step", disable=not main)
    for step in bar:
        prompts, image_seeds, sample_seed = step_plan(params.base.seed, step, train_prompts, rl.batch_prompts)
        t0 = time.perf_counter()
        ro, extra = rollout(comp, params, prompts, sample_seed)
        t1 = time.perf_counter()
        reward_fn = weighted_sum_reward(comp.scorer, weights, state.stats, state.marginal, rl.clip_term)
        rep = [p for p in prompts for _ in range(rl.k)]  # prompt-major, like the rollout
        seeds = [s for s in image_seeds for _ in range(rl.k)]  # one seed shared by a prompt's k samples
        rewards = score_triples(accelerator, comp.pipe, params.active, reward_fn, rep, ro.negatives, seeds,
                                rl.image_batch_size)
        t2 = time.perf_counter()
        adv, penalised, kl = compute_advantages(rewards["reward"], extra["logp_old"], extra["logp_ref"], rl.kl_coef, rl.k,
                                                ro.negatives, rl.diversity_coef)
        upd = update(comp.policy, optimizer, ro, adv, extra["logp_old"], params)
        if rl.reward_stats == "running":
            state.stats.update({t: rewards[f"raw/{t}"] for t in TERMS}, group_size=rl.k)
        t3 = time.perf_counter()
        for name, dt in (("sample", t1 - t0), ("images", t2 - t1), ("update", t3 - t2)):
            state.seconds[name] += dt
        state.step = step + 1
        logs = step_logs(rewards, penalised, kl, extra, ro, upd)
        bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs['kl']:.2f}")
        if live is not None and main:
            for name, value in logs.items():
                live.log_metric(f"train/{name}", value)
            live.next_step()
        if state.step % rl.checkpoint_every == 0 or state.step == last:
            if main:
                save_checkpoint(ckpt_dir, comp.policy, optimizer, state, fp)
            if accelerator is not None:
                accelerator.wait_for_everyone()
    return state
