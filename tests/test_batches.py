"""Batched code tested past one batch: more rows than a batch and a batch size that does not divide them, so a
loop that pairs, excludes or groups rows by the first batch's indices fails here.

Covered elsewhere the same way: score_triples (5 triples in micro-batches of 2, tests/test_rl_wiring.py), the
calibration's micro-batches (12 samples in 5, 5, 2: tests/test_rl_loop.py), generate's batches (tests/
test_generate.py), mean_logprobs (6 rows in 4 and 2: tests/test_rerank.py), the image scorers (tests/
test_metrics.py, test_evaluate.py), shard_indices (tests/test_rl_loop.py).
"""

from __future__ import annotations

import numpy as np
import torch
from helpers import TRAIN_N, TRAIN_P

from negopt.core.sharding import map_micro_batches
from negopt.policy.retrieval import RetrievalIndex

# eight training rows in four near-duplicate groups of two: a row must never retrieve its own pair
PROMPTS = ["a red fox in snow", "a red fox in the snow", "portrait of an old sailor", "portrait of an old sailor, oil",
           "a castle at dusk", "a castle at dusk, fog", "neon city street", "neon city street, rain"]
NEGATIVES = ["blurry", "blurry, lowres", "bad anatomy", "bad anatomy, extra fingers", "lowres", "lowres, noise",
             "text", "text, watermark"]
GROUPS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def test_the_near_duplicate_exclusion_holds_in_every_batch():
    index = RetrievalIndex(PROMPTS, NEGATIVES)
    one, _ = index.nearest(PROMPTS, 3, batch_size=len(PROMPTS), exclude=GROUPS, groups=GROUPS)
    for batch_size in (1, 3, 5):  # 8 rows in batches of 3 and of 5: the last batch is short
        idx, sims = index.nearest(PROMPTS, 3, batch_size=batch_size, exclude=GROUPS, groups=GROUPS)
        assert (idx == one).all(), batch_size
        assert all(GROUPS[j] != GROUPS[i] for i, row in enumerate(idx) for j in row)  # never its own group
        assert np.isfinite(sims).all()
    # without the exclusion each row's best neighbour is itself: the exclusion is what moved them
    itself, _ = index.nearest(PROMPTS, 1, batch_size=3)
    assert itself[:, 0].tolist() == list(range(8))


def test_context_pairs_each_query_with_its_own_neighbours_past_one_batch():
    """Nine queries in batches of 2: each answer is the query's own neighbours (the crafted set: "street" rows
    2 and 3, "cat" rows 1 and 0), whatever batch it falls in."""
    index = RetrievalIndex(TRAIN_P, TRAIN_N)
    queries = ["a city street", "cat oil painting"] * 4 + ["a city street"]
    want = {"a city street": ["lowres", "noise"], "cat oil painting": ["ugly hands", "blurry"]}
    idx, _ = index.nearest(queries, 2, batch_size=2)
    assert [[index.negatives[j] for j in row] for row in idx] == [want[q] for q in queries]


def test_map_micro_batches_runs_each_micro_batch_once_in_order():
    calls = []

    def fn(part: list[int]) -> dict[str, torch.Tensor]:
        calls.append(list(part))
        return {"x": torch.tensor(part, dtype=torch.float) * 10, "n": torch.full((len(part),), len(part))}

    out = map_micro_batches(None, 7, fn, batch_size=3)
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert out["x"].tolist() == [0, 10, 20, 30, 40, 50, 60] and out["n"].tolist() == [3, 3, 3, 3, 3, 3, 1]
    assert map_micro_batches(None, 0, fn, 3) == {}


def test_the_deployed_decode_answers_each_prompt_alike_in_any_batch(tmp_path):
    """decode_negatives in batches of 2 (5 prompts: 2, 2, 1) equals one batch and each prompt alone, plain, with a
    retrieval context and with a rerank: the context, the source and the answer stay with their prompt. The model
    learns the SFT tests' category mapping first, so different prompts get different answers."""
    from helpers import SFT_FAST, SFT_NEGATIVES, SFT_PROMPTS, sft_features

    from negopt.core.params import Decode, Sft
    from negopt.models.t5 import build_tiny_t5, load_policy
    from negopt.policy.decode import Retrieval, decode_negatives
    from negopt.policy.rerank import RerankWeights
    from negopt.policy.sft import train_sft

    model, tok = load_policy(build_tiny_t5(SFT_PROMPTS + SFT_NEGATIVES, tmp_path / "t5", vocab_size=400, seed=0))
    train_sft(model, tok, sft_features(tok), sft_features(tok)[:4], Sft(**SFT_FAST, max_steps=150, eval_steps=150,
              save_steps=150), tmp_path / "ckpt", seed=0, use_cpu=True)
    prompts = ["anime girl 3", "photo of a car 5", "mountain landscape 1", "portrait of a man 7", "anime girl 9"]
    index = RetrievalIndex(SFT_PROMPTS, SFT_NEGATIVES)
    rerank = RerankWeights(neighbours=2, logprob=0.1, agreement=0.0, similarity=1.0, own=-1e9, sharpness=0.0)
    decode = Decode(max_new_tokens=12)
    for context in (None, Retrieval(index, 1), Retrieval(index, 0, rerank)):
        def run(ps, batch_size, context=context):
            return decode_negatives(model, tok, ps, decode, "negative prompt: ", 24, batch_size=batch_size,
                                    retrieval=context)

        whole, batched = run(prompts, 8), run(prompts, 2)
        assert batched == whole == [run([p], 1)[0] for p in prompts]
        if context is None or context.rerank is not None:  # (the model never saw a retrieval context: one answer)
            assert len(set(whole)) >= 3, whole  # distinct answers: a prompt paired with another's would show
