"""Supervised fine-tuning of the policy: prompt -> negative prompt, and its evaluation.

Training goes through transformers' `Seq2SeqTrainer` (checkpoints, resume, schedule, progress bar);
ROUGE on test comes from `rouge_score`, scored against a trivial baseline that always answers the
most frequent training negative, so the gain over "say the usual thing" is visible.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rouge_score import rouge_scorer
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    TrainerState,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from negopt.core.fingerprint import fingerprint
from negopt.core.io import atomic_path, write_json
from negopt.core.stats import paired_gain
from negopt.policy.decode import Retrieval, decode_negatives, format_sources

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
FINGERPRINT = "fingerprint.json"
SAMPLER_STATE = "sampler_state.safetensors"  # in each checkpoint: the RNG state of its epoch's batch order


def encode_pairs(tokenizer, prompts: Sequence[str], negatives: Sequence[str], task_prefix: str,
                 max_source_length: int, max_target_length: int,
                 contexts: Sequence[Sequence[str]] | None = None) -> list[dict[str, list[int]]]:
    """Tokenise (prompt, negative) pairs into the features `DataCollatorForSeq2Seq` pads per batch.

    ``contexts``: each prompt's retrieved neighbour negatives (retrieval-augmented SFT), or None.
    """
    sources = format_sources(prompts, task_prefix, contexts=contexts)
    enc = tokenizer(sources, max_length=max_source_length, truncation=True)
    labels = tokenizer(text_target=list(negatives), max_length=max_target_length, truncation=True)["input_ids"]
    return [{"input_ids": i, "attention_mask": a, "labels": y}
            for i, a, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)]


class LiveCallback(TrainerCallback):
    """Forward the trainer's logs to dvclive at the trainer's own step.

    Not dvclive's `DVCLiveCallback`: it is deprecated, advances one dvclive step per log call (so train
    and eval losses land on different x values) and dumps every TrainingArguments field as params.
    """

    NAMES = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/learning_rate"}

    def __init__(self, live) -> None:
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        self.live.step = state.global_step
        for key, name in self.NAMES.items():
            if key in logs:
                self.live.log_metric(name, float(logs[key]))


def run_fingerprint(settings: dict[str, Any], train_features: list[dict], eval_features: list[dict] = ()) -> str:
    """Hash of what makes a checkpoint reusable: the settings that shape training (:func:`training_settings`),
    the training pairs and the val pairs its evaluations read."""
    rows = [*train_features, *eval_features]
    return fingerprint(settings | {"eval_rows": len(eval_features)},
                       (json.dumps([f["input_ids"], f["labels"]]).encode() for f in rows))


def checkpoint_complete(folder: Path) -> bool:
    """A Trainer checkpoint folder whose last-written file, ``trainer_state.json``, is whole."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def prepare_checkpoints(ckpt_dir: str | Path, run_id: str, max_steps: int | None = None) -> str | None:
    """Return the checkpoint to resume from, after dropping checkpoints of a different run.

    Checkpoints past `max_steps` (a longer earlier run) are dropped too: their weights are not what
    a shorter run would produce. So is a torn checkpoint (the process was killed while the Trainer
    wrote it, in place): the Trainer writes ``trainer_state.json`` last, so a checkpoint whose state
    file is missing or does not parse is incomplete, and the previous one is resumed instead of it.
    """
    ckpt_dir = Path(ckpt_dir)
    marker = ckpt_dir / FINGERPRINT
    if ckpt_dir.exists():
        old = json.loads(marker.read_text())["fingerprint"] if marker.exists() else None
        for sub in ckpt_dir.glob("checkpoint-*"):
            # Resuming a run with other data or hyper-parameters would silently mix two trainings.
            step = sub.name.split("-")[-1]
            if (old != run_id or not step.isdigit() or (max_steps is not None and int(step) > max_steps)
                    or not checkpoint_complete(sub)):
                shutil.rmtree(sub)
    write_json(marker, {"fingerprint": run_id})
    return get_last_checkpoint(str(ckpt_dir))


#: sft settings the training never reads (the test's size and the rerank, both used after training): a run with
#: other values resumes. Everything else is in the fingerprint: max_steps sets the learning-rate schedule, and an
#: evaluation (eval_steps) draws a DataLoader seed from the global RNG, which moves every later epoch's order.
NOT_TRAINING = {"max_test_samples", "rerank"}


