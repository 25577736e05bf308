"""Stage rl: optimise the SFT policy with RLOO (or PPO) on the reward of generated images.

Reads paths.clean/{train,test}.parquet, the SFT model (paths.sft) and the profile's SD pipeline and
reward models; writes paths.rl (model, tokenizer, model card), metrics/rl.json, dvclive/rl (per-step
curves) and resumable checkpoints under paths.checkpoints/rl. Shards rollouts over processes with
``accelerate launch --multi_gpu --num_processes 2 stages/rl.py``, bit-identical to one process when every
process runs as many torch threads as the one-process run, e.g. ``OMP_NUM_THREADS=1`` for both (on a
machine without GPUs this starts 2 CPU processes on gloo; accelerate's ``--cpu`` alone starts one).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from dvclive import Live

from negopt.core.errors import run_stage
from negopt.core.io import atomic_dir, write_json
from negopt.core.prompt_syntax import unloaded_embeddings, unloaded_warning
from negopt.core.runtime import start_stage
from negopt.data.splits import read_split
from negopt.models.find import require_profile
from negopt.models.loader import load_policy, load_scorer, load_sd_pipeline
from negopt.policy.decode import NegativePromptGenerator, saved_retrieval
from negopt.reward.calibration import calibration_key, save_calibration
from negopt.reward.terms import models_needed, unused_models
from negopt.reward.weighted import weighted_sum_reward
from negopt.rl.card import write_rl_card
from negopt.rl.health import health_checks
from negopt.rl.heldout import evaluate_rl
from negopt.rl.loop import Components, overhead_share, run_rl
from negopt.rl.selection import checkpoint_selector
from negopt.world.oracle import profile_oracle

LIVE_DIR = "dvclive/rl"


def read_prompts(clean_dir: str, split: str) -> list[str]:
    """The split's distinct prompts, in file order."""
    return list(dict.fromkeys(read_split(clean_dir, split, ("prompt",)).prompt.tolist()))


def quiet_libraries() -> None:
    """Long negatives exceed the tiny CLIP tokenizer's 32 tokens; the pipeline's per-call truncation
    warning (listing every padded prompt) would bury the progress bar, so keep library logs at errors."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def main() -> None:
    params = start_stage()
    quiet_libraries()
    weights = params.reward.weights.scored()
    require_profile(params, unused=unused_models(weights))  # a preference model at weight 0 is never loaded
    # cpu=True also without CUDA: under `accelerate launch --multi_gpu` (how accelerate 1.x starts several CPU
    # processes; its `--cpu --num_processes N` starts one) only cpu=True joins the gloo process group.
    accelerator = Accelerator(cpu=params.base.device == "cpu" or not torch.cuda.is_available())
    device = accelerator.device
    train, test = read_prompts(params.paths.clean, "train"), read_prompts(params.paths.clean, "test")
    policy, tokenizer = load_policy(params.paths.sft, device)
    ref, _ = load_policy(params.paths.sft, device)
    comp = Components(policy=policy, ref=ref, tokenizer=tokenizer, pipe=load_sd_pipeline(params.active, device),
                      scorer=load_scorer(params.active, device, preference=models_needed(weights)),
                      sft_dir=params.paths.sft)
    sft_model = copy.deepcopy(ref)  # the reference stays untouched; evaluation reads a copy
    if accelerator.is_main_process:
        print(f"rl: {accelerator.num_processes} process(es), {params.rl.batch_prompts} prompts x k={params.rl.k} "
              f"= {params.rl.batch_prompts * params.rl.k} images per step, {params.rl.steps} steps")

    live = Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False, resume=True) if accelerator.is_main_process else None
    t0 = time.perf_counter()
    oracle = profile_oracle(params)  # the world profile: the truth of every val and test image beside its reward
    selector = checkpoint_selector(params, tokenizer, ref, read_prompts(params.paths.clean, "val"), accelerator,
                                   comp.pipe, oracle)
    state = run_rl(params, comp, train, accelerator=accelerator, live=live, selector=selector)
    train_seconds = time.perf_counter() - t0

    reward_fn = weighted_sum_reward(comp.scorer, weights, state.stats, state.marginal)
    metrics, examples = evaluate_rl(accelerator, sft_model, policy, tokenizer, comp.pipe, reward_fn, test, params,
                                    oracle=oracle)
    checks, warnings = health_checks(metrics, state.stats.report(), weights, params.rl.health)
    unloaded = unloaded_embeddings(metrics["syntax_rl"], params.active.textual_inversions)
    warnings += [w for w in [unloaded_warning("the RL policy's test negatives", unloaded)] if w]
    metrics |= {"calibration": state.stats.report(), **checks, "warnings": warnings, "steps": state.step,
                "attempt": state.attempt, "steps_total": state.steps_before + state.step,
                "train_seconds": round(train_seconds, 1),
                **{f"train_seconds_{k}": round(v, 1) for k, v in state.seconds.items()},
                "train_overhead_share": round(overhead_share(state.seconds), 4),
                "processes": accelerator.num_processes,
                "selection": selector.report() if selector else None,
                "kept_step": selector.kept_step if selector else state.step}
    if not accelerator.is_main_process:
        return
    for e in examples:
        print(f"rl example: {e['prompt']!r}\n    sft: {e['sft']!r}\n    rl:  {e['rl']!r}")
    for w in warnings:
        print(f"rl: WARNING: {w}")
    if selector:
        sel = params.rl.selection
        print(f"rl: deployed weights from step {selector.kept_step} of {state.step}: the val reward's best step among "
              f"those whose negatives kept >= rl.selection.min_ratio = {sel.min_ratio} x SFT's distinct share and "
              f"gained >= rl.selection.min_z = {sel.min_z} SE ({selector.gain.images_rendered} val images)")
    for key in ("reward_test_sft", "reward_test_rl", "reward_test_gain", "reward_test_gain_se", "distinct_negatives_rl",
                "kl_test", "healthy", "kept_step", "oracle_test_gain", "oracle_test_gain_se"):
        if key in metrics:
            live.summary[key] = metrics[key]
    if "oracle_test_gain" in metrics:
        print(f"rl: test gain in the learned reward {metrics['reward_test_gain']:+.4f} +- "
              f"{metrics['reward_test_gain_se']:.4f}; in the oracle's true quality {metrics['oracle_test_gain']:+.4f} +- "
              f"{metrics['oracle_test_gain_se']:.4f} (RL vs SFT, paired over {metrics['n_test']} test prompts)")
    live.end()
    with atomic_dir(params.paths.rl) as tmp:
        NegativePromptGenerator(policy, tokenizer, params.decode, params.sft.task_prefix,
                                params.sft.max_source_length, saved_retrieval(params.paths.sft)).save_pretrained(tmp)
        write_rl_card(tmp, params, metrics, examples, state.seconds)
        # the calibration RL trained with: best_of_n scores with it
        save_calibration(tmp, calibration_key(params, device), state.stats, state.marginal)
    write_json(Path(params.paths.metrics) / "rl.json", metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith(("reward_test", "health", "kl_test"))}, indent=1))


if __name__ == "__main__":
    run_stage(main)
