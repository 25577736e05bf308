"""SFT vs RL on held-out test prompts: same prompts, same diffusion seeds, greedy decoding.

The comparison is *paired*: each test prompt gets ``rl.eval_seeds_per_prompt`` fixed seeds, used for
both models' images, so ``gain_i = mean_seeds R_rl(i) - mean_seeds R_sft(i)`` removes the seeds' effect
(which dominates a single image's reward). ``reward_test_gain_se`` is the standard error of the mean
of those per-prompt differences (prompts are the independent units; seeds only average noise out). Both models are
scored with one reward function (the same term statistics and Inception marginal).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from negopt.core.params import Params
from negopt.policy.decode import decode_negatives, format_sources, saved_retrieval
from negopt.policy.sampling import sample_rollout, sequence_logprobs
from negopt.reward.weighted import RewardFn, score_triples
from negopt.rl.advantages import mean_and_se


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


def weights_version(model) -> tuple[int, ...]:
    """A key that changes whenever the model's weights may have: its identity and every parameter's version
    counter, which torch bumps on each in-place write (optimizer steps, ``load_state_dict``)."""
    return (id(model), *(p._version for p in model.parameters()))


class ValDecode:
    """The deployed decode (``greedy_negatives``) of val prompts, at most once per prompt and weights.

    A selection check reads the decode twice, for the diversity share of its prompts and for the reward plan's
    (a subset of them when val has no more prompts than ``rl.eval_prompts``): the second read is free.
    ``__call__(model, prompts)`` decodes only the prompts this model's current weights have not decoded yet.
    """

    def __init__(self, tokenizer, params: Params) -> None:
        self.tokenizer, self.params = tokenizer, params
        self.key: tuple[int, ...] | None = None
        self.negatives: dict[str, str] = {}
        self.decoded = 0  # prompts decoded, over all calls

    def __call__(self, model, prompts: list[str]) -> list[str]:
        key = weights_version(model)
        if key != self.key:
            self.key, self.negatives = key, {}
        missing = [p for p in dict.fromkeys(prompts) if p not in self.negatives]
        if missing:
            self.negatives |= dict(zip(missing, greedy_negatives(model, self.tokenizer, missing, self.params), strict=True))
            self.decoded += len(missing)
        return [self.negatives[p] for p in prompts]


class ValRewardGain:
    """Paired val reward gain of a policy's deployed decode over SFT's: checkpoint selection by reward.

    Plan: ``rl.select_reward_prompts`` val prompts (a seeded draw) x ``rl.select_reward_seeds`` diffusion seeds,
    fixed for the run. SFT's images are rendered once (``bind``, after calibration); at a step, a prompt whose
    deployed negative equals SFT's has the same images, so its difference is exactly 0 and only the changed
    prompts are rendered. ``__call__(model) -> (gain, se)``: the mean and standard error over prompts of the
    per-prompt mean difference, as ``paired_summary`` on the test.
    """

    def __init__(self, accelerator, pipe, tokenizer, sft_model, val_prompts: list[str], params: Params,
                 decode: ValDecode | None = None) -> None:
        rl = params.rl
        self.accelerator, self.pipe, self.tokenizer, self.params = accelerator, pipe, tokenizer, params
        self.decode = decode or ValDecode(tokenizer, params)  # shared with the diversity share: one decode a check
        self.prompts, self.seeds = eval_plan(val_prompts, rl.select_reward_prompts, rl.eval_seed, rl.select_reward_seeds)
        self.sft_negatives = self.decode(sft_model, self.prompts)
        self.reward_fn: RewardFn | None = None
        self.sft_rewards: torch.Tensor | None = None  # [prompt, seed]
        self.images_rendered = 0
        self.image_seconds = 0.0  # rendering + scoring, which the loop's anatomy counts with the training images

    def rewards(self, idx: list[int], negatives: list[str]) -> torch.Tensor:
        """[len(idx), seeds] rewards of the plan's prompts ``idx`` with ``negatives`` (one per index)."""
        s = len(self.seeds[0])
        flat_p = [self.prompts[i] for i in idx for _ in range(s)]
        flat_n = [n for n in negatives for _ in range(s)]
        flat_s = [x for i in idx for x in self.seeds[i]]
        start = time.perf_counter()
        scores = score_triples(self.accelerator, self.pipe, self.params.active, self.reward_fn, flat_p, flat_n, flat_s,
                               self.params.rl.image_batch_size)
        self.images_rendered += len(flat_p)
        self.image_seconds += time.perf_counter() - start
        return scores["reward"].double().cpu().reshape(len(idx), s)

    def bind(self, reward_fn: RewardFn) -> None:
        """Fix the reward (the calibrated one, frozen for the run) and render SFT's plan."""
        self.reward_fn = reward_fn
        self.sft_rewards = self.rewards(list(range(len(self.prompts))), self.sft_negatives)

    def __call__(self, model) -> tuple[float, float]:
        if self.sft_rewards is None:
            raise RuntimeError("ValRewardGain: bind(reward_fn) before scoring a step")
        negatives = self.decode(model, self.prompts)
        changed = [i for i, (a, b) in enumerate(zip(negatives, self.sft_negatives, strict=True)) if a != b]
        diff = torch.zeros(len(self.prompts), dtype=torch.float64)
        if changed:
            diff[changed] = (self.rewards(changed, [negatives[i] for i in changed]).mean(1)
                             - self.sft_rewards[changed].mean(1))
        return mean_and_se(diff)


