"""The RL step outside image generation, part by part: what the loop's ``sample`` / ``update`` / ``select`` hold.

``metrics/rl.json`` sums each part over a run (``train_seconds_*``); this splits them further on the
default params, with the SFT weights the pipeline trained, on the steps' own plans (``step_plan``):

- ``generate``: ``model.generate`` sampling k negatives per prompt (the rollout proper);
- ``logp old`` / ``logp ref``: the two no-grad teacher-forced passes that score the samples;
- ``update``: the RLOO step (teacher-forced pass with grad, backward, clip, AdamW);
- ``val decode``: one deployed (greedy) decode of the checkpoint-selection prompts, which a check runs
  once for the diversity share and once for the reward plan's prompts.

Medians of ``--steps`` steps after one warm-up step. Run from the repository root after ``dvc repro``
(needs the sft stage's weights and data/clean):
    python bench/bench_rl_step.py [--steps 20]
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
from negopt.models.policy import load_policy  # noqa: E402
from negopt.params import load_params  # noqa: E402
from negopt.rl.evaluate import eval_plan, greedy_negatives  # noqa: E402
from negopt.rl.loop import Components, deployed_sources, step_plan, update  # noqa: E402
from negopt.rl.policy import sample_rollout, sequence_logprobs  # noqa: E402
from stages.rl import human_negatives, read_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    params = load_params()
    rl, sft = params.rl, params.sft
    policy, tokenizer = load_policy(params.paths.sft, torch.device("cpu"))
    ref, _ = load_policy(params.paths.sft, torch.device("cpu"))
    policy.eval()
    ref.eval().requires_grad_(False)
    comp = Components(policy=policy, ref=ref, tokenizer=tokenizer, pipe=None, scorer=None, sft_dir=params.paths.sft)
    train = list(human_negatives(params.paths.clean))
    val, _ = eval_plan(read_prompts(params.paths.clean, "val"), rl.eval_prompts, rl.eval_seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=rl.learning_rate, weight_decay=0.0)
    parts: dict[str, list[float]] = {n: [] for n in ("generate", "logp old", "logp ref", "update", "val decode")}
    tokens = []
    for step in range(args.steps + 1):
        prompts, _, sample_seed = step_plan(params.base.seed, step, train, rl.batch_prompts)
        t = [time.perf_counter()]
        ro = sample_rollout(policy, tokenizer, deployed_sources(comp, params, prompts), rl.k, rl.temperature,
                            rl.top_p, rl.max_new_tokens, sft.max_source_length, sample_seed)
        t.append(time.perf_counter())
        with torch.no_grad():
            logp_old, _ = sequence_logprobs(policy, ro, rl.temperature)
            t.append(time.perf_counter())
            sequence_logprobs(ref, ro, rl.temperature)
            t.append(time.perf_counter())
        advantages = torch.randn(len(ro.negatives), generator=torch.Generator().manual_seed(step))
        update(policy, optimizer, ro, advantages, logp_old, params)
        t.append(time.perf_counter())
        greedy_negatives(policy, tokenizer, val, params)
        t.append(time.perf_counter())
        if step:  # the first step warms up allocators and caches
            for name, (a, b) in zip(parts, zip(t[:-1], t[1:], strict=True), strict=True):
                parts[name].append(b - a)
            tokens.append(ro.sequences.shape[1] - 1)
    med = {n: statistics.median(v) for n, v in parts.items()}
    total = sum(med.values())
    rows = [[n, f"{med[n] * 1000:.0f}", f"{med[n] / total:.0%}"] for n in parts]
    rows.append(["**total**", f"**{total * 1000:.0f}**", "100%"])
    note = (f"{rl.batch_prompts} prompts x k={rl.k}, max_new_tokens {rl.max_new_tokens} (median decoded length "
            f"{statistics.median(tokens):.0f} tokens), {len(val)} val prompts, {torch.get_num_threads()} threads, "
            f"profile {params.profile}; medians of {args.steps} steps after one warm-up.")
    print(append(f"RL step outside images, by part (`bench/bench_rl_step.py`, {args.steps} steps)",
                 ["part", "ms per step (median)", "share"], rows, note))


if __name__ == "__main__":
    main()