def training_settings(sft, seed: int, base_model: str) -> dict[str, Any]:
    """The settings that shape a training run (for the checkpoint fingerprint): the ``sft`` section less
    :data:`NOT_TRAINING` (a setting added to the section is in the fingerprint without an edit here), the seed
    and the base model."""
    return {**sft.model_dump(exclude=NOT_TRAINING), "seed": seed, "base_model": base_model}


class ResumableLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler that a resumed run can put back into its epoch's order.

    The parent draws an epoch's order from the global RNG when the epoch starts, and the RNG state a
    checkpoint saves is the one at the checkpoint: a run resumed in its second epoch or later drew another
    order than the uninterrupted run (other batches, some rows seen twice, some never). This sampler keeps
    the RNG state its current order was drawn from (``drawn_from``: epoch, state), which
    ``LengthGroupedTrainer`` saves with each checkpoint; given that as ``resumed``, it draws the resumed
    epoch's order from it. Every other epoch is drawn as the parent draws it, so an uninterrupted run's
    orders are transformers' own.
    """

    def __init__(self, batch_size: int, lengths: list[int], resumed: tuple[int, torch.Tensor] | None = None):
        super().__init__(batch_size, lengths=lengths)
        self.epoch, self.resumed = 0, resumed
        self.drawn_from: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.resumed is not None and self.resumed[0] == self.epoch:
            state = self.resumed[1]
            self.generator = torch.Generator()
            self.generator.set_state(state)
        else:  # the parent's draw, from the global RNG (a checkpoint at an epoch's end resumes that RNG as is)
            state, self.generator = torch.random.get_rng_state(), None
        self.drawn_from = (self.epoch, state)
        return super().__iter__()


def save_sampler_state(sampler: ResumableLengthGroupedSampler, folder: Path) -> None:
    epoch, state = sampler.drawn_from
    with atomic_path(folder / SAMPLER_STATE) as tmp:
        save_file({"rng_state": state}, tmp, metadata={"epoch": str(epoch)})


def load_sampler_state(checkpoint: str | Path) -> tuple[int, torch.Tensor] | None:
    """(epoch, RNG state) of a checkpoint's current order; None for a checkpoint without one (random batches)."""
    path = Path(checkpoint) / SAMPLER_STATE
    if not path.exists():
        return None
    with safe_open(path, "pt") as f:
        return int(f.metadata()["epoch"]), f.get_tensor("rng_state")


class LengthGroupedTrainer(Seq2SeqTrainer):
    """Batches drawn from length-sorted megabatches (transformers' LengthGroupedSampler), by source + target length.

    transformers' own ``group_by_length`` sorts by ``input_ids`` alone; a seq2seq batch pads both sides, and
    the decoder's tokens cost more (self- and cross-attention), so the sort key is their sum. Each checkpoint
    also holds the RNG state of its epoch's order, so a resume anywhere trains on the uninterrupted order.
    """

    resumed: tuple[int, torch.Tensor] | None = None
    sampler: ResumableLengthGroupedSampler | None = None

    def train(self, resume_from_checkpoint=None, **kwargs):
        self.resumed = load_sampler_state(resume_from_checkpoint) if resume_from_checkpoint else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = [len(f["input_ids"]) + len(f["labels"]) for f in dataset]
        self.sampler = ResumableLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths, resumed=self.resumed)
        return self.sampler

    def _save_rng_state(self, output_dir):
        # beside the Trainer's RNG states, so before trainer_state.json (written last): a checkpoint without a
        # whole one is never resumed (prepare_checkpoints), so a resumable checkpoint always has this file
        save_sampler_state(self.sampler, Path(output_dir))
        super()._save_rng_state(output_dir)


def trainer_class(sft) -> type[Seq2SeqTrainer]:
    """``LengthGroupedTrainer`` with ``sft.group_by_length``, else transformers' random batches."""
    return LengthGroupedTrainer if sft.group_by_length else Seq2SeqTrainer


