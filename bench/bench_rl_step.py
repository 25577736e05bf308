"""The RL step outside image generation, part by part: what the loop's ``sample`` / ``update`` / ``select`` hold.

``metrics/rl.json`` sums each part over a run (``train_seconds_*``); this splits them further on the
default params, with the SFT weights the pipeline trained, on the steps' own plans (``step_plan``):

- ``generate``: ``sample_rollout``, k negatives per prompt with their log-probs from the sampling pass
  (``negopt/policy/nucleus.py``'s top-p); beside it, in the same run, the baseline: ``generate`` with
  transformers' own top-p warper (an argsort a token) and a second teacher-forced pass for ``log pi_old``.
  Both samplers draw the same tokens (counted: ``same samples``);
- ``logp ref``: the no-grad teacher-forced pass of the reference model;
- ``update``: the RLOO step (teacher-forced pass with grad, backward, clip, AdamW);
- ``val decode``: one deployed (greedy) decode of the checkpoint-selection prompts, once per check.

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
from negopt.core.params import load_params  # noqa: E402
from negopt.models.t5 import load_policy  # noqa: E402
from negopt.policy.decode import format_sources, saved_retrieval  # noqa: E402
from negopt.policy.sampling import Rollout, encode_sources, generated_mask, sample_rollout, sequence_logprobs  # noqa: E402
from negopt.rl.heldout import eval_plan, greedy_negatives  # noqa: E402
from negopt.rl.loop import step_plan, update  # noqa: E402
from stages.rl import read_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    params = load_params()
    rl, sft, s = params.rl, params.sft, params.sampling
    policy, tokenizer = load_policy(params.paths.sft, torch.device("cpu"))
    ref, _ = load_policy(params.paths.sft, torch.device("cpu"))
    policy.eval()
    ref.eval().requires_grad_(False)
    train = read_prompts(params.paths.clean, "train")
    val, _ = eval_plan(read_prompts(params.paths.clean, "val"), rl.selection.diversity_prompts, rl.selection.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=rl.learning_rate, weight_decay=0.0)
    parts = ("generate (transformers' top-p)", "logp old (teacher-forced)", "generate", "logp ref", "update",
             "val decode")
    times: dict[str, list[float]] = {n: [] for n in parts}
    tokens, same = [], 0
    for step in range(args.steps + 1):
        prompts, _, sample_seed = step_plan(params.base.seed, step, train, rl.batch_prompts)
        sources = format_sources(prompts, sft.task_prefix, saved_retrieval(params.paths.sft))
        t = [time.perf_counter()]
        before = transformers_rollout(policy, tokenizer, sources, rl.k, s, sft.max_source_length, sample_seed)
        t.append(time.perf_counter())
        with torch.no_grad():
            sequence_logprobs(policy, before, s.temperature)
        t.append(time.perf_counter())
        ro = sample_rollout(policy, tokenizer, sources, rl.k, s.temperature, s.top_p, s.max_new_tokens,
                            sft.max_source_length, sample_seed, scored=True)
        t.append(time.perf_counter())
        with torch.no_grad():
            sequence_logprobs(ref, ro, s.temperature)
        t.append(time.perf_counter())
        advantages = torch.randn(len(ro.negatives), generator=torch.Generator().manual_seed(step))
        update(policy, optimizer, ro, advantages, ro.logp, rl, s.temperature)
        t.append(time.perf_counter())
        greedy_negatives(policy, tokenizer, val, params)
        t.append(time.perf_counter())
        if step:  # the first step warms up allocators and caches
            for name, (a, b) in zip(parts, zip(t[:-1], t[1:], strict=True), strict=True):
                times[name].append(b - a)
            tokens.append(ro.sequences.shape[1] - 1)
            same += torch.equal(before.sequences, ro.sequences)
    med = {n: statistics.median(v) for n, v in times.items()}
    old = {"generate": med[parts[0]] + med[parts[1]]} | {n: med[n] for n in parts[3:]}
    new = {n: med[n] for n in parts[2:]}
    rows = [["generate (+ old log-probs)", f"{old['generate'] * 1000:.0f} ({med[parts[0]] * 1000:.0f} + "
             f"{med[parts[1]] * 1000:.0f})", f"{new['generate'] * 1000:.0f}", f"{new['generate'] / old['generate']:.2f}x"]]
    rows += [[n, f"{old[n] * 1000:.0f}", f"{new[n] * 1000:.0f}", ""] for n in parts[3:]]
    rows.append(["**total**", f"**{sum(old.values()) * 1000:.0f}**", f"**{sum(new.values()) * 1000:.0f}**",
                 f"**{sum(new.values()) / sum(old.values()):.2f}x**"])
    note = (f"{rl.batch_prompts} prompts x k={rl.k}, max_new_tokens {s.max_new_tokens} (median decoded length "
            f"{statistics.median(tokens):.0f} tokens), {len(val)} val prompts, {torch.get_num_threads()} threads, "
            f"profile {params.profile}; medians of {args.steps} steps after one warm-up, both columns from the "
            f"same steps. Before: transformers' top-p warper and a teacher-forced pass for the old log-probs; "
            f"after: negopt/policy/nucleus.py's top-p and the log-probs of the sampling pass. Same samples in "
            f"{same} of {args.steps} steps.")
    print(append(f"RL step outside images, by part, before / after (`bench/bench_rl_step.py`, {args.steps} steps)",
                 ["part", "before ms per step (median)", "after ms per step (median)", "after / before"], rows, note))


@torch.no_grad()
def transformers_rollout(policy, tokenizer, sources, k: int, s, max_source_length: int, seed: int) -> Rollout:
    """The baseline rollout: transformers' temperature and top-p warpers, no log-probs kept."""
    input_ids, attention_mask = encode_sources(tokenizer, sources, max_source_length)
    input_ids, attention_mask = input_ids.repeat_interleave(k, 0), attention_mask.repeat_interleave(k, 0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        seq = policy.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_k=0,
                              temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)
    return Rollout(input_ids, attention_mask, seq, generated_mask(seq[:, 1:], policy.config.eos_token_id), [])


if __name__ == "__main__":
    main()
