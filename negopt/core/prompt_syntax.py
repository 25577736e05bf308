"""Prompts and negatives as AUTOMATIC1111 / ComfyUI users write them: read, and counted. No torch at import.

Real negatives are written for A1111: ``(bad hands:1.4)`` weights, ``((x))`` / ``[x]`` emphasis, text far past
CLIP's 75-token window and names of textual-inversion embeddings (``easynegative``). diffusers'
``StableDiffusionPipeline`` reads all of it as plain text and truncates. This module holds what the text side
needs, in one place:

- :func:`parse_a1111`: a text as A1111 reads it, ``[(fragment, weight), ...]`` (A1111's own rules, below); the
  images side (``negopt.images.render``) hands the fragments to compel, which weights and chunks the embeddings;
- :func:`syntax_counts`: the one count of how texts are written (weights, emphasis, brackets, LoRA tags, tokens
  past the window, embedding names), for ``metrics/data.json``, the SFT and RL metrics and generate's;
- :data:`KNOWN_EMBEDDINGS` and the name matching (:func:`embedding_pattern`, :func:`spell_embeddings`).

A1111's reading (modules/prompt_parser.py, ``parse_prompt_attention``): ``(x)`` multiplies x's weight by 1.1,
``[x]`` divides it by 1.1, ``(x:w)`` multiplies it by w; brackets nest (``((x))`` = 1.1^2 = 1.21); ``\\(`` is a
literal bracket; an unclosed bracket runs to the end of the text; adjacent fragments of equal weight merge.
``<lora:name:w>`` (an extra network) is removed from the text, as A1111 does before encoding. Not read here:
prompt editing (``[a:b:0.5]``, read as emphasis of its text), alternation (``[a|b]``) and ``BREAK`` (text).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

WINDOW = 75  # CLIP's 77 positions less the start and end tokens: the text one window holds
EMPHASIS = 1.1  # A1111's factor for one round bracket (a square bracket divides by it)

#: Textual-inversion embeddings that real negatives name (counted on the shared DFLIP-3K pairs), lower case, as
#: the CLIP tokenizer (which lower-cases) reads them. A profile's ``textual_inversions`` may name others.
KNOWN_EMBEDDINGS: tuple[str, ...] = (
    "easynegative", "easynegativev2", "bad-hands-5", "ng_deepnegative_v1_75t", "bad-artist", "bad-artist-anime",
    "badhandv4", "bad_prompt_version2", "bad_prompt", "verybadimagenegative_v1.3", "bad-image-v2-39000",
    "bad-picture-chill-75v", "deepnegative", "badhandsv5-neg", "unspeakable-horrors-composition-4v",
    "negative_hand-neg", "baddream", "unrealisticdream", "fastnegativev2", "negativexl_d",
)

_ATTENTION = re.compile(r"""
    \\[()\[\]\\] | \\        # an escaped bracket or backslash: literal text
  | \( | \[                   # open a round / square bracket
  | :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # a weight, closing a round bracket
  | \) | \]                   # close one
  | [^\\()\[\]:]+ | :         # text; a colon that is not a weight
