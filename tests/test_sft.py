"""SFT: formatting, ROUGE and its baseline, training, checkpoints / resume, and the stage's outputs."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pandas as pd
import pytest
import torch
import yaml
from helpers import SFT_FAST as FAST  # noqa: E402
from helpers import SFT_NEGATIVES as NEGATIVES  # noqa: E402
from helpers import SFT_PREFIX as PREFIX  # noqa: E402
from helpers import SFT_PROMPTS as PROMPTS  # noqa: E402
from helpers import sft_features as features  # noqa: E402
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, TrainerCallback

from negopt.core.params import Decode, Sft
from negopt.models.t5 import build_tiny_t5, load_policy
from negopt.policy.decode import Retrieval, decode_negatives, format_source
from negopt.policy.sft import (
    encode_pairs,
    most_frequent,
    prepare_checkpoints,
    rouge,
    score_sft,
    train_sft,
    training_contexts,
)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return build_tiny_t5(PROMPTS + NEGATIVES, tmp_path_factory.mktemp("t5") / "t5", vocab_size=400, seed=0)


def test_format_source_prefixes_and_strips():
    assert format_source("  a cat \n", "negative prompt: ") == "negative prompt: a cat"
    assert format_source("a cat", "") == "a cat"


def test_encode_pairs_truncates_and_ends_with_eos(t5_dir):
    tok = AutoTokenizer.from_pretrained(t5_dir)
    [f] = encode_pairs(tok, ["photo of a car " * 20], ["cartoon"], PREFIX, 10, 16)
    assert len(f["input_ids"]) == len(f["attention_mask"]) == 10 and f["input_ids"][-1] == 1
    assert f["labels"][-1] == 1 and tok.decode(f["labels"], skip_special_tokens=True).strip() == "cartoon"


def test_encode_pairs_with_context_encodes_the_formatted_source(t5_dir):
    tok = AutoTokenizer.from_pretrained(t5_dir)
    [f] = encode_pairs(tok, ["anime girl 3"], ["realistic, 3d"], PREFIX, 64, 16, contexts=[["cartoon, painting"]])
    assert f["input_ids"] == tok("negative prompt: cartoon, painting || prompt: anime girl 3")["input_ids"]


# rows 0 / 1: one template re-run with "8k" -> "4k" (word-3-gram Jaccard >= 0.7); rows 2 / 3 share "a city street"
GROUPED_P = ["portrait of an old fisherman, oil painting, highly detailed, sharp focus, 8k, trending on artstation",
             "portrait of an old fisherman, oil painting, highly detailed, sharp focus, 4k, trending on artstation",
             "a city street at night", "a city street in the rain"]
GROUPED_N = ["blurry fisherman", "lowres fisherman", "cars", "umbrella"]


def test_training_contexts_exclude_the_rows_near_duplicate_group():
    """At training time a row's neighbours skip its own near-duplicate group, as the split does for test."""
    from negopt.data.clean import prompt_groups
    from negopt.policy.retrieval import RetrievalIndex

    groups = prompt_groups(GROUPED_P, 0.7)
    assert groups[0] == groups[1] and len({groups[0], groups[2], groups[3]}) == 3  # the premise
    r = Retrieval(RetrievalIndex(GROUPED_P, GROUPED_N), 1)
    # rows 0 / 1 may not see each other: no other word in common, the tie goes to the first street row
    assert training_contexts(r, GROUPED_P, 0.7) == [["cars"], ["cars"], ["umbrella"], ["cars"]]
    # threshold 0 groups identical prompts only: the template copy leaks its negative
    assert training_contexts(r, GROUPED_P, 0.0) == [["lowres fisherman"], ["blurry fisherman"], ["umbrella"], ["cars"]]


def test_training_contexts_self_share_puts_the_rows_own_negative_first():
    from negopt.policy.retrieval import RetrievalIndex

    r = Retrieval(RetrievalIndex(GROUPED_P, GROUPED_N), 2)
    plain = training_contexts(r, GROUPED_P, 0.7)
    assert training_contexts(r, GROUPED_P, 0.7, GROUPED_N, 0.0) == plain
    # every row: its own negative, then its best neighbour (k = 2 negatives in all)
    assert training_contexts(r, GROUPED_P, 0.7, GROUPED_N, 1.0) == [[own, ctx[0]] for own, ctx in
                                                                      zip(GROUPED_N, plain, strict=True)]
    # a share draws rows with the seed: the chosen rows change with it, the others keep their neighbours
    many_p = [f"{p} {i}" for i in range(50) for p in GROUPED_P[2:]]
    many_n = [f"{n} {i}" for i in range(50) for n in GROUPED_N[2:]]
    r = Retrieval(RetrievalIndex(many_p, many_n), 1)
    draws = [training_contexts(r, many_p, 0.7, many_n, 0.3, seed) for seed in (0, 0, 1)]
    own = [[c == [n] for c, n in zip(d, many_n, strict=True)] for d in draws]
    assert draws[0] == draws[1] and own[0] != own[2]
    assert 0.15 < sum(own[0]) / len(many_n) < 0.45
    with pytest.raises(ValueError, match="one negative per prompt"):
        training_contexts(r, many_p, 0.7, many_n[:3], 0.3)