def train_sft(model, tokenizer, train_features: list[dict], eval_features: list[dict], sft, ckpt_dir: str | Path,
              seed: int, use_cpu: bool, callbacks: list[TrainerCallback] | None = None,
              resume_from: str | None = None) -> dict[str, Any]:
    """Fine-tune `model` in place with `Seq2SeqTrainer`, optionally resuming from a checkpoint folder.

    `sft` is the params `Sft` section. Returns train_loss (last logged window), eval_loss on
    `eval_features`, the step trained to and the step resumed from (0 for a fresh run).
    """
    args = Seq2SeqTrainingArguments(
        output_dir=str(ckpt_dir), max_steps=sft.max_steps, per_device_train_batch_size=sft.batch_size,
        per_device_eval_batch_size=max(sft.batch_size, 64), learning_rate=sft.learning_rate,
        warmup_steps=sft.warmup_steps, weight_decay=sft.weight_decay, eval_strategy="steps",
        eval_steps=sft.eval_steps, save_strategy="steps", save_steps=sft.save_steps, save_total_limit=2,
        logging_steps=max(1, min(sft.eval_steps, 20)), logging_first_step=True, seed=seed, data_seed=seed,
        report_to="none", use_cpu=use_cpu, dataloader_num_workers=0, disable_tqdm=False,
        predict_with_generate=False)  # eval = teacher-forced loss; ROUGE is scored on test afterwards
    trainer = trainer_class(sft)(
        model=model, args=args, train_dataset=train_features, eval_dataset=eval_features,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer, callbacks=callbacks)
    done = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json")) if resume_from else None
    if done is not None and done.global_step >= sft.max_steps:
        # Already trained (a re-run after the last save): resuming would still run one more step in
        # transformers 5, so load the finished weights and state instead.
        model.load_state_dict(type(model).from_pretrained(resume_from).state_dict())
        trainer.state = done
    else:
        trainer.train(resume_from_checkpoint=resume_from)
    eval_loss = trainer.evaluate()["eval_loss"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    resumed = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    return {"train_loss": float(losses[-1]) if losses else float("nan"), "eval_loss": float(eval_loss),
            "global_step": int(trainer.state.global_step), "resumed_from_step": resumed}


def most_frequent(texts: Sequence[str]) -> str:
    """The most frequent text; ties go to the alphabetically first, so the baseline is deterministic."""
    if not texts:
        raise ValueError("most_frequent: no texts")
    counts = Counter(texts)
    return min(counts, key=lambda t: (-counts[t], t))


def rouge_rows(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L F-measure in [0, 1] per row (rouge_score, Porter stemming), on the text as written.

    Targets keep their A1111 syntax (a user pastes the output into A1111). rouge_score lower-cases and keeps only
    runs of letters and digits, so brackets and colons are not scored but a weight's digits are words:
    ``(bad hands:1.4)`` is ``bad hands 1 4``, ``bad hands`` against it scores ROUGE-1 F 0.67, ``(bad hands:1.2)``
    0.75, and an embedding name (``easynegative``) is one word."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"rouge: need equal, non-zero lengths, got {len(predictions)} and {len(references)}")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    rows: dict[str, list[float]] = {k: [] for k in ROUGE_KEYS}
    for pred, ref in zip(predictions, references, strict=True):
        for key, s in scorer.score(ref, pred).items():
            rows[key].append(s.fmeasure)
    return rows


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure in [0, 1], one pair per row."""
    return {k: float(np.mean(v)) for k, v in rouge_rows(predictions, references).items()}


def score_sft(predictions: Sequence[str], references: Sequence[str], train_negatives: Sequence[str],
              baselines: dict[str, Sequence[str]] | None = None) -> dict:
    """ROUGE of the predictions and of each baseline on the same rows, with the paired ROUGE-L gain.

    Baselines: ``most_frequent`` (the most frequent *training* negative, always) and any given in
    ``baselines`` (e.g. ``retrieval``: the nearest training prompt's negative). For each,
    ``rougeL_gain_over_<name>`` and its standard error come from the per-row differences.
    """
    rows = rouge_rows(predictions, references)
    scores = {k: float(np.mean(v)) for k, v in rows.items()}
    preds = {"most_frequent": [most_frequent(train_negatives)] * len(references), **(baselines or {})}
    for name, baseline in preds.items():
        base_rows = rouge_rows(baseline, references)
        scores.update({f"{k}_baseline_{name}": float(np.mean(v)) for k, v in base_rows.items()})
        gain, se = paired_gain(rows["rougeL"], base_rows["rougeL"])
        scores[f"rougeL_gain_over_{name}"], scores[f"rougeL_gain_over_{name}_se"] = gain, se
    return scores


def training_contexts(retrieval: Retrieval, prompts: Sequence[str], near_duplicate_threshold: float,
                      negatives: Sequence[str] = (), self_share: float = 0.0, seed: int = 0) -> list[list[str]]:
    """Neighbour negatives for the *training* prompts, each row's own near-duplicate group excluded.

    Without the exclusion a training row retrieves itself (cosine 1) and the model learns to copy its
    own target; at test time no neighbour is that close (the split keeps near duplicates together),
    so copying would not transfer. Groups are the split's (``data.split.near_duplicate_threshold``).

    ``self_share`` (``sft.retrieval.self_share``): that share of the rows, drawn with ``seed``, see their own
    negative (``negatives[i]``) as the first retrieved one instead. A from-scratch model learns to copy
    the retrieved negative only from such rows: a neighbour's negative is a copy of the target too
    rarely for a short training run to teach it (docs/EXPERIMENTS.md, "Teaching the tiny T5 to copy: the
    real-pairs recipe").
    """
    from negopt.data.clean import prompt_groups

    contexts = retrieval.context(prompts, groups=prompt_groups(list(prompts), near_duplicate_threshold))
    if self_share <= 0:
        return contexts
    if len(negatives) != len(prompts):
        raise ValueError(f"training_contexts: self_share needs one negative per prompt, got {len(negatives)} "
                         f"for {len(prompts)} prompts")
    chosen = np.random.default_rng(seed).random(len(prompts)) < self_share
    return [[own, *ctx[:retrieval.k - 1]] if pick else ctx
            for ctx, own, pick in zip(contexts, negatives, chosen, strict=True)]


def fit_rerank(model, tokenizer, prompts: Sequence[str], references: Sequence[str], retrieval: Retrieval,
               sft, decode, seed: int = 0) -> tuple[Retrieval, dict]:
    """``retrieval`` with the rerank fitted on (``prompts``, ``references``) (val), or without one when it does not
    beat the model's own negative by ``sft.rerank.min_z`` paired SE (negopt/policy/rerank.py); and the fit's report."""
    from dataclasses import replace

    from negopt.policy.rerank import fit, rouge_l_tokens, rouge_tokens, table

    plain = replace(retrieval, rerank=None)
    own = decode_negatives(model, tokenizer, list(prompts), decode, sft.task_prefix, sft.max_source_length,
                           seed=seed, retrieval=plain)
    sources = format_sources(list(prompts), sft.task_prefix, plain)
    c = table(model, tokenizer, prompts, sources, [[o] for o in own], retrieval.index, sft.rerank.neighbours,
              sft.max_source_length, decode.max_new_tokens)
    refs = rouge_tokens(references)
    rouge = np.zeros(c.valid.shape)
    for i, (row, ref) in enumerate(zip(c.texts, refs, strict=True)):
        rouge[i, :len(row)] = [rouge_l_tokens(t, ref) for t in rouge_tokens(row)]
    weights, report = fit(c, rouge, sft.rerank.neighbours, sft.rerank.min_z)
    return replace(retrieval, rerank=weights), report | {"rerank_weights": weights.to_dict() if weights else None}


def model_card_body(base_model: str, data: dict[str, Any], params: dict[str, Any], metrics: dict[str, Any],
                    examples: list[tuple[str, str]] = ()) -> str:
    """The card's text: what the model is, how to use it, what it was trained on, how it scores."""
    lines = ["# negopt SFT policy", "",
             f"Seq2seq model fine-tuned from `{base_model}` to map a text-to-image prompt to a negative prompt "
             "(NegOpt step 1, arXiv 2403.07605).", "",
             "```python", "from negopt import NegativePromptGenerator",
             "gen = NegativePromptGenerator.from_pretrained(path)  # reads negopt.json: input format + decode",
             "gen([\"portrait photo of an old fisherman\"])", "```", "", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Parameters", ""] + [f"- {k}: {v!r}" for k, v in params.items()]
    lines += ["", "## Metrics (ROUGE F-measure in [0, 1] on test)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    if examples:
        lines += ["", "## Examples (test)", "", "| prompt | generated negative |", "|---|---|"]
        lines += [f"| {p[:80].replace('|', '/')} | {n[:80].replace('|', '/')} |" for p, n in examples]
    return "\n".join(lines) + "\n"
