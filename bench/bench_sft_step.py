"""SFT step time of the tiny T5 with and without dropout, in one run (medians of interleaved rounds).

On CPU ``torch.dropout`` samples a Bernoulli mask per call (25 calls per step of the tiny T5), which
cProfile put at a large share of an SFT step; the tiny T5 is built without dropout (negopt/models/t5.py).
This times ``--steps`` training steps (forward, backward, AdamW) on the same length-sorted batches of the
train split for both settings.

Run from the repository root after ``dvc repro models`` (needs data/clean and models/tiny):
    python bench/bench_sft_step.py [--steps 20] [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append  # noqa: E402
from negopt.core.params import load_params  # noqa: E402
from negopt.data.splits import read_split  # noqa: E402
from negopt.models.t5 import load_policy  # noqa: E402
from negopt.policy.sft import encode_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import DataCollatorForSeq2Seq

    params = load_params("params.yaml")
    sft = params.sft
    train = read_split(params.paths.clean, "train")
    models = {}
    for rate in (0.1, 0.0):
        model, tok = load_policy(params.active.policy, torch.device("cpu"))
        for m in model.modules():  # the config's rate is read at build time: set every Dropout module
            if isinstance(m, torch.nn.Dropout):
                m.p = rate
        models[rate] = model.train()
    feats = encode_pairs(tok, train.prompt.tolist(), train.negative_prompt.tolist(), sft.task_prefix,
                         sft.max_source_length, sft.max_target_length)
    feats.sort(key=lambda f: len(f["input_ids"]) + len(f["labels"]))  # a fixed, realistic mix of lengths
    col = DataCollatorForSeq2Seq(tok, model=models[0.0], label_pad_token_id=-100)
    stride = max(1, len(feats) // (args.steps * sft.batch_size))
    batches = [col(feats[i * stride * sft.batch_size:][:sft.batch_size]) for i in range(args.steps)]
    opts = {r: torch.optim.AdamW(m.parameters(), lr=sft.learning_rate) for r, m in models.items()}
    times: dict[float, list[float]] = {0.1: [], 0.0: []}
    for rnd in range(args.repeat + 1):  # round 0 warms up
        for rate, model in models.items():
            t0 = time.perf_counter()
            for b in batches:
                model(**b).loss.backward()
                opts[rate].step()
                opts[rate].zero_grad()
            if rnd:
                times[rate].append((time.perf_counter() - t0) / args.steps)
    med = {r: statistics.median(v) for r, v in times.items()}
    rows = [[params.profile, sft.batch_size, torch.get_num_threads(), args.steps, f"{1e3 * med[0.1]:.1f}",
             f"{1e3 * med[0.0]:.1f}", f"**{med[0.0] / med[0.1]:.2f}x**"]]
    print(append(f"SFT step: dropout 0.1 vs none (`bench/bench_sft_step.py`, {args.repeat} rounds)",
                 ["profile", "batch", "threads", "steps", "dropout 0.1 ms/step (median)", "no dropout ms/step (median)",
                  "none / 0.1"], rows))


if __name__ == "__main__":
    main()
