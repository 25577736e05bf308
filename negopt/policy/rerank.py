"""Retrieve-and-rerank decode: the model's negative or a neighbour's, chosen per prompt by fitted weights.

On the shared real pairs users copy negatives between similar prompts, so the negatives of a prompt's
nearest training prompts often contain one closer to its own than any the tiny model writes (the best
of them beats the nearest's, which beats the model's); on the built-in sample the model's own negative
is better (docs/EXPERIMENTS.md, "Why retrieve-and-rerank"). So the decode scores each candidate -- the model's
negative(s) and the distinct negatives of the prompt's ``neighbours`` nearest training prompts -- by

    logprob x mean token log-prob under the model  (the policy's own preference: RL moves it)
  + agreement x consensus: ROUGE-L to each neighbour's negative, weighted by cosine ** sharpness
  + similarity x the cosine of the neighbour it came from (0 for the model's own)
  + own (a bonus for the model's own negative)

and returns the best. The sft stage fits the weights on val by ROUGE-L over a fixed grid
(:func:`fit`) and keeps them only when they beat the model's own negative by ``sft.rerank.min_z``
paired SE there, so a dataset where the model already wins keeps the plain decode. The weights are
saved with the model (``negopt.json``) beside the retrieval index, and every consumer's decode
(negopt/policy/decode.py) applies them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from negopt.core.distinct import distinct_rows
from negopt.core.stats import mean_and_se

# The fitted grid. Scores are compared within a prompt only, so one weight may stay at a fixed scale;
# ``own`` spans "never the model" (-1e9) to "always the model" (1e9, the plain decode).
ALWAYS_OWN = 1e9
GRID = {"logprob": (0.0, 0.05, 0.1, 0.2, 0.5, 1.0), "agreement": (0.0, 0.5, 1.0, 2.0, 4.0),
        "similarity": (0.0, 0.5, 1.0, 2.0, 4.0), "own": (-ALWAYS_OWN, -0.5, -0.2, 0.0, 0.2, 0.5, ALWAYS_OWN),
        "sharpness": (0.0, 1.0, 2.0, 4.0, 8.0)}


@dataclass(frozen=True)
class RerankWeights:
    """A fitted rerank (see the module docstring); ``neighbours`` = how many training neighbours are candidates."""

    neighbours: int
    logprob: float
    agreement: float
    similarity: float
    own: float
    sharpness: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RerankWeights:
        return cls(**d)


def rouge_tokens(texts: Sequence[str]) -> list[list[str]]:
    """rouge_score's tokens (lower-cased, Porter-stemmed words), so ROUGE-L here is the one sft.json reports."""
    return [list(_rouge_tokens(t)) for t in texts]


@functools.lru_cache(maxsize=1 << 16)
def _rouge_tokens(text: str) -> tuple[str, ...]:
    """One text's tokens, cached: a decode's candidates are mostly its neighbours' training negatives, the same
    strings at every selection check, and Porter stemming them again was most of a reranked val decode on the
    real pairs (docs/EXPERIMENTS.md, "How long the default run takes")."""
    return tuple(_rouge_tokenizer().tokenize(text))


