"""The ``best_of_n`` baseline: test-time search with the SFT model and the RL reward, no training.

What a user without RL could do by spending compute at test time: for each prompt, sample ``n``
negatives from the SFT model (the policy's sampler, ``sampling.*``, as RL's rollouts), render each on one
**selection seed** per prompt (shared by its ``n``
candidates, so they differ only in the negative, as in an RL group; never an evaluation seed), score
them with the RL image reward and keep the best; ``generate`` then renders the kept negative on the
evaluation seeds like every other method.

The reward is the RL stage's (``reward.*``): the term statistics and Inception marginal the rl stage fixed at
its start, read from ``paths.rl`` (``negopt.reward.calibration.load_calibration``) when they were calibrated
from these SFT weights, prompts and settings (``calibration_key``), else calibrated here by the same code
(``calibrate_rewards``, deterministic from ``base.seed``: the same numbers). The KL-to-SFT penalty of RL's
reward is left out: it keeps a *trained* policy near SFT, while every candidate here is an SFT sample already.

Cost, reported beside the table (metrics/generate.json): calibration images + ``n`` x prompts selection
images, on top of the evaluation images every method renders. The calibration counts whether it was
rendered here or read from the rl stage (``calibration_reused``): the method needs one either way.
"""

from __future__ import annotations

import time

import torch

from negopt.compare.seeds import image_seed
from negopt.core.params import Params


def selection_seeds(seed: int, num_prompts: int, eval_seeds: list[list[int]]) -> list[int]:
    """One selection seed per prompt from ``generate.best_of_n.selection_seed``; refuses any evaluation seed."""
    seeds = [image_seed(seed, i, 0) for i in range(num_prompts)]
    clash = {s for row in eval_seeds for s in row} & set(seeds)
    if clash:
        raise ValueError(f"generate.best_of_n.selection_seed={seed} gives evaluation seed(s) {sorted(clash)[:3]}: "
                         "pick another selection_seed")
    return seeds


def pick_best(rewards: torch.Tensor, n: int) -> list[int]:
    """rewards ``[P * n]`` prompt-major -> for each prompt the index (into the flat list) of its best
    candidate; the first one on ties."""
    grid = rewards.reshape(-1, n)  # [P, n]
    return (torch.arange(len(grid)) * n + grid.argmax(dim=1)).tolist()


def best_of_n_negatives(params: Params, prompts: list[str], eval_seeds: list[list[int]], pipe,
                        device: torch.device) -> tuple[list[str], dict]:
    """The kept negative per prompt and the search's report (n, images it cost, rewards, seconds)."""
    from negopt.data.splits import read_split
    from negopt.models.loader import load_policy, load_scorer
    from negopt.policy.decode import format_sources, saved_retrieval
    from negopt.policy.sampling import sample_rollout
    from negopt.reward.calibration import calibrate_rewards, calibration_key, load_calibration
    from negopt.reward.terms import models_needed
    from negopt.reward.weighted import score_triples, weighted_sum_reward

    cfg, reward, sampling, sft = params.generate.best_of_n, params.reward, params.sampling, params.sft
    weights = reward.weights.scored()
    start = time.perf_counter()
    policy, tokenizer = load_policy(params.paths.sft, device)
    # the RL stage's scorer: a preference model only when its reward weight is non-zero
    scorer = load_scorer(params.active, device, preference=models_needed(weights))
    # the RL stage's calibration prompts: the train split's distinct prompts, in file order
    train = list(dict.fromkeys(read_split(params.paths.clean, "train", ("prompt",)).prompt.tolist()))
    saved = load_calibration(params.paths.rl, calibration_key(params, device))
    marginal, stats = saved if saved is not None else calibrate_rewards(
        None, params, train, policy=policy, tokenizer=tokenizer, sft_dir=params.paths.sft, pipe=pipe, scorer=scorer)
    reward_fn = weighted_sum_reward(scorer, weights, stats, marginal)

    sources = format_sources(prompts, sft.task_prefix, saved_retrieval(params.paths.sft))
    ro = sample_rollout(policy, tokenizer, sources, cfg.n, sampling.temperature, sampling.top_p,
                        sampling.max_new_tokens, sft.max_source_length, cfg.selection_seed)
    seeds = selection_seeds(cfg.selection_seed, len(prompts), eval_seeds)
    rewards = score_triples(None, pipe, params.active, reward_fn, [p for p in prompts for _ in range(cfg.n)],
                            ro.negatives, [s for s in seeds for _ in range(cfg.n)], reward.image_batch_size)["reward"]
    best = pick_best(rewards, cfg.n)
    report = {
        "n": cfg.n,
        "selection_seed": cfg.selection_seed,
        "calibration_images": min(reward.calibration.prompts, len(train)) * reward.calibration.samples_per_prompt,
        "calibration_reused": saved is not None,
        "selection_images": len(prompts) * cfg.n,
        "reward_best_mean": float(rewards[best].mean()),
        "reward_candidates_mean": float(rewards.mean()),
        "distinct_kept": len({ro.negatives[i] for i in best}),
        "seconds": round(time.perf_counter() - start, 1),
    }
    report["search_images"] = report["calibration_images"] + report["selection_images"]
    return [ro.negatives[i] for i in best], report
