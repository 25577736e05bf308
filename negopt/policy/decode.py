"""The deployed decode: how a trained policy turns prompts into negative prompts, in one place.

Every consumer goes through :func:`decode_negatives` with the ``decode`` params section: the sft
stage's ROUGE, the rl stage's test reward, generate's ``sft`` / ``rl`` methods, ``negopt suggest``
and the Python API (:class:`NegativePromptGenerator`). So every number describes the negatives a
user gets. (RL *rollouts* sample with ``sampling.temperature`` / ``sampling.top_p``: that is the training
distribution, whose log-probs the update needs, not the deployed decode.)

The input format (``sft.task_prefix`` + prompt, truncated to ``sft.max_source_length`` tokens) is part
of a trained model: ``save_pretrained`` writes it, with the decode, to ``negopt.json`` beside the weights.
A retrieval-augmented model (``sft.retrieval.k`` > 0) also reads the negatives of the prompt's nearest
training prompts (:class:`Retrieval`); its index is saved in the same folder (negopt/policy/retrieval.py) and
:func:`format_sources` builds the source for SFT, the RL rollouts and this decode alike, so RL
optimises the model a user deploys. A model whose sft stage fitted a rerank (negopt/policy/rerank.py) also answers
with the best of its own negative and its neighbours' negatives under the saved weights, here, for every consumer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from negopt.core.params import Decode, Sft
from negopt.policy.nucleus import nucleus_kwargs
from negopt.policy.rerank import RerankWeights, choose, table
from negopt.policy.retrieval import RetrievalIndex

_INPUT = Sft()  # the input-format defaults (task prefix, source length) live in the params schema

CONFIG = "negopt.json"  # input format + deployed decode, saved with every trained policy


CONTEXT_SEP, PROMPT_SEP = " | ", " || prompt: "


def format_source(prompt: str, task_prefix: str, context: Sequence[str] = ()) -> str:
    """The encoder input used everywhere (SFT, RL, decode): the task prefix, then the prompt.

    With ``context`` (the negatives of the nearest training prompts, best first) the source is
    ``prefix + c1 | c2 || prompt: prompt``: the neighbours come first so that truncation to
    ``max_source_length`` cuts the tail of a long prompt, not the negative the model mostly copies.
    """
    if not context:
        return f"{task_prefix}{prompt.strip()}"
    return f"{task_prefix}{CONTEXT_SEP.join(c.strip() for c in context)}{PROMPT_SEP}{prompt.strip()}"


@dataclass(frozen=True)
class Retrieval:
    """A trained model's retrieval: the training index, how many neighbours' negatives a source holds (``k``, may
    be 0) and the fitted rerank of the decode's output against the neighbours' negatives (negopt/policy/rerank.py), if any."""

    index: RetrievalIndex
    k: int
    rerank: RerankWeights | None = None

    def context(self, prompts: Sequence[str], groups=None) -> list[list[str]]:
        """The negatives of each prompt's ``k`` nearest training prompts (``groups``: see ``RetrievalIndex.context``)."""
        return self.index.context(prompts, self.k, groups)


