"""SFT vs RL on held-out test prompts: same prompts, same diffusion seeds, greedy decoding.

The comparison is *paired*: each test prompt gets ``rl.test.seeds_per_prompt`` fixed seeds, used for
both models' images, so ``gain_i = mean_seeds R_rl(i) - mean_seeds R_sft(i)`` removes the seeds' effect
(which dominates a single image's reward). ``reward_test_gain_se`` is the standard error of the mean
of those per-prompt differences (prompts are the independent units; seeds only average noise out). Both models are
scored with one reward function (the same term statistics and Inception marginal).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from negopt.core.params import Params
from negopt.core.prompt_syntax import KNOWN_EMBEDDINGS, syntax_counts
from negopt.core.stats import mean_and_se
from negopt.policy.decode import decode_negatives, format_sources, saved_retrieval
from negopt.policy.sampling import sample_rollout, sequence_logprobs
from negopt.reward.weighted import RewardFn, score_triples


def eval_plan(prompts: list[str], n: int, seed: int, seeds_per_prompt: int = 1) -> tuple[list[str], list[list[int]]]:
    """``n`` distinct test prompts (a seeded draw) and ``seeds_per_prompt`` fixed diffusion seeds each."""
    unique = list(dict.fromkeys(prompts))
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(unique), size=min(n, len(unique)), replace=False).tolist())
    seeds = rng.integers(0, 2**31 - 1, size=(len(pick), seeds_per_prompt)).tolist()
    return [unique[i] for i in pick], seeds


def distinct_share(texts: list[str]) -> float:
    """Share of distinct strings: 1.0 when all differ, 1/n when one string is everywhere."""
    return len(set(texts)) / len(texts) if texts else float("nan")


def paired_summary(r_sft: torch.Tensor, r_rl: torch.Tensor) -> dict[str, float]:
    """Means, standard errors and the paired gain with its standard error (both [n], same order)."""
    m_sft, se_sft = mean_and_se(r_sft)
    m_rl, se_rl = mean_and_se(r_rl)
    gain, gain_se = mean_and_se(r_rl - r_sft)
    return {"reward_test_sft": m_sft, "reward_test_sft_se": se_sft, "reward_test_rl": m_rl,
            "reward_test_rl_se": se_rl, "reward_test_gain": gain, "reward_test_gain_se": gain_se}


def gain_se_by_seeds(diff: torch.Tensor, seeds=(1, 2, 4, 8)) -> dict[str, float]:
    """What the test's standard error would be with other seed counts: the power the plan buys.

    ``diff[p, s]``: RL - SFT reward of prompt ``p`` on seed ``s`` (n prompts, S seeds). With ``w`` the
    mean within-prompt variance of ``diff`` over seeds (ddof 1) and ``v`` the variance of the prompt means
    (ddof 1), the between-prompt variance is ``b = max(v - w / S, 0)`` and, for ``S'`` seeds,
    ``SE(S') = sqrt((b + w / S') / n)``. Also the ``gain / SE(S')`` each count would give at this gain.
    Empty (``{}``) with one seed, where ``w`` cannot be estimated.
    """
    d = diff.detach().double()
    n, s = d.shape
    if s < 2 or n < 2:
        return {}
    w = d.var(dim=1, unbiased=True).mean().item()
    b = max(d.mean(dim=1).var(unbiased=True).item() - w / s, 0.0)
    gain = d.mean().item()
    out = {"within_prompt_var": w, "between_prompt_var": b}
    for k in seeds:
        se = math.sqrt((b + w / k) / n)
        out[f"gain_se_at_{k}_seeds"] = se
        out[f"gain_over_se_at_{k}_seeds"] = gain / se if se > 0 else float("inf")
    return out


def greedy_negatives(model, tokenizer, prompts: list[str], params: Params) -> list[str]:
    """The deployed decode (``decode`` params), exactly as generate and ``negopt suggest`` use it."""
    return decode_negatives(model, tokenizer, prompts, params.decode, params.sft.task_prefix,
                            params.sft.max_source_length, retrieval=saved_retrieval(params.paths.sft))


@torch.no_grad()
def kl_to_sft(rl_model, sft_model, tokenizer, prompts: list[str], params: Params, batch: int = 64) -> float:
    """``KL(pi_rl || pi_sft)`` on ``prompts``: mean of ``log pi_rl(y|x) - log pi_sft(y|x)`` over ``rl.k``
    negatives sampled from RL per prompt (the k1 estimator the training reward uses, nats per negative)."""
    sampling, sft = params.sampling, params.sft
    kls = []
    for i in range(0, len(prompts), batch):
        sources = format_sources(prompts[i:i + batch], sft.task_prefix, saved_retrieval(params.paths.sft))
        ro = sample_rollout(rl_model, tokenizer, sources, params.rl.k, sampling.temperature, sampling.top_p,
                            sampling.max_new_tokens, sft.max_source_length, seed=params.rl.test.seed + i)
        # both teacher-forced (not the rollout's own log-probs): the same model's KL is then exactly 0
        kls.append(sequence_logprobs(rl_model, ro, sampling.temperature)[0]
                   - sequence_logprobs(sft_model, ro, sampling.temperature)[0])
    return torch.cat(kls).mean().item()


def oracle_summary(scores: dict[str, torch.Tensor], n: int, s: int) -> dict[str, float]:
    """The world oracle's view of the test: SFT's and RL's true quality and RL's paired gain in it (the same
    prompts and seeds as the reward's: beside ``reward_test_gain``, how much of the learned gain is real), and
    each oracle value of both models."""
    per_prompt = scores["oracle/true_quality"].double().reshape(2, n, s).mean(dim=2)
    out = {k.replace("reward_", "oracle_"): v for k, v in paired_summary(per_prompt[0], per_prompt[1]).items()}
    for key in (k.removeprefix("oracle/") for k in scores if k.startswith("oracle/")):
        values = scores[f"oracle/{key}"].double()
        out[f"oracle_{key}_sft"], out[f"oracle_{key}_rl"] = values[: n * s].mean().item(), values[n * s:].mean().item()
    return out


def evaluate_rl(accelerator, sft_model, rl_model, tokenizer, pipe, reward_fn: RewardFn, test_prompts: list[str],
                params: Params, n_examples: int = 5, oracle=None) -> tuple[dict[str, float], list[dict[str, str]]]:
    """Score greedy SFT and RL negatives on the test plan; returns (metrics, examples).

    metrics: the ``paired_summary`` keys, ``<term>_test_{sft,rl}`` (z units, the reward's terms),
    ``<term>_raw_test_{sft,rl}``, ``distinct_negatives_{sft,rl}``, ``negative_chars_{sft,rl}``, ``n_test``,
    ``reward_test_finite`` (share of finite image rewards), ``z_test_abs_max`` (largest ``|z|`` of a weighted
    term over both models' images), ``kl_test`` (``kl_to_sft`` on the test prompts), ``syntax_{sft,rl}`` (how each
    model's negatives are written: ``negopt.core.prompt_syntax.syntax_counts``); with an ``oracle`` (the world
    profile), :func:`oracle_summary`'s keys.
    """
    cfg = params.rl.test
    prompts, seeds = eval_plan(test_prompts, cfg.prompts, cfg.seed, cfg.seeds_per_prompt)
    neg_sft = greedy_negatives(sft_model, tokenizer, prompts, params)
    neg_rl = greedy_negatives(rl_model, tokenizer, prompts, params)
    n, s = len(prompts), cfg.seeds_per_prompt
    flat_p = [p for p in prompts for _ in range(s)]
    flat_s = [x for row in seeds for x in row]
    flat_sft, flat_rl = [x for x in neg_sft for _ in range(s)], [x for x in neg_rl for _ in range(s)]
    # one sharded job for both models: fewer pipeline calls, same seeds for the pair; a prompt whose RL negative
    # is SFT's renders once (score_triples), its difference exactly 0
    triples = (flat_p + flat_p, flat_sft + flat_rl, flat_s + flat_s)
    scores = score_triples(accelerator, pipe, params.active, reward_fn, *triples, params.reward.image_batch_size,
                           oracle)
    per_prompt = scores["reward"].reshape(2, n, s).mean(dim=2)  # [model, prompt]: the unit of the paired test
    metrics = paired_summary(per_prompt[0], per_prompt[1])
    if oracle is not None:
        metrics |= oracle_summary(scores, n, s)
    metrics["power"] = gain_se_by_seeds(scores["reward"].reshape(2, n, s)[1] - scores["reward"].reshape(2, n, s)[0])
    weights = params.reward.weights.scored()  # {term: weight}, every scored term
    for t in weights:
        for kind, suffix in (("z", ""), ("raw", "_raw")):
            metrics[f"{t}{suffix}_test_sft"] = scores[f"{kind}/{t}"][: n * s].mean().item()
            metrics[f"{t}{suffix}_test_rl"] = scores[f"{kind}/{t}"][n * s:].mean().item()
    weighted = [t for t, w in weights.items() if w]
    z_all = torch.stack([scores[f"z/{t}"] for t in weighted]) if weighted else torch.zeros(1)
    metrics |= {"reward_test_finite": torch.isfinite(scores["reward"]).double().mean().item(),
                "z_test_abs_max": z_all.abs().max().item(),
                "kl_test": kl_to_sft(rl_model, sft_model, tokenizer, prompts, params)}
    metrics |= {"distinct_negatives_sft": distinct_share(neg_sft), "distinct_negatives_rl": distinct_share(neg_rl),
                "negative_chars_sft": float(np.mean([len(x) for x in neg_sft])),
                "negative_chars_rl": float(np.mean([len(x) for x in neg_rl])), "n_test": n, "n_test_images": n * s,
                "test_images_rendered": len(set(zip(*triples, strict=True)))}
    names = [*KNOWN_EMBEDDINGS, *params.active.textual_inversions]  # how each model writes: weights, names, length
    metrics |= {"syntax_sft": syntax_counts(neg_sft, names), "syntax_rl": syntax_counts(neg_rl, names)}
    examples = [{"prompt": p, "sft": a, "rl": b} for p, a, b in zip(prompts, neg_sft, neg_rl, strict=True)][:n_examples]
    return metrics, examples
