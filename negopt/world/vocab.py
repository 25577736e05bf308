"""The world's text vocabulary and its CLIP tokenizer: one token per word the world's texts use.

The tokenizer is transformers' ``CLIPTokenizer`` (the class Stable Diffusion uses), its BPE trained on
the world's words (:func:`world_words`) until every one of them is a single token; every byte (and
byte + ``</w>``) stays in the vocabulary, so any other text (digits, punctuation, a word the world never
uses) still encodes, byte by byte. Special tokens: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1 (also
the padding), as in :func:`negopt.models.tiny.build_sd_tokenizer`, which builds it.
"""

from __future__ import annotations

import re

from negopt.world.defects import SPECS
from negopt.world.grammar import BACKGROUND, COUNT_WORDS, FOREGROUND, SHAPES
from negopt.world.scenes import FILLER_WORDS
from negopt.world.users import GENERIC_LISTS, PROMPT_PREFIXES

MAX_LENGTH = 48  # tokens, with start and end; the pipelines pad and truncate to it


def world_words() -> list[str]:
    """Every word of the grammar, the defect words, filler and the users' lists, sorted (no digits:
    CLIP's pre-tokeniser splits them into single characters, which are bytes already)."""
    phrases = [*COUNT_WORDS.values(), *FOREGROUND, *BACKGROUND, *SHAPES, *(s + "s" for s in SHAPES),
               "on", "a", "background", *FILLER_WORDS, *PROMPT_PREFIXES,
               *(w for spec in SPECS.values() for w in spec.words), *(t for lst in GENERIC_LISTS for t in lst)]
    return sorted({w for p in phrases for w in re.findall(r"[a-z]+", p.lower())})


def build_world_tokenizer(max_length: int = MAX_LENGTH):
    """A ``CLIPTokenizer`` in which each of :func:`world_words` is one token; ``model_max_length`` set."""
    from negopt.models.tiny import build_sd_tokenizer

    words = world_words()
    # each word once per line, many lines: BPE merges the most frequent pairs, and equal counts make it
    # merge every word through to one token before the vocabulary runs out
    corpus = [" ".join(words)] * 20
    tokenizer = build_sd_tokenizer(corpus, vocab_size=4096, max_length=max_length)
    split = [w for w in words if len(tokenizer.tokenize(w)) != 1]
    if split:
        raise RuntimeError(f"build_world_tokenizer: words not one token each: {split}")
    return tokenizer
