"""The replica's small parts, without building the 3.3 GB weights: tokenizers, hub-cache layout, stamp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import constants, snapshot_download, try_to_load_from_cache

from negopt.models import replica
from negopt.models.hub_cache import add_file, fake_commit, set_ref


def test_clip_tokenizer_gives_sd_ids(tmp_path):
    """SD 1.5's ids for a known sentence (REFERENCE.md), from the hub-format files alone."""
    from transformers import CLIPTokenizer

    folder = tmp_path / "tokenizer"
    replica.write_clip_tokenizer(folder)
    for rel, obj in replica.SD_FILES.items():
        if rel.startswith("tokenizer/"):
            (tmp_path / rel).write_text(json.dumps(obj))
    assert (folder / "merges.txt").read_text().startswith("#version: 0.2\n")
    tok = CLIPTokenizer.from_pretrained(folder)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77 and tok.pad_token_id == 49407 and len(tok) == 49408
    long = tok("cat " * 100, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(long) == 77 and long[-1] == 49407  # SD's 77-token truncation keeps the eos


def test_t5_tokenizer_has_t5s_layout_and_is_deterministic(tmp_path):
    from transformers import AutoTokenizer

    text = replica.t5_tokenizer_json()
    assert text == replica.t5_tokenizer_json()
    (tmp_path / "tokenizer.json").write_text(text)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(replica.T5_TOKENIZER_CONFIG))
    (tmp_path / "config.json").write_text(json.dumps(replica.T5_CONFIG))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tok).__name__ == "T5Tokenizer" and len(tok) == 32100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == 32099 and tok.convert_tokens_to_ids("<extra_id_99>") == 32000
    ids = tok("negative prompt: blurry, ugly").input_ids
    assert ids[-1] == 1 and 2 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "negative prompt: blurry, ugly"


def test_hub_cache_layout_resolves_through_huggingface_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    commit = fake_commit("org/name", "s")
    src = tmp_path / "x.json"
    src.write_text('{"a": 1}')
    link = add_file(cache, "org/name", commit, "sub/config.json", src)
    assert link.is_symlink() and not link.readlink().is_absolute()
    with pytest.raises(Exception):  # noqa: B017 - no ref yet: a half-built repo never resolves
        snapshot_download("org/name", local_files_only=True)
    set_ref(cache, "org/name", commit)
    assert (cache / "models--org--name" / "refs" / "main").read_text() == commit
    folder = snapshot_download("org/name", local_files_only=True)
    assert json.loads(Path(folder, "sub", "config.json").read_text()) == {"a": 1}
    assert try_to_load_from_cache("org/name", "sub/config.json") == f"{folder}/sub/config.json"


def test_stamp_decides_rebuild(tmp_path):
    assert not replica.replica_ready(tmp_path, 0)
    (tmp_path / "REPLICA.json").write_text(json.dumps(replica.stamp(0)))
    assert replica.replica_ready(tmp_path, 0) and not replica.replica_ready(tmp_path, 1)
