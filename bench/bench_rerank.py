"""The rerank's candidate log-probs: one encoder pass per distinct source in a batch vs one per candidate row.

``negopt.policy.rerank.mean_logprobs`` scores every (prompt, candidate negative) pair of the rerank table (the model's
own negative and its neighbours' distinct ones, ~9 rows per prompt). The sft stage builds that table on val to
fit the rerank, and when the rerank is on (the real pairs) every deployed decode builds it again: the rl
stage's checkpoint checks and test, generate, ``negopt suggest``. Here the table of ``--split``'s prompts is
built as ``negopt.policy.sft.fit_rerank`` builds it (the model's greedy negative, the 8 nearest training prompts'
negatives), and two scorings of its rows alternate for ``--repeat`` rounds:

- ``per row``: each row's own encoder pass and the model's loss (the code before 2026-12-06, kept here as the
  baseline);
- ``shared``: ``negopt.policy.rerank.mean_logprobs`` as it is now.

Prints the medians, their ratio and the largest difference of the two results, and appends them to
``bench/RESULTS.md``. Run from the repository root after ``dvc repro sft`` (needs the SFT model and the splits):
    python bench/bench_rerank.py [--split val] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append  # noqa: E402
from negopt.core.params import load_params  # noqa: E402
from negopt.data.splits import read_split  # noqa: E402
from negopt.models.loader import load_policy  # noqa: E402
from negopt.policy.decode import Retrieval, decode_negatives, format_sources  # noqa: E402
from negopt.policy.rerank import mean_logprobs, table  # noqa: E402
from negopt.policy.retrieval import RetrievalIndex  # noqa: E402


@torch.no_grad()
def per_row_logprobs(model, tokenizer, sources, targets, max_source_length, max_target_length, batch_size=64):
    """The baseline: every row encodes its own source, and the model computes its loss too."""
    out = []
    for i in range(0, len(sources), batch_size):
        enc = tokenizer(list(sources[i:i + batch_size]), max_length=max_source_length, truncation=True,
                        padding=True, return_tensors="pt").to(model.device)
        labels = tokenizer(text_target=list(targets[i:i + batch_size]), max_length=max_target_length,
                           truncation=True, padding=True, return_tensors="pt")["input_ids"].to(model.device)
        mask = labels != tokenizer.pad_token_id
        logits = model(**enc, labels=labels.masked_fill(~mask, -100)).logits
        lp = logits.float().log_softmax(-1).gather(-1, labels[..., None])[..., 0]
        out.append(((lp * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="val")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    params = load_params()
    sft, paths = params.sft, params.paths
    model, tokenizer = load_policy(paths.sft, torch.device("cpu"))
    train = read_split(paths.clean, "train")
    rows = read_split(paths.clean, args.split)
    prompts = rows.prompt.tolist()
    plain = Retrieval(RetrievalIndex(train.prompt.tolist(), train.negative_prompt.tolist()), sft.retrieval.k)
    own = decode_negatives(model, tokenizer, prompts, params.decode, sft.task_prefix, sft.max_source_length,
                           retrieval=plain)
    sources = format_sources(prompts, sft.task_prefix, plain)
    cand = table(model, tokenizer, prompts, sources, [[o] for o in own], plain.index, sft.rerank.neighbours,
                 sft.max_source_length, params.decode.max_new_tokens, logprob=False)
    r, c = np.nonzero(cand.valid)
    src, tgt = [sources[i] for i in r], [cand.texts[i][j] for i, j in zip(r, c, strict=True)]
    fns = {"per row": per_row_logprobs, "shared": mean_logprobs}
    results = {name: fn(model, tokenizer, src, tgt, sft.max_source_length, params.decode.max_new_tokens)
               for name, fn in fns.items()}  # also the warm-up
    diff = float(np.abs(results["per row"] - results["shared"]).max())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(model, tokenizer, src, tgt, sft.max_source_length, params.decode.max_new_tokens)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = [paths.sft, args.split, len(prompts), len(src), torch.get_num_threads(), f"{med['per row']:.2f}",
           f"{med['shared']:.2f}", f"**{med['shared'] / med['per row']:.2f}x**", f"{diff:.1e}"]
    print(append(f"rerank candidate log-probs: per row vs shared encoder passes (`bench/bench_rerank.py`, "
                 f"{args.repeat} rounds)",
                 ["model", "split", "prompts", "candidate rows", "threads", "per row s (median)", "shared s (median)",
                  "shared / per row", "max abs difference"], [row]))


if __name__ == "__main__":
    main()