@torch.no_grad()
def kl_to_sft(rl_model, sft_model, tokenizer, prompts: list[str], params: Params, batch: int = 64) -> float:
    """``KL(pi_rl || pi_sft)`` on ``prompts``: mean of ``log pi_rl(y|x) - log pi_sft(y|x)`` over ``rl.k``
    negatives sampled from RL per prompt (the k1 estimator the training reward uses, nats per negative)."""
    rl, sft = params.rl, params.sft
    kls = []
    for i in range(0, len(prompts), batch):
        sources = format_sources(prompts[i:i + batch], sft.task_prefix, saved_retrieval(params.paths.sft))
        ro = sample_rollout(rl_model, tokenizer, sources, rl.k, rl.temperature, rl.top_p, rl.max_new_tokens,
                            sft.max_source_length, seed=params.rl.eval_seed + i)
        # both teacher-forced (not the rollout's own log-probs): the same model's KL is then exactly 0
        kls.append(sequence_logprobs(rl_model, ro, rl.temperature)[0] - sequence_logprobs(sft_model, ro, rl.temperature)[0])
    return torch.cat(kls).mean().item()


def evaluate_rl(accelerator, sft_model, rl_model, tokenizer, pipe, reward_fn: RewardFn, test_prompts: list[str],
                params: Params, n_examples: int = 5) -> tuple[dict[str, float], list[dict[str, str]]]:
    """Score greedy SFT and RL negatives on the test plan; returns (metrics, examples).

    metrics: the ``paired_summary`` keys, ``<term>_test_{sft,rl}`` (z units, the reward's terms),
    ``<term>_raw_test_{sft,rl}``, ``distinct_negatives_{sft,rl}``, ``negative_chars_{sft,rl}``, ``n_test``,
    ``reward_test_finite`` (share of finite image rewards), ``z_test_abs_max`` (largest ``|z|`` of a weighted
    term over both models' images), ``kl_test`` (``kl_to_sft`` on the test prompts).
    """
    prompts, seeds = eval_plan(test_prompts, params.rl.eval_prompts, params.rl.eval_seed,
                               params.rl.eval_seeds_per_prompt)
    neg_sft = greedy_negatives(sft_model, tokenizer, prompts, params)
    neg_rl = greedy_negatives(rl_model, tokenizer, prompts, params)
    n, s = len(prompts), params.rl.eval_seeds_per_prompt
    flat_p = [p for p in prompts for _ in range(s)]
    flat_s = [x for row in seeds for x in row]
    flat_sft, flat_rl = [x for x in neg_sft for _ in range(s)], [x for x in neg_rl for _ in range(s)]
    # one sharded job for both models: fewer pipeline calls, same seeds for the pair; a prompt whose RL negative
    # is SFT's renders once (score_triples), its difference exactly 0
    triples = (flat_p + flat_p, flat_sft + flat_rl, flat_s + flat_s)
    scores = score_triples(accelerator, pipe, params.active, reward_fn, *triples, params.rl.image_batch_size)
    per_prompt = scores["reward"].reshape(2, n, s).mean(dim=2)  # [model, prompt]: the unit of the paired test
    metrics = paired_summary(per_prompt[0], per_prompt[1])
    metrics["power"] = gain_se_by_seeds(scores["reward"].reshape(2, n, s)[1] - scores["reward"].reshape(2, n, s)[0])
    weights = params.rl.reward.scored()  # {term: weight}, every scored term
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
    examples = [{"prompt": p, "sft": a, "rl": b} for p, a, b in zip(prompts, neg_sft, neg_rl, strict=True)][:n_examples]
    return metrics, examples