def format_sources(prompts: Sequence[str], task_prefix: str, retrieval: Retrieval | None = None,
                   contexts: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Sources for ``prompts``: plain, or with each prompt's retrieved ``contexts`` (computed here when not given)."""
    if contexts is None:
        contexts = retrieval.context(prompts) if retrieval is not None else [()] * len(prompts)
    return [format_source(p, task_prefix, c) for p, c in zip(prompts, contexts, strict=True)]


def load_retrieval(path: str | Path) -> Retrieval | None:
    """The retrieval saved with the model in folder ``path`` (``negopt.json``'s ``retrieval_k`` and ``rerank`` + the
    index), if either is set."""
    cfg_path = Path(path) / CONFIG
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    k, rerank = cfg.get("retrieval_k", 0), cfg.get("rerank")
    if not k and not rerank:
        return None
    if not RetrievalIndex.saved_in(path):
        raise FileNotFoundError(f"{path}: {CONFIG} says retrieval_k={k}, rerank={rerank} but the retrieval index is "
                                "missing; re-run `dvc repro sft`")
    return Retrieval(RetrievalIndex.load(path), k, RerankWeights.from_dict(rerank) if rerank else None)


_SAVED: dict[tuple[str, int], Retrieval | None] = {}


def saved_retrieval(path: str | Path) -> Retrieval | None:
    """:func:`load_retrieval`, loaded once per folder version (the rl stage formats every rollout with it)."""
    cfg_path = Path(path) / CONFIG
    key = (str(Path(path).resolve()), cfg_path.stat().st_mtime_ns if cfg_path.is_file() else 0)
    if key not in _SAVED:
        _SAVED[key] = load_retrieval(path)
    return _SAVED[key]


def generate_kwargs(decode: Decode, num: int = 1) -> dict:
    """``model.generate`` settings for ``num`` negatives per prompt under ``decode``.

    Greedy / beam search: ``num`` best beams (``num_beams >= num``). Sampling: ``num`` nucleus samples
    at ``decode.temperature`` / ``decode.top_p`` (top-k off). The repetition penalty applies to both:
    greedy output of a small model loops without it and loses most of its ROUGE-L. Plain sampling
    goes through ``NucleusWarper`` (the same samples, without the argsort: negopt/policy/nucleus.py).
    """
    kw = {"max_new_tokens": decode.max_new_tokens, "repetition_penalty": decode.repetition_penalty,
          "do_sample": decode.do_sample, "num_return_sequences": num}
    if decode.do_sample and decode.num_beams == 1:
        kw |= {"num_beams": 1, **nucleus_kwargs(decode.temperature, decode.top_p)}
    elif decode.do_sample:  # beam sampling keeps transformers' warpers (they keep >= 2 tokens for the beams)
        kw |= {"num_beams": decode.num_beams, "top_p": decode.top_p, "temperature": decode.temperature, "top_k": 0}
    else:
        kw["num_beams"] = max(decode.num_beams, num)
    return kw


@torch.no_grad()
def decode_negatives(model, tokenizer, prompts: Sequence[str], decode: Decode, task_prefix: str,
                     max_source_length: int, num: int = 1, seed: int = 0, batch_size: int = 64,
                     progress: bool = False, retrieval: Retrieval | None = None) -> list[str]:
    """``num`` negatives per prompt, prompt-major (``[p0 x num, p1 x num, ...]``), stripped.

    ``retrieval``: the model's own (``load_retrieval``), for a retrieval-augmented model; else None.

    Sampling is seeded with ``seed`` inside a forked RNG, so it neither depends on nor disturbs the
    caller's random state; greedy and beam search are deterministic anyway.
    """
    was_training = model.training
    model.eval()
    out: list[str] = []
    device = getattr(model, "device", torch.device("cpu"))
    cuda = [device] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for i in tqdm(range(0, len(prompts), batch_size), desc="decode", disable=not progress):
            batch = format_sources(prompts[i:i + batch_size], task_prefix, retrieval)
            enc = tokenizer(batch, max_length=max_source_length, truncation=True, padding=True,
                            return_tensors="pt").to(device)
            ids = model.generate(**enc, **generate_kwargs(decode, num))
            own = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
            if retrieval is not None and retrieval.rerank is not None:
                w = retrieval.rerank
                c = table(model, tokenizer, prompts[i:i + batch_size], batch,
                          [own[j:j + num] for j in range(0, len(own), num)], retrieval.index, w.neighbours,
                          max_source_length, decode.max_new_tokens, logprob=w.logprob != 0)
                own = [t for row in choose(c, w, num) for t in row]
            out += own
    model.train(was_training)
    return out


class NegativePromptGenerator:
    """A trained policy with its input format and deployed decode: ``generator(prompts) -> negatives``.

    >>> gen = NegativePromptGenerator.from_pretrained("models/rl")
    >>> gen(["portrait photo of an old fisherman"])          # one negative per prompt
    >>> pipe(**gen.pipeline_kwargs(["a castle on a hill"]))   # any diffusers pipeline with negative_prompt
    >>> pipe(**gen.pipeline_kwargs(["a castle"], pipe, "a1111"))  # the negatives read as A1111 reads them
    """

    def __init__(self, model, tokenizer, decode: Decode | None = None, task_prefix: str = _INPUT.task_prefix,
                 max_source_length: int = _INPUT.max_source_length, retrieval: Retrieval | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.decode = decode or Decode()
        self.task_prefix, self.max_source_length = task_prefix, max_source_length
        self.retrieval = retrieval

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None,
                        decode: Decode | None = None) -> NegativePromptGenerator:
        """Load a policy folder; its ``negopt.json`` gives the input format and decode (``decode`` overrides)."""
        from negopt.models.t5 import load_policy

        model, tokenizer = load_policy(str(path), torch.device(device) if device is not None else None)
        cfg_path = Path(path) / CONFIG
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        saved = Decode(**cfg["decode"]) if "decode" in cfg else None
        return cls(model, tokenizer, decode or saved, cfg.get("task_prefix", _INPUT.task_prefix),
                   cfg.get("max_source_length", _INPUT.max_source_length), load_retrieval(path))

    @classmethod
    def from_params(cls, path: str | Path, params, device: torch.device | None = None) -> NegativePromptGenerator:
        """Load a policy folder with the project's input format (``sft``) and decode (``decode``) params.

        The retrieval is the folder's own (its index and ``retrieval_k``): it is part of the trained model.
        """
        from negopt.models.t5 import load_policy

        model, tokenizer = load_policy(str(path), device)
        return cls(model, tokenizer, params.decode, params.sft.task_prefix, params.sft.max_source_length,
                   saved_retrieval(path))

    def save_pretrained(self, path: str | Path) -> None:
        """Weights, tokenizer, ``negopt.json`` and any retrieval index into ``path`` (a folder; the caller
        makes it atomic)."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        cfg = {"task_prefix": self.task_prefix, "max_source_length": self.max_source_length,
               "decode": self.decode.model_dump(), "retrieval_k": self.retrieval.k if self.retrieval else 0,
               "rerank": self.retrieval.rerank.to_dict() if self.retrieval and self.retrieval.rerank else None}
        if self.retrieval is not None:
            self.retrieval.index.save(path)
        (Path(path) / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")

    def __call__(self, prompts: str | Sequence[str], num: int = 1, seed: int = 0, batch_size: int = 64,
                 progress: bool = False) -> list[str]:
        """Negatives for ``prompts`` (a string counts as one prompt): ``num`` per prompt, prompt-major."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return decode_negatives(self.model, self.tokenizer, prompts, self.decode, self.task_prefix,
                                self.max_source_length, num=num, seed=seed, batch_size=batch_size,
                                progress=progress, retrieval=self.retrieval)

    def sources(self, prompts: Sequence[str]) -> list[str]:
        """The encoder input this generator feeds the model for ``prompts`` (what SFT and RL train on)."""
        return format_sources(list(prompts), self.task_prefix, self.retrieval)

    def pipeline_kwargs(self, prompts: str | Sequence[str], pipe=None, syntax: str = "literal") -> dict:
        """The text arguments of one diffusers text-to-image pipeline call for ``prompts`` and their negatives.

        Without ``pipe``: ``{"prompt": [...], "negative_prompt": [...]}``, the strings, which any pipeline reads
        literally (brackets as text, tokens past its window cut). With ``pipe``: what negopt's renderers give it,
        from ``negopt.images.render.text_inputs`` under ``syntax`` (``literal`` | ``a1111``, a profile's
        ``prompt_syntax``): embeddings for SD 1.x / 2.x, and under ``a1111`` for SDXL too (with its pooled
        embeddings), every row padded to the longest so that one call takes them all. ``a1111`` needs ``pipe``.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if pipe is None:
            if syntax != "literal":
                raise ValueError(f"pipeline_kwargs(syntax={syntax!r}) embeds the text: pass the pipeline as pipe=")
            return {"prompt": prompts, "negative_prompt": self(prompts)}
        from negopt.images.render import text_inputs

        ((_, kwargs),) = text_inputs(pipe, prompts, self(prompts), syntax, one_call=True)
        return kwargs
