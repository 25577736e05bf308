"""The policy: a T5 seq2seq model that maps a prompt to a negative prompt.

`build_tiny_t5` makes the offline tiny profile's policy (a byte-level BPE tokenizer trained on the
corpus plus a small random T5); `load_policy` loads that folder or a hub id with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from negopt.core.errors import MissingInputError
from negopt.core.io import atomic_dir

# T5's id layout: decoder_start = pad = 0, eos = 1, unk = 2 (the model config relies on these ids).
SPECIALS = ("<pad>", "</s>", "<unk>")

# No dropout: on CPU torch.dropout's mask sampling is a large share of an SFT step, and without it SFT scores
# the same on the sample and within run-to-run noise on the real pairs (docs/EXPERIMENTS.md, "SFT against two
# baselines"; bench/bench_sft_step.py in bench/RESULTS.md). RL runs the policy in eval mode, without dropout
# anyway.
TINY_T5 = dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=3, num_decoder_layers=3,
               feed_forward_proj="relu", dropout_rate=0.0, tie_word_embeddings=True)


PRETOKENIZERS = ("word", "phrase")


def _pre_tokenizer(kind: str):
    """``word``: GPT-2's byte-level split (words, punctuation runs). ``phrase``: split only after each comma.

    A negative prompt is a comma-separated list of phrases that users copy whole ("(worst quality,
    low quality:1.4), watermark, ..."), so with ``phrase`` a BPE can learn a frequent phrase with its
    comma as one token: on the shared real pairs a test negative is then a fraction of its ``word`` length
    in tokens, so copying a retrieved negative is a short sequence. On the built-in sample it costs most
    of SFT's ROUGE, so ``word`` is the default (docs/EXPERIMENTS.md, "Teaching the tiny T5 to copy: the
    real-pairs recipe").
    """
    if kind == "word":
        return pre_tokenizers.ByteLevel(add_prefix_space=True)
    if kind == "phrase":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\s*,\s*"), behavior="merged_with_previous"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ValueError(f"models.tiny_build.t5_pretokenizer: expected one of {PRETOKENIZERS}, got {kind!r}")


def _train_bpe(texts: Iterable[str], vocab_size: int, pretokenizer: str = "word") -> Tokenizer:
    """Byte-level BPE: every byte is in the alphabet, so no text ever maps to <unk>."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = _pre_tokenizer(pretokenizer)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # T5 appends </s> to every encoded sequence (source and target), so the model learns to stop.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def wrap_tokenizer(tok: Tokenizer, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer.

    Why PreTrainedTokenizerFast and not T5TokenizerFast: in transformers 5 `T5TokenizerFast` is an
    alias of `T5Tokenizer`, whose constructor always builds its own Unigram model (and adds 100
    sentinel tokens); it cannot carry a BPE. The generic fast tokenizer saves tokenizer.json as is,
    and AutoTokenizer reloads it bit-identically.
    """
    ids = [tok.token_to_id(s) for s in SPECIALS]
    if ids != [0, 1, 2]:
        raise ValueError(f"special token ids must be <pad>=0, </s>=1, <unk>=2 (T5 layout), got {ids}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=model_max_length, padding_side="right")


def build_tiny_t5(texts: list[str], out_dir: str | Path, vocab_size: int = 1000, seed: int = 0,
                  pretokenizer: str = "word") -> Path:
    """Train a BPE on `texts`, build a random tiny T5 (~1.5 M params), save both into `out_dir`.

    ``pretokenizer``: where the BPE may merge (:func:`_pre_tokenizer`; ``models.tiny_build.t5_pretokenizer``).

    The folder loads offline with `AutoModelForSeq2SeqLM.from_pretrained` / `AutoTokenizer.from_pretrained`.
    """
    if not texts:
        raise ValueError("build_tiny_t5: no texts to train the tokenizer on (is train.parquet empty?)")
    tokenizer = wrap_tokenizer(_train_bpe(texts, vocab_size, pretokenizer))
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      **TINY_T5)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def load_policy(name_or_path: str | Path, device: torch.device | None = None):
    """Load a seq2seq policy and its tokenizer from a local folder or a hub id.

    A path that looks local but does not exist fails with a message naming the fix, instead of
    transformers' hub lookup error.
    """
    name = str(name_or_path)
    if not name:
        raise ValueError("load_policy: empty model name; set models.<profile>.policy in params.yaml")
    local = Path(name)
    if not local.exists() and (name.startswith((".", "/")) or local.parts[0] in ("models", "checkpoints")):
        raise MissingInputError(
            f"policy {name!r} not found: build the tiny zoo (`dvc repro models`) or train it "
            "(`dvc repro sft`), or point params models.<profile>.policy at a hub id")
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSeq2SeqLM.from_pretrained(name)
    if device is not None:
        model = model.to(device)
    return model, tokenizer