@functools.cache
def _rouge_tokenizer():
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=True)


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (Hyyro's bit-parallel form: one big-int step per token of b)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, t in enumerate(a):
        masks[t] = masks.get(t, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for t in b:
        u = v & masks.get(t, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_tokens(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure of two token lists (symmetric)."""
    n = _lcs(a, b)
    return 0.0 if n == 0 else 2 * n / (len(a) + len(b))


@functools.lru_cache(maxsize=1 << 17)
def _rouge_l(a: str, b: str) -> float:
    """:func:`rouge_l_tokens` of two texts, cached: between neighbours' negatives it is the same at every check."""
    return rouge_l_tokens(list(_rouge_tokens(a)), list(_rouge_tokens(b)))


@dataclass
class Candidates:
    """Per prompt: candidate negatives and their features, padded to ``C`` columns (``valid`` marks real ones).

    ``own`` marks the model's negatives; ``sim`` is the source neighbour's cosine (0 for own); ``logprob``
    the mean token log-prob under the model; ``agree[i, c, j]`` ROUGE-L of candidate c to neighbour j's
    negative, ``cos[i, j]`` neighbour j's cosine.
    """

    texts: list[list[str]]
    own: np.ndarray
    sim: np.ndarray
    logprob: np.ndarray
    agree: np.ndarray
    cos: np.ndarray
    valid: np.ndarray


def candidates(own: Sequence[Sequence[str]], neighbour_negatives: Sequence[Sequence[str]],
               neighbour_cos: np.ndarray) -> Candidates:
    """Candidate table: each prompt's own negatives, then its neighbours' distinct negatives (best first)."""
    n, m = len(own), neighbour_cos.shape[1]
    texts, srcs = [], []
    for mine, theirs, cos in zip(own, neighbour_negatives, neighbour_cos, strict=True):
        # the model's own are kept as given (num per prompt, repeats and all) so choose() can always return num
        row, sim = list(mine), [0.0] * len(mine)
        for t, c in zip(theirs, cos, strict=True):
            if t not in row:
                row.append(t)
                sim.append(float(c))
        texts.append(row)
        srcs.append(sim)
    n_own = [len(mine) for mine in own]
    width = max(len(r) for r in texts)
    shape = (n, width)
    valid, is_own, sim = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape)
    agree = np.zeros((n, width, m))
    for i, (row, s) in enumerate(zip(texts, srcs, strict=True)):
        valid[i, :len(row)] = True
        is_own[i, :n_own[i]] = True
        sim[i, :len(row)] = s
        agree[i, :len(row)] = [[_rouge_l(t, r) for r in neighbour_negatives[i]] for t in row]
    return Candidates(texts, is_own, sim, np.zeros(shape), agree, np.asarray(neighbour_cos, float), valid)


@torch.no_grad()
def mean_logprobs(model, tokenizer, sources: Sequence[str], targets: Sequence[str], max_source_length: int,
                  max_target_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean token log-prob of each ``target`` given its ``source`` under ``model`` (teacher-forced, EOS included).

    A batch encodes each of its distinct sources once (a prompt's candidates are consecutive rows, ~9 per
    prompt) and runs the decoder alone on the rest; no loss is computed (the log-softmax below is the one needed).
    """
    from transformers.modeling_outputs import BaseModelOutput

    device = getattr(model, "device", torch.device("cpu"))
    out = []
    for i in range(0, len(sources), batch_size):
        batch = list(sources[i:i + batch_size])
        rows, inverse = distinct_rows(batch)
        inverse = inverse.to(device)
        enc = tokenizer([batch[r] for r in rows], max_length=max_source_length, truncation=True, padding=True,
                        return_tensors="pt").to(device)
        hidden = model.get_encoder()(**enc).last_hidden_state
        labels = tokenizer(text_target=list(targets[i:i + batch_size]), max_length=max_target_length,
                           truncation=True, padding=True, return_tensors="pt")["input_ids"].to(device)
        mask = labels != tokenizer.pad_token_id
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[inverse]),
                       attention_mask=enc["attention_mask"][inverse],
                       decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels)).logits
        lp = logits.float().log_softmax(-1).gather(-1, labels[..., None])[..., 0]
        out.append(((lp * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def scores(c: Candidates, w: RerankWeights) -> np.ndarray:
    """``[n, C]`` scores (``-inf`` at padding)."""
    weight = np.clip(c.cos, 0.0, None) ** w.sharpness  # 0 ** 0 = 1: sharpness 0 weighs neighbours equally
    consensus = (c.agree * weight[:, None, :]).sum(-1) / np.maximum(weight.sum(-1, keepdims=True), 1e-12)
    s = w.logprob * c.logprob + w.agreement * consensus + w.similarity * c.sim + np.where(c.own, w.own, 0.0)
    return np.where(c.valid, s, -np.inf)


def choose(c: Candidates, w: RerankWeights, num: int = 1) -> list[list[str]]:
    """The ``num`` best candidates per prompt (ties: the earlier column, i.e. the model's own first)."""
    order = np.argsort(-scores(c, w), axis=1, kind="stable")[:, :num]
    return [[c.texts[i][j] for j in row if c.valid[i, j]] for i, row in enumerate(order)]


def fit(c: Candidates, rouge: np.ndarray, neighbours: int, min_z: float) -> tuple[RerankWeights | None, dict]:
    """The grid's weights of the largest mean val ROUGE-L (``rouge[i, c]``: candidate c's against prompt i's own
    negative; ties: the earlier grid point), kept only if they beat the model's own negative by ``min_z`` paired SE.

    Returns ``(weights or None, report)``; the report holds the val ROUGE-L of both and the paired gain's z.
    """
    own = rouge[:, 0]  # column 0 is the model's (first) own negative
    best, best_rows, best_w = -np.inf, own, None
    for values in itertools.product(*GRID.values()):
        w = RerankWeights(neighbours, **dict(zip(GRID, values, strict=True)))
        picked = rouge[np.arange(len(rouge)), np.argmax(scores(c, w), axis=1)]
        # ties: the earlier grid point (near-ties broken toward a larger log-prob weight did worse on the real
        # pairs' test: docs/EXPERIMENTS.md, "Retrieve and rerank")
        if picked.mean() > best + 1e-12:
            best, best_rows, best_w = picked.mean(), picked, w
    gain, se = mean_and_se(best_rows - own)
    z = gain / se if se > 0 else (float("inf") if gain > 0 else 0.0)
    keep = bool(gain > 0 and z >= min_z)  # a fit that only ties the model's own keeps the plain decode
    report = {"rerank_val_rougeL": float(best), "rerank_val_rougeL_own": float(own.mean()),
              "rerank_val_gain_z": z, "rerank": keep}
    return (best_w if keep else None), report


def table(model, tokenizer, prompts: Sequence[str], sources: Sequence[str], own: Sequence[Sequence[str]], index,
          neighbours: int, max_source_length: int, max_target_length: int, logprob: bool = True) -> Candidates:
    """:func:`candidates` for ``prompts`` from the retrieval ``index``, with each candidate's log-prob under
    ``model`` given the prompt's ``source`` (skipped when ``logprob`` is false: weights that ignore it)."""
    idx, cos = index.nearest(list(prompts), neighbours)
    c = candidates(own, [[index.negatives[j] for j in row] for row in idx], cos)
    if logprob:
        rows, cols = np.nonzero(c.valid)
        lp = mean_logprobs(model, tokenizer, [sources[i] for i in rows],
                           [c.texts[i][j] for i, j in zip(rows, cols, strict=True)], max_source_length, max_target_length)
        c.logprob[rows, cols] = lp
    return c
