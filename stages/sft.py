"""Stage sft: fine-tune the profile's T5 on (prompt -> negative prompt), score ROUGE on test.

Reads paths.clean/{train,val,test}.parquet and the profile's policy; writes paths.sft (model,
tokenizer, model card), metrics/sft.json, dvclive/sft (loss curves) and resumable checkpoints under
paths.checkpoints/sft. The targets keep their A1111 syntax (a user pastes the output into A1111): sft.json counts
how the model's test negatives are written (``syntax``) beside the test targets (``syntax_test``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from dvclive import Live

from negopt.core.errors import run_stage
from negopt.core.io import atomic_dir, write_json
from negopt.core.model_card import write_model_card
from negopt.core.prompt_syntax import syntax_counts
from negopt.core.runtime import resolve_device, start_stage
from negopt.data.splits import read_split
from negopt.models.loader import load_policy
from negopt.policy.decode import NegativePromptGenerator, Retrieval
from negopt.policy.retrieval import RetrievalIndex
from negopt.policy.sft import (
    LiveCallback,
    encode_pairs,
    fit_rerank,
    model_card_body,
    prepare_checkpoints,
    run_fingerprint,
    score_sft,
    train_sft,
    training_contexts,
    training_settings,
)

LIVE_DIR = "dvclive/sft"


def main() -> None:
    params = start_stage()
    sft, paths, seed = params.sft, params.paths, params.base.seed
    device = resolve_device(params.base.device)
    train = read_split(paths.clean, "train")
    val = read_split(paths.clean, "val").head(sft.max_eval_samples)
    test = read_split(paths.clean, "test").head(sft.max_test_samples)

    model, tokenizer = load_policy(params.active.policy, device)

    index = RetrievalIndex(train.prompt.tolist(), train.negative_prompt.tolist())  # train only: baseline + context
    retrieval = Retrieval(index, sft.retrieval.k) if sft.retrieval.k else None

    def features(df: pd.DataFrame, contexts=None) -> list[dict]:
        if contexts is None and retrieval is not None:
            contexts = retrieval.context(df.prompt.tolist())  # held-out rows: retrieved as at inference
        return encode_pairs(tokenizer, df.prompt.tolist(), df.negative_prompt.tolist(), sft.task_prefix,
                            sft.max_source_length, sft.max_target_length, contexts)

    train_ctx = (training_contexts(retrieval, train.prompt.tolist(), params.data.split.near_duplicate_threshold,
                                   train.negative_prompt.tolist(), sft.retrieval.self_share, seed)
                 if retrieval is not None else None)
    train_f, val_f = features(train, train_ctx), features(val)
    ckpt_dir = Path(paths.checkpoints) / "sft"
    fingerprint = run_fingerprint(training_settings(sft, seed, params.active.policy), train_f, val_f)
    resume = prepare_checkpoints(ckpt_dir, fingerprint, sft.max_steps)
    if resume:
        print(f"sft: resuming from {resume}")

    live = Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False, resume=resume is not None)
    t0 = time.perf_counter()
    result = train_sft(model, tokenizer, train_f, val_f, sft, ckpt_dir, seed, use_cpu=device.type == "cpu",
                       callbacks=[LiveCallback(live)], resume_from=resume)
    train_seconds = time.perf_counter() - t0

    rerank: dict = {"rerank": False}
    context_only = retrieval  # the trained model's input (sft.retrieval's context, or None), before any rerank
    if sft.rerank.neighbours:
        fitted, rerank = fit_rerank(model, tokenizer, val.prompt.tolist(), val.negative_prompt.tolist(),
                                    Retrieval(index, sft.retrieval.k), sft, params.decode, seed)
        print(f"sft: rerank {'on' if fitted.rerank else 'off'}: val rougeL {rerank['rerank_val_rougeL']:.3f} vs the "
              f"model's own {rerank['rerank_val_rougeL_own']:.3f} ({rerank['rerank_val_gain_z']:.1f} paired SE; "
              f"sft.rerank.min_z = {sft.rerank.min_z})")
        retrieval = fitted if fitted.rerank or fitted.k else None
    generator = NegativePromptGenerator(model, tokenizer, params.decode, sft.task_prefix, sft.max_source_length,
                                        retrieval)
    predictions = generator(test.prompt.tolist(), seed=seed, progress=True)
    baselines = {"retrieval": index.predict(test.prompt.tolist())}
    if rerank["rerank"]:  # the model's own negative (the decode without the rerank) as a baseline
        own = NegativePromptGenerator(model, tokenizer, params.decode, sft.task_prefix, sft.max_source_length,
                                      context_only)
        baselines["model_own"] = own(test.prompt.tolist(), seed=seed)
    scores = score_sft(predictions, test.negative_prompt.tolist(), train.negative_prompt.tolist(), baselines)
    syntax = {"syntax": syntax_counts(predictions), "syntax_test": syntax_counts(test.negative_prompt.tolist())}
    metrics = {"eval_loss": result["eval_loss"], **scores, **syntax, **rerank, "train_loss": result["train_loss"],
               "n_train": len(train), "n_val": len(val), "n_test": len(test), "steps": result["global_step"],
               "resumed_from_step": result["resumed_from_step"], "train_seconds": round(train_seconds, 1)}

    for key in ("eval_loss", "rouge1", "rouge2", "rougeL", "rougeL_baseline_most_frequent", "rougeL_baseline_retrieval"):
        live.summary[key] = metrics[key]
    live.end()

    with atomic_dir(paths.sft) as tmp:
        generator.save_pretrained(tmp)
        body = model_card_body(params.active.policy,
                               data={"source": params.data.source, "train rows": len(train), "val rows": len(val),
                                     "test rows": len(test)},
                               params=sft.model_dump() | {"seed": seed}, metrics=metrics,
                               examples=list(zip(test.prompt.tolist()[:5], predictions[:5], strict=True)))
        write_model_card(tmp, "negopt-sft", params.active.policy, params.data.source,
                         {k: metrics[k] for k in ("rouge1", "rouge2", "rougeL", "eval_loss")},
                         f"negopt test split ({params.data.source})", body)
    write_json(Path(paths.metrics) / "sft.json", metrics)
    print(f"sft: rougeL {metrics['rougeL']:.3f} vs most-frequent baseline "
          f"{metrics['rougeL_baseline_most_frequent']:.3f}, retrieval {metrics['rougeL_baseline_retrieval']:.3f} "
          f"(gain {metrics['rougeL_gain_over_retrieval']:+.3f} +- {metrics['rougeL_gain_over_retrieval_se']:.3f}); eval_loss {metrics['eval_loss']:.3f}; "
          f"{train_seconds:.0f} s training")


if __name__ == "__main__":
    run_stage(main)
