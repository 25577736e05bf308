"""The tiny T5 builder and the policy loader (offline, in a temp folder)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from negopt.models.t5 import build_tiny_t5, load_policy

TEXTS = [f"photo of a red car number {i}, sharp focus" for i in range(40)] + \
        [f"cartoon, painting, blurry, (worst quality:1.4) {i}" for i in range(40)]



@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return build_tiny_t5(TEXTS, tmp_path_factory.mktemp("t5") / "t5", vocab_size=400, seed=0)


def test_folder_loads_with_auto_classes(t5_dir):
    model = AutoModelForSeq2SeqLM.from_pretrained(t5_dir)
    tok = AutoTokenizer.from_pretrained(t5_dir)
    cfg = model.config
    assert (cfg.d_model, cfg.d_ff, cfg.d_kv, cfg.num_heads) == (128, 512, 32, 4)
    assert (cfg.num_layers, cfg.num_decoder_layers, cfg.feed_forward_proj, cfg.dropout_rate) == (3, 3, "relu", 0.0)
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (0, 1, 0)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert cfg.vocab_size == len(tok) <= 400  # a tiny corpus runs out of merges before 400


def test_tokenizer_normalises_appends_eos_and_never_unk(t5_dir):
    tok = AutoTokenizer.from_pretrained(t5_dir)
    ids = tok("ＰＨＯＴＯ of a Cat 1999 ✨")["input_ids"]
    assert ids[-1] == 1 and ids.count(1) == 1  # exactly one </s>, at the end
    assert 2 not in ids  # byte-level: unseen characters (emoji, digits) still have tokens
    # NFKC folds full-width letters, then everything is lower-cased
    assert tok.decode(ids, skip_special_tokens=True).strip() == "photo of a cat 1999 ✨"


def test_same_seed_same_weights_other_seed_differs(t5_dir, tmp_path):
    again = build_tiny_t5(TEXTS, tmp_path / "again", vocab_size=400, seed=0)
    other = build_tiny_t5(TEXTS, tmp_path / "other", vocab_size=400, seed=1)
    w = {p.name: AutoModelForSeq2SeqLM.from_pretrained(p).shared.weight for p in (t5_dir, again, other)}
    assert torch.equal(w[t5_dir.name], w["again"])
    assert not torch.equal(w[t5_dir.name], w["other"])


def test_load_policy_generates_and_moves_to_device(t5_dir):
    model, tok = load_policy(str(t5_dir), torch.device("cpu"))
    enc = tok(["photo of a car"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and out[0, 0].item() == 0  # decoding starts from pad = decoder_start
    assert out.shape[1] <= 6


def test_load_policy_missing_local_folder_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro models"):
        load_policy(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="dvc repro sft"):
        load_policy("models/sft-that-does-not-exist")


def test_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no texts"):
        build_tiny_t5([], tmp_path / "t5")


def test_phrase_pretokenizer_learns_whole_phrases_and_round_trips(tmp_path):
    # the phrases repeat 120 times: merging across spaces, a phrase with its comma becomes one token
    texts = [f"cartoon, painting, blurry, (worst quality:1.4), lowres {i}" for i in range(40)] * 3
    phrase = AutoTokenizer.from_pretrained(build_tiny_t5(texts, tmp_path / "p", vocab_size=400, pretokenizer="phrase"))
    word = AutoTokenizer.from_pretrained(build_tiny_t5(texts, tmp_path / "w", vocab_size=400, pretokenizer="word"))
    text = "cartoon, painting, blurry, (worst quality:1.4), lowres 7"
    p_ids, w_ids = phrase(text)["input_ids"], word(text)["input_ids"]
    assert phrase.convert_ids_to_tokens(p_ids)[:4] == ["cartoon,Ġ", "painting,Ġ", "blurry,Ġ", "(worstĠquality:1.4),Ġ"]
    assert len(p_ids) < len(w_ids)
    for tok in (phrase, word):  # decoding gives the normalised text back, spaces and commas included
        assert tok.decode(tok(text + ", new  words")["input_ids"], skip_special_tokens=True).strip() == \
            text + ", new  words"


def test_unknown_pretokenizer_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="t5_pretokenizer"):
        build_tiny_t5(TEXTS, tmp_path / "x", vocab_size=400, pretokenizer="chars")
