"""The methods generate compares: one function per method, registered by name, each turning the prompts into
one negative per prompt.

A method is ``fn(inputs: MethodInputs) -> list[str]`` registered with :func:`method` under one of the names the
params schema declares (``negopt.core.params.METHODS``: what ``generate.methods`` and ``compare.candidates`` /
``baselines`` accept); generate calls every method through :func:`negatives_of`. A method imports what it needs
when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negopt.core.params import METHODS as SCHEMA_METHODS


@dataclass
class MethodInputs:
    """What a method may read: the run's params, the prompts with their human negatives (``""`` where a prompt
    file has none), their evaluation seeds (a search must not select on them), the device, the pipeline (loaded
    on first use) and ``reports``, where a method that searches records what its search cost."""

    params: Any
    prompts: list[str]
    ground_truth: list[str]
    seeds: list[list[int]]
    device: Any = None
    pipeline: Callable[[], Any] | None = None
    reports: dict[str, dict] = field(default_factory=dict)


MethodFn = Callable[[MethodInputs], list[str]]

#: name -> method, in registration order (the order of the default ``generate.methods``)
METHODS: dict[str, MethodFn] = {}
#: methods whose negatives come from a trained model folder: name -> the paths.* key of that folder
MODEL_FOLDERS: dict[str, str] = {}


def method(name: str, model: str = "") -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn`` as the method ``name``; ``model`` names the ``paths`` key of the trained model
    it reads (``sft`` / ``rl``), so generate can check the folder before any work."""

    if name not in SCHEMA_METHODS:
        raise ValueError(f"method {name!r} is not in negopt.core.params.METHODS: add it there so params accept it")

    def register(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        if model:
            MODEL_FOLDERS[name] = model
        return fn

    return register


def negatives_of(name: str, inputs: MethodInputs) -> list[str]:
    """The method's negative for each prompt (one per prompt, in order)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    negatives = list(METHODS[name](inputs))
    if len(negatives) != len(inputs.prompts):
        raise ValueError(f"method {name!r} gave {len(negatives)} negatives for {len(inputs.prompts)} prompts")
    return negatives


@method("none")
def no_negative(inputs: MethodInputs) -> list[str]:
    """No negative prompt: the pipeline's unconditional embedding of ""."""
    return [""] * len(inputs.prompts)


@method("generic")
def generic(inputs: MethodInputs) -> list[str]:
    """One generic list for every prompt (``generate.generic_negative``)."""
    return [inputs.params.generate.generic_negative] * len(inputs.prompts)


@method("ground_truth")
def ground_truth(inputs: MethodInputs) -> list[str]:
    """The negative the prompt's author wrote."""
    return list(inputs.ground_truth)


@method("retrieval")
def retrieval(inputs: MethodInputs) -> list[str]:
    """The negative of the most similar training prompt (TF-IDF over the train split)."""
    from negopt.data.splits import read_split
    from negopt.policy.retrieval import RetrievalIndex

    train = read_split(inputs.params.paths.clean, "train")
    return RetrievalIndex(train.prompt.tolist(), train.negative_prompt.tolist()).predict(inputs.prompts)


@method("best_of_n", model="sft")
def best_of_n(inputs: MethodInputs) -> list[str]:
    """The best of n SFT samples under the RL reward, selected on seeds no evaluation uses (its cost is reported)."""
    from negopt.compare.best_of_n import best_of_n_negatives

    kept, inputs.reports["best_of_n"] = best_of_n_negatives(inputs.params, inputs.prompts, inputs.seeds,
                                                            inputs.pipeline(), inputs.device)
    return kept


def _deployed(inputs: MethodInputs, folder: str) -> list[str]:
    from negopt.policy.decode import NegativePromptGenerator

    return NegativePromptGenerator.from_params(Path(folder), inputs.params, inputs.device)(inputs.prompts)


@method("sft", model="sft")
def sft(inputs: MethodInputs) -> list[str]:
    """The SFT model's deployed decode."""
    return _deployed(inputs, inputs.params.paths.sft)


@method("rl", model="rl")
def rl(inputs: MethodInputs) -> list[str]:
    """The RL model's deployed decode."""
    return _deployed(inputs, inputs.params.paths.rl)