""", re.X)
_EXTRA_NETWORK = r"<\w+:[^>]+>"  # <lora:name:0.8>, <hypernet:...>: A1111 loads these, and removes them from the text


def parse_a1111(text: str) -> list[tuple[str, float]]:
    """``text`` as A1111 reads it: ``[(fragment, weight), ...]`` in order, adjacent equal weights merged; the
    empty text is ``[("", 1.0)]``. Weights are rounded to 10 decimals, so that ``((x))`` and ``(x:1.21)`` (and
    ``[x]`` and ``(x:0.9090909091)``) give the same number, as they mean the same thing."""
    out: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in out[start:]:
            part[1] *= factor

    for m in _ATTENTION.finditer(re.sub(_EXTRA_NETWORK, "", text)):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            out.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(out))
        elif token == "[":
            square_open.append(len(out))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:  # text, a colon, an unmatched closing bracket or an orphan weight
            out.append([token, 1.0])
    for start in round_open:  # unclosed brackets run to the end
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    merged: list[tuple[str, float]] = []
    for fragment, weight in out:
        weight = round(weight, 10)
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + fragment, weight)
        elif fragment:
            merged.append((fragment, weight))
    return merged or [("", 1.0)]


# --- embedding names -------------------------------------------------------------------------------------


def embedding_pattern(*names: str) -> str:
    """A regex (RE2, for Arrow's kernels, and Python) for any of ``names`` as a whole word, any case: not inside a
    longer name (``bad-artist`` is not found in ``bad-artist-anime``); group 2 is the name."""
    return rf"(?i)(^|[^\w-])({'|'.join(map(re.escape, names))})($|[^\w-])"


def spell_embeddings(text: str, names: Iterable[str]) -> str:
    """``text`` with every loaded embedding name spelt as the token it was loaded under (``EasyNegative`` ->
    ``easynegative``): the tokenizer matches a name in any case, but diffusers expands a multi-vector embedding
    (``name name_1 ...``) only where the text spells it exactly, so ``EasyNegative`` would get one vector of eight."""
    for name in names:  # the boundaries of embedding_pattern as look-arounds: "A,A" spells both
        text = re.sub(rf"(?i)(?<![\w-]){re.escape(name)}(?![\w-])", name, text)
    return text


# --- counting --------------------------------------------------------------------------------------------

_WEIGHTED = r"\([^()]*:\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)"  # (x:1.4)
_EMPHASIS = r"\(\(|\[[^\[\]]*\]"  # ((x)) or [x]; a single (x) is also 1.1 in A1111, counted under brackets
_BRACKETS = r"[()\[\]]"  # any bracket: a1111 reads it as syntax, literal as text


# CLIP's pre-tokenisation (open_clip's SimpleTokenizer, transformers' CLIPTokenizer): a contraction, a run of
# letters, one digit, or a run of anything else but whitespace; in Python's re, letters are [^\W\d_]
_CLIP_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\w\s]|_)+")


@functools.cache
def _clip_bpe():
    """CLIP's BPE (SD's text tokenizer) from open_clip's shipped vocabulary, with the ``tokenizers`` library (no
    torch import): one pre-token in, its tokens out (``</w>`` at its end)."""
    import gzip

    from tokenizers import Tokenizer, models, pre_tokenizers

    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (it imports torch)
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), "<|endoftext|>"]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="</w>", fuse_unk=False, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return tok


def clip_token_counts(texts: Sequence[str]) -> np.ndarray:
    """CLIP tokens of each text, the start and end tokens not counted (more than :data:`WINDOW`: past the window).

    The tokens of a text are the sum of its whitespace-separated words' (no CLIP pre-token spans whitespace), so
    each distinct word is tokenised once: 256k texts take about a second, not minutes.
    """
    import unicodedata

    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array([t if isinstance(t, str) else "" for t in texts], type=pa.large_string())
    words = pc.utf8_split_whitespace(pc.utf8_lower(arr))  # CLIP lower-cases (and applies NFC) before splitting
    enc = pc.dictionary_encode(pc.list_flatten(words))
    pieces = [_CLIP_PIECES.findall(unicodedata.normalize("NFC", w)) for w in enc.dictionary.to_pylist()]
    distinct = list(dict.fromkeys(p for ps in pieces for p in ps))
    tokens = dict(zip(distinct, (len(e.ids) for e in _clip_bpe().encode_batch(distinct, add_special_tokens=False)),
                      strict=True))
    per_word = np.array([sum(tokens[p] for p in ps) for ps in pieces], dtype=np.int64)
    running = np.r_[0, np.cumsum(per_word[enc.indices.to_numpy(zero_copy_only=False)])]
    offsets = words.offsets.to_numpy()
    return running[offsets[1:]] - running[offsets[:-1]]


def syntax_counts(texts: Sequence[str], names: Iterable[str] = KNOWN_EMBEDDINGS) -> dict:
    """How ``texts`` are written, as shares of the texts (4 decimals): ``weighted`` (an A1111 ``(x:w)``),
    ``emphasis`` (``((x))`` or ``[x]``), ``brackets`` (any round or square bracket: what ``a1111`` reads as syntax
    and ``literal`` as text), ``extra_networks`` (a ``<lora:...>`` tag), ``over_window`` (more than 75 CLIP
    tokens), ``embeddings`` (naming one of ``names``); ``tokens_median`` and ``tokens_p90``; ``embedding_rows``:
    the texts naming each embedding, most named first (names no text uses left out)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array([t if isinstance(t, str) else "" for t in texts], type=pa.large_string())
    n = len(arr)

    def rows(pattern: str, where: pa.Array = arr) -> np.ndarray:
        return pc.match_substring_regex(where, pattern).to_numpy(zero_copy_only=False).astype(bool)

    def share(mask: np.ndarray) -> float:
        return round(float(mask.mean()), 4) if n else 0.0

    tokens = clip_token_counts(texts)
    names = list(dict.fromkeys(name.lower() for name in names))
    named = rows(embedding_pattern(*names)) if names else np.zeros(n, dtype=bool)  # one pass, then
    candidates = arr.filter(pa.array(named))  # each name only where some name is
    per_name = {name: int(rows(embedding_pattern(name), candidates).sum()) for name in names} if named.any() else {}
    return {
        "rows": n, "weighted": share(rows(_WEIGHTED)), "emphasis": share(rows(_EMPHASIS)),
        "brackets": share(rows(_BRACKETS)), "extra_networks": share(rows(_EXTRA_NETWORK)),
        "over_window": share(tokens > WINDOW),
        "tokens_median": round(float(np.median(tokens)), 1) if n else 0.0,
        "tokens_p90": round(float(np.quantile(tokens, 0.9)), 1) if n else 0.0,
        "embeddings": share(named),
        "embedding_rows": dict(sorted(((k, v) for k, v in per_name.items() if v), key=lambda kv: (-kv[1], kv[0]))),
    }


def unloaded_embeddings(counts: dict, loaded: Iterable[str]) -> dict[str, int]:
    """``{name: texts}`` of the embeddings ``counts`` (:func:`syntax_counts`) found that are not ``loaded``: each is
    read as its few plain tokens, not as what its author meant."""
    have = {name.lower() for name in loaded}
    return {name: k for name, k in counts["embedding_rows"].items() if name not in have}


def unloaded_warning(what: str, missing: dict[str, int]) -> str | None:
    """One line for a stage's warnings when ``what`` names embeddings the pipeline has not loaded; None if none."""
    if not missing:
        return None
    names = ", ".join(f"{name} ({k})" for name, k in missing.items())
    return (f"{what} name textual-inversion embeddings the pipeline has not loaded, read as plain text: {names}; "
            "load them with models.<profile>.textual_inversions (docs/MODELS.md, \"Prompt syntax\")")