def test_most_frequent_breaks_ties_alphabetically():
    assert most_frequent(["b", "a", "b", "a", "c"]) == "a"  # a and b both twice
    assert most_frequent(["x", "y", "y"]) == "y"
    with pytest.raises(ValueError):
        most_frequent([])


def test_rouge_matches_hand_counts():
    # unigrams: 2 of 3 shared -> P = R = F = 2/3; no shared bigram; LCS = 1 word -> F = 1/3
    s = rouge(["bad hands blurry"], ["blurry bad anatomy"])
    assert s["rouge1"] == pytest.approx(2 / 3) and s["rouge2"] == 0 and s["rougeL"] == pytest.approx(1 / 3)
    assert rouge(["a b c"], ["a b c"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    # Porter stemming: "finger" and "fingers" are one word, so the score is 1 (0.5 without stemming)
    assert rouge(["extra finger"], ["extra fingers"])["rouge1"] == 1.0
    with pytest.raises(ValueError):
        rouge(["a"], [])


def test_score_sft_baseline_uses_most_frequent_training_negative():
    # train's most frequent is "text", test's is "cartoon": the baseline answers "text" everywhere,
    # F1 1 on one row of three -> 1/3 (taken from the test references it would be 2/3)
    s = score_sft(["cartoon", "cartoon", "cartoon"], ["cartoon", "cartoon", "text"], ["text", "text", "cartoon"])
    assert s["rouge1"] == pytest.approx(2 / 3) and s["rouge1_baseline_most_frequent"] == pytest.approx(1 / 3)
    s = score_sft(["text", "cartoon"], ["text", "cartoon"], ["text", "text", "cartoon"])
    assert s["rougeL"] == 1.0 and s["rougeL_baseline_most_frequent"] == pytest.approx(0.5)


def fixed_batch_loss(model, tok) -> float:
    batch = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)(features(tok)[:16])
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item()


def test_training_lowers_loss_on_fixed_batch_and_learns_mapping(t5_dir, tmp_path):
    model, tok = load_policy(str(t5_dir))
    before = fixed_batch_loss(model, tok)
    sft = Sft(**FAST, max_steps=60, eval_steps=60, save_steps=60)
    result = train_sft(model, tok, features(tok), features(tok)[:8], sft, tmp_path / "ckpt", seed=0, use_cpu=True)
    after = fixed_batch_loss(model, tok)
    assert after < 0.5 * before, (before, after)
    assert result["global_step"] == 60 and result["resumed_from_step"] == 0
    assert math.isfinite(result["eval_loss"]) and math.isfinite(result["train_loss"])
    out = decode_negatives(model, tok, ["anime girl 99", "mountain landscape 99"],
                           Decode(max_new_tokens=8, repetition_penalty=1.0), PREFIX, 24)
    assert rouge(out, ["realistic, 3d", "people, text"])["rouge1"] > 0.5, out


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_interrupted_run_resumes_from_last_checkpoint(t5_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    sft = Sft(**FAST, max_steps=6, eval_steps=6, save_steps=3)
    model, tok = load_policy(str(t5_dir))
    assert prepare_checkpoints(ckpt, "fp-a") is None
    train_sft(model, tok, features(tok), features(tok)[:8], sft, ckpt, seed=0, use_cpu=True)
    resume = prepare_checkpoints(ckpt, "fp-a")  # the "interrupted" run stopped at step 6
    assert resume is not None and resume.endswith("checkpoint-6")

    model, tok = load_policy(str(t5_dir))  # a fresh process would start from the base model again
    counter = CountSteps()
    more = sft.model_copy(update={"max_steps": 10})
    result = train_sft(model, tok, features(tok), features(tok)[:8], more, ckpt, seed=0, use_cpu=True,
                       callbacks=[counter], resume_from=resume)
    assert counter.steps == [7, 8, 9, 10]  # only the missing steps ran
    assert result["resumed_from_step"] == 6 and result["global_step"] == 10

    # a re-run once training is complete trains nothing and returns the finished weights
    finished = prepare_checkpoints(ckpt, "fp-a")
    assert finished.endswith("checkpoint-10")
    fresh, tok = load_policy(str(t5_dir))
    counter = CountSteps()
    again = train_sft(fresh, tok, features(tok), features(tok)[:8], more, ckpt, seed=0, use_cpu=True,
                      callbacks=[counter], resume_from=finished)
    assert counter.steps == [] and again["global_step"] == 10
    assert torch.equal(fresh.shared.weight, model.shared.weight)
    assert again["eval_loss"] == pytest.approx(result["eval_loss"])


@pytest.mark.parametrize("group_by_length", [True, False])
def test_a_resume_in_the_second_epoch_gives_the_weights_of_a_run_without_one(t5_dir, tmp_path, group_by_length):
    """48 pairs at batch 8 are 6 steps an epoch, so checkpoint-8 is 2 steps into the second epoch: that
    epoch's order must not depend on whether the run was resumed (it did with transformers' own
    length-grouped sampler, which draws it from the global RNG before the Trainer restores it)."""
    sft = Sft(**FAST, max_steps=10, eval_steps=10, save_steps=8, group_by_length=group_by_length)
    whole, tok = load_policy(str(t5_dir))
    train_sft(whole, tok, features(tok), features(tok)[:8], sft, tmp_path / "whole", seed=0, use_cpu=True)

    (tmp_path / "resumed").mkdir()
    resume = shutil.copytree(tmp_path / "whole" / "checkpoint-8", tmp_path / "resumed" / "checkpoint-8")
    resumed, tok = load_policy(str(t5_dir))
    counter = CountSteps()
    train_sft(resumed, tok, features(tok), features(tok)[:8], sft, tmp_path / "resumed", seed=0, use_cpu=True,
              callbacks=[counter], resume_from=str(resume))
    assert counter.steps == [9, 10]
    want, got = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want), "the resumed run trained on another order"


def test_torn_checkpoint_is_skipped_never_resumed(tmp_path):
    """Killed while the Trainer wrote checkpoint-6 (no or a torn trainer_state.json): checkpoint-3 resumes."""
    prepare_checkpoints(tmp_path, "fp-a")
    for step, state in ((3, '{"global_step": 3}'), (6, None), (9, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"partial")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert prepare_checkpoints(tmp_path, "fp-a").endswith("checkpoint-3")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3"]


def test_checkpoints_of_another_run_are_dropped(tmp_path):
    (tmp_path / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoints(tmp_path, "fp-a") is None  # no fingerprint yet: not ours
    assert not (tmp_path / "checkpoint-5").exists()
    assert json.loads((tmp_path / "fingerprint.json").read_text()) == {"fingerprint": "fp-a"}
    for step in (5, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoints(tmp_path, "fp-a", max_steps=10).endswith("checkpoint-10")
    # a shorter run must not reuse weights trained for longer
    assert prepare_checkpoints(tmp_path, "fp-a", max_steps=8).endswith("checkpoint-5")
    assert not (tmp_path / "checkpoint-10").exists()


def test_stage_writes_model_card_metrics_and_loss_curves(root, t5_dir, tmp_path, monkeypatch):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["sft"].update(FAST, max_steps=30, eval_steps=15, save_steps=15, max_test_samples=6, retrieval={"k": 1})
    raw["decode"]["max_new_tokens"] = 8
    raw["models"]["tiny"]["policy"] = str(t5_dir)
    raw["base"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    frame = pd.DataFrame({"prompt": PROMPTS, "negative_prompt": NEGATIVES})
    frame.iloc[:40].to_parquet(clean / "train.parquet")
    frame.iloc[40:44].to_parquet(clean / "val.parquet")
    frame.iloc[40:].to_parquet(clean / "test.parquet")  # 8 rows, capped to 6 by max_test_samples
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("stage_sft", root / "stages" / "sft.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main()

    m = json.loads((tmp_path / "metrics" / "sft.json").read_text())
    for key in ("eval_loss", "rouge1", "rouge2", "rougeL", "rougeL_baseline_most_frequent", "train_loss"):
        assert math.isfinite(m[key]), key
    for key in ("rouge1", "rouge2", "rougeL", "rougeL_baseline_most_frequent"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["eval_loss"] > 0 and (m["n_train"], m["n_val"], m["n_test"], m["steps"]) == (40, 4, 6, 30)
    # train's 4 negatives tie (10 each) -> the alphabetically first; the 6 test rows' most frequent differs
    test_refs = NEGATIVES[40:46]
    assert most_frequent(NEGATIVES[:40]) == "bad anatomy, extra fingers" != most_frequent(test_refs)
    expected = rouge(["bad anatomy, extra fingers"] * 6, test_refs)
    assert m["rougeL_baseline_most_frequent"] == pytest.approx(expected["rougeL"])
    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "models" / "sft")
    AutoTokenizer.from_pretrained(tmp_path / "models" / "sft")
    card = (tmp_path / "models" / "sft" / "README.md").read_text()
    assert "rougeL_baseline_most_frequent" in card and "train rows: 40" in card
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data  # the hub's own parser reads the YAML metadata
    assert meta.base_model == str(t5_dir) and meta.pipeline_tag == "text2text-generation"
    assert meta.data_license.startswith("synthetic sample") and meta.license == "apache-2.0"
    results = {r.metric_type: r.metric_value for r in meta.eval_results}
    assert results["rougeL"] == pytest.approx(m["rougeL"]) and set(results) == {"rouge1", "rouge2", "rougeL", "eval_loss"}
    saved = json.loads((tmp_path / "models" / "sft" / "negopt.json").read_text())
    assert saved["decode"]["max_new_tokens"] == 8 and saved["task_prefix"] == raw["sft"]["task_prefix"]
    # a retrieval-augmented model: its index (over the 40 train rows only) is saved with it
    from negopt.policy.decode import load_retrieval

    assert saved["retrieval_k"] == 1
    assert load_retrieval(tmp_path / "models" / "sft").index.negatives == NEGATIVES[:40]
    losses = pd.read_csv(tmp_path / "dvclive" / "sft" / "plots" / "metrics" / "train" / "loss.tsv", sep="\t")
    evals = pd.read_csv(tmp_path / "dvclive" / "sft" / "plots" / "metrics" / "eval" / "loss.tsv", sep="\t")
    assert losses.step.iloc[-1] == 30 and evals.step.tolist()[:2] == [15, 30]


def test_length_grouped_batches_pad_less_than_random_ones():
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from negopt.core.params import Sft
    from negopt.policy.sft import LengthGroupedTrainer, trainer_class

    assert trainer_class(Sft()) is LengthGroupedTrainer  # the default groups
    assert trainer_class(Sft(group_by_length=False)) is Seq2SeqTrainer
    # 256 rows whose source + target lengths are 2..257, shuffled: batches of 8
    gen = torch.Generator().manual_seed(0)
    lengths = (torch.randperm(256, generator=gen) + 2).tolist()
    features = [{"input_ids": [5] * (n // 2), "labels": [6] * (n - n // 2)} for n in lengths]
    trainer = LengthGroupedTrainer.__new__(LengthGroupedTrainer)
    trainer.args = Seq2SeqTrainingArguments(output_dir="unused", per_device_train_batch_size=8, use_cpu=True,
                                            report_to="none")
    trainer.train_dataset = features
    torch.manual_seed(0)
    sampler = trainer._get_train_sampler()
    order = list(sampler)
    assert sorted(order) == list(range(256))  # every row once per epoch
    sampler.set_epoch(1)
    second, drawn_from = list(sampler), sampler.drawn_from
    assert sorted(second) == list(range(256)) and second != order  # each epoch draws a new order
    # an uninterrupted run's orders are transformers' own (drawn from the global RNG)
    torch.manual_seed(0)
    theirs = LengthGroupedSampler(8, lengths=[len(f["input_ids"]) + len(f["labels"]) for f in features])
    assert list(theirs) == order and list(theirs) == second
    # a resumed run's sampler is new, and its Trainer restores the global RNG only after the resumed epoch's
    # order is drawn: the saved state of that epoch gives it back, whatever the global RNG holds
    torch.manual_seed(1)
    trainer.resumed = drawn_from
    resumed = trainer._get_train_sampler()
    resumed.set_epoch(1)
    assert drawn_from[0] == 1 and list(resumed) == second
    torch.manual_seed(0)  # another epoch (a resume at an epoch's end) draws from the restored global RNG
    resumed.set_epoch(0)
    assert list(resumed) == order
    batches = [[lengths[i] for i in order[b:b + 8]] for b in range(0, 256, 8)]
    padded = sum(8 * max(b) for b in batches) / sum(lengths)
    shuffled = [lengths[b:b + 8] for b in range(0, 256, 8)]  # lengths is a random permutation: random batches
    padded_random = sum(8 * max(b) for b in shuffled) / sum(lengths)
    # sorted within megabatches of 50 batches (all 256 rows here): the grouped batches pad ~1.1x, random ones ~1.8x
    assert padded < 1.2 and padded_random > 1.5
    assert max(batches[0]) == max(lengths)  # transformers puts the longest batch first (memory errors show early)
