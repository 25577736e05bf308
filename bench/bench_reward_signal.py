"""How much of each reward term can a negative prompt move? The measurement behind scaling the reward's terms
by their within-group spread (``negopt.reward.term_stats``; docs/EXPERIMENTS.md).

Scores ``--negatives`` distinct SFT negatives (nucleus samples for random train prompts) on the same
``--prompts`` x ``--seeds`` (prompt, seed) contexts, then splits each raw term's [negative, context]
table the two-way-ANOVA way:

- noise: the residual after removing the negative and context means, the within-context variation
  that no negative controls (it is what a seed does differently to each negative);
- negative effect: the spread of the negatives' means, less the noise that averaging leaves in them;
- SNR = effect / noise: how learnable the term is for RL (a policy picks negatives, not seeds);
- context: the spread of the context means (prompt and seed), which a global z-score divides by.

Run from the repository root after `dvc repro sft` (needs models/tiny, models/sft, data/clean):
    python bench/bench_reward_signal.py [--negatives 48] [--prompts 12] [--seeds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from negopt.core.params import load_params
from negopt.models.loader import load_policy, load_scorer, load_sd_pipeline
from negopt.policy.decode import format_sources, saved_retrieval
from negopt.policy.sampling import sample_rollout
from negopt.reward.calibration import calibrate_rewards
from negopt.reward.weighted import score_triples, weighted_sum_reward


def decompose(table: np.ndarray) -> dict[str, float]:
    """[negatives, contexts] -> noise, negative effect (both std), SNR and context std."""
    n_neg, n_ctx = table.shape
    neg_means, ctx_means = table.mean(1), table.mean(0)
    resid = table - neg_means[:, None] - ctx_means[None, :] + table.mean()
    noise = float(np.sqrt((resid**2).sum() / ((n_neg - 1) * (n_ctx - 1))))
    effect = float(np.sqrt(max(neg_means.var(ddof=1) - noise**2 / n_ctx, 0.0)))
    return {"noise": noise, "effect": effect, "snr": effect / noise, "context": float(ctx_means.std(ddof=1))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--negatives", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = load_params("params.yaml")
    device = torch.device("cpu")
    train = list(dict.fromkeys(pd.read_parquet(f"{params.paths.clean}/train.parquet", columns=["prompt"]).prompt))
    policy, tok = load_policy(params.paths.sft, device)
    pipe, scorer = load_sd_pipeline(params.active, device), load_scorer(params.active, device)
    t0 = time.perf_counter()
    marginal, stats = calibrate_rewards(None, params, train, policy=policy, tokenizer=tok, sft_dir=params.paths.sft,
                                        pipe=pipe, scorer=scorer)

    rng = np.random.default_rng(args.seed)
    sources = [train[i] for i in rng.choice(len(train), 2 * args.negatives, replace=False)]
    s = params.sampling
    inputs = format_sources(sources, params.sft.task_prefix, saved_retrieval(params.paths.sft))
    sampled = sample_rollout(policy, tok, inputs, 1, s.temperature, s.top_p, s.max_new_tokens,
                             params.sft.max_source_length, args.seed).negatives
    negatives = list(dict.fromkeys(sampled))[: args.negatives]
    contexts = [(p, int(s)) for p in (train[i] for i in rng.choice(len(train), args.prompts, replace=False))
                for s in rng.integers(0, 2**31 - 1, args.seeds)]
    prompts = [p for _ in negatives for p, _ in contexts]
    seeds = [s for _ in negatives for _, s in contexts]
    negs = [n for n in negatives for _ in contexts]
    reward_fn = weighted_sum_reward(scorer, params.reward.weights.scored(), stats, marginal)
    out = score_triples(None, pipe, params.active, reward_fn, prompts, negs, seeds, params.reward.image_batch_size)
    seconds = time.perf_counter() - t0

    shape = (len(negatives), len(contexts))
    print(f"{len(negatives)} negatives x {len(contexts)} contexts = {len(prompts)} images in {seconds:.0f} s "
          f"({len(prompts) / seconds:.1f} images/s incl. calibration)")
    print("| term | noise (within context) | negative effect | SNR | context std | global std / within-group std |")
    print("|---|---|---|---|---|---|")
    for t in stats.names:
        d = decompose(out[f"raw/{t}"].reshape(shape).numpy())
        ratio = stats.std(t) / stats.within_std(t)
        print(f"| {t} | {d['noise']:.4g} | {d['effect']:.4g} | {d['snr']:.3f} | {d['context']:.4g} | {ratio:.2f} |")
    d = decompose(out["reward"].reshape(shape).numpy())
    print(f"| total reward (within-group scales) | {d['noise']:.3g} | {d['effect']:.3g} | "
          f"{d['snr']:.3f} | {d['context']:.3g} | |")


if __name__ == "__main__":
    main()
