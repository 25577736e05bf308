"""Images per method for the comparison: the same test prompts and seeds, only the negative differs.

Prompts: ``generate.prompts`` (the clean test split, or a file: ``negopt.data.prompt_files``). Methods: ``none``
(empty negative), ``generic`` (``generate.generic_negative``), ``ground_truth`` (the prompt row's own
negative; skipped with a notice when the prompts carry none), ``retrieval`` (the negative of the most similar training prompt,
negopt/policy/retrieval.py), ``best_of_n`` (the best of n SFT samples under the RL reward, negopt/compare/best_of_n.py),
``sft`` / ``rl`` (the deployed decode of the trained models). The work is a
flat *plan* of items; its distinct (prompt, negative, seed) items, each rendered once for every method that
shares it, are cut into fixed batches; accelerate splits the *batches* between processes, so
every image is generated in the same batch whatever the process count, and a sharded run writes the
same files as a single process (each image also has its own seeded generator).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from negopt.compare.manifest import GENERATE_METRICS, MANIFEST
from negopt.core.errors import MissingInputError
from negopt.core.io import atomic_path, write_json, write_parquet
from negopt.core.params import METHODS, Params
from negopt.data.prompt_files import has_negatives, load_prompts

MODEL_METHODS = ("sft", "rl")  # methods whose negatives come from a trained model

# generate_fn(prompts, negatives, seeds) -> uint8 [N, 3, H, W]; injectable so the plan is testable without SD.
GenerateFn = Callable[[list[str], list[str], list[int]], torch.Tensor]


@dataclass(frozen=True)
class WorkItem:
    method: str
    prompt_idx: int
    prompt: str
    negative: str
    seed: int
    file: str  # relative to paths.images: <method>/<prompt_idx>_<seed>.png


def image_seed(seed: int, prompt_idx: int, j: int) -> int:
    """The j-th diffusion seed of a prompt: a hash of (seed, prompt_idx, j), stable when counts change."""
    return int(np.random.SeedSequence([seed, prompt_idx, j]).generate_state(1)[0] & 0x7FFFFFFF)


def prompt_seeds(seed: int, num_prompts: int, seeds_per_prompt: int) -> list[list[int]]:
    return [[image_seed(seed, i, j) for j in range(seeds_per_prompt)] for i in range(num_prompts)]


def usable_methods(methods: list[str], prompts: pd.DataFrame, source: str) -> list[str]:
    """``methods`` less ``ground_truth`` when the prompts carry no negatives (a prompt-only file), with a notice."""
    if "ground_truth" in methods and not has_negatives(prompts):
        print(f"generate: skipping 'ground_truth': generate.prompts={source} carries no negative prompts",
              file=sys.stderr)
        return [m for m in methods if m != "ground_truth"]
    return methods


def method_model_path(params: Params, method: str) -> Path:
    """The model a method's negatives come from: models/rl for rl, models/sft for sft and best_of_n."""
    return Path(params.paths.rl if method == "rl" else params.paths.sft)


def check_method_models(params: Params, methods: Sequence[str]) -> None:
    """Fail before any work if a model-based method has no trained model on disk."""
    problems = []
    for method in methods:
        if method not in (*MODEL_METHODS, "best_of_n"):
            continue
        path = method_model_path(params, method)
        model = "rl" if method == "rl" else "sft"
        if not (path / "config.json").exists():
            problems.append(
                f"generate.methods lists {method!r} but {path} (paths.{model}) holds no trained model: "
                f"run `dvc repro {model}`, or drop {method!r} from generate.methods"
            )
    if problems:
        raise MissingInputError("\n".join(problems))


def model_negatives(params: Params, method: str, prompts: list[str], device: torch.device) -> list[str]:
    """Negatives from models/sft or models/rl under the deployed decode (``negopt.policy.decode``)."""
    from negopt.policy.decode import NegativePromptGenerator

    return NegativePromptGenerator.from_params(method_model_path(params, method), params, device)(prompts)


def retrieval_negatives(clean_dir: str | Path, prompts: list[str]) -> list[str]:
    """The ``retrieval`` method: each prompt's nearest training prompt's negative (train split only)."""
    from negopt.data.splits import read_split
    from negopt.policy.retrieval import RetrievalIndex

    train = read_split(clean_dir, "train")
    return RetrievalIndex(train.prompt.tolist(), train.negative_prompt.tolist()).predict(prompts)


def method_negatives(
    method: str,
    prompts: list[str],
    ground_truth: list[str],
    generic: str,
    model_fn: Callable[[str, list[str]], list[str]] | None = None,
    retrieval_fn: Callable[[list[str]], list[str]] | None = None,
    search_fn: Callable[[list[str]], list[str]] | None = None,
) -> list[str]:
    """The negative prompt of each prompt under ``method``; ``model_fn(method, prompts)`` serves sft / rl,
    ``retrieval_fn(prompts)`` the retrieval baseline, ``search_fn(prompts)`` best_of_n (negopt/compare/best_of_n.py)."""
    if method == "none":
        return [""] * len(prompts)
    if method == "generic":
        return [generic] * len(prompts)
    if method == "ground_truth":
        return list(ground_truth)
    if method == "retrieval":
        if retrieval_fn is None:
            raise ValueError("method 'retrieval' needs a retrieval_fn to produce its negatives")
        return list(retrieval_fn(prompts))
    if method == "best_of_n":
        if search_fn is None:
            raise ValueError("method 'best_of_n' needs a search_fn to produce its negatives")
        return list(search_fn(prompts))
    if method in MODEL_METHODS:
        if model_fn is None:
            raise ValueError(f"method {method!r} needs a model_fn to produce its negatives")
        return list(model_fn(method, prompts))
    raise ValueError(f"unknown method {method!r}: use one of {METHODS}")


def build_plan(prompts: list[str], negatives: dict[str, list[str]], seeds: list[list[int]]) -> list[WorkItem]:
    """Method-major list of work items: every method gets the same prompts and the same seeds."""
    plan = []
    for method, negs in negatives.items():
        for i, prompt in enumerate(prompts):
            for s in seeds[i]:
                plan.append(WorkItem(method, i, prompt, negs[i], s, f"{method}/{i}_{s}.png"))
    return plan


def make_batches(plan: list[WorkItem], batch_size: int) -> list[list[WorkItem]]:
    return [plan[i : i + batch_size] for i in range(0, len(plan), batch_size)]


def distinct_items(plan: list[WorkItem]) -> tuple[list[WorkItem], dict[str, list[str]]]:
    """The items to render, the first of each (prompt, negative, seed), and per rendered file the plan's later
    files that are the same image (methods that chose the same negative: on the sample sft and rl agree on
    most prompts, 114 of 896 images): ``negopt.images.render.distinct_triples``, as RL's scoring."""
    from negopt.images.render import distinct_triples

    rows, inverse = distinct_triples([w.prompt for w in plan], [w.negative for w in plan], [w.seed for w in plan])
    copies: dict[str, list[str]] = {}
    for row, u in enumerate(inverse.tolist()):
        if row != rows[u]:
            copies.setdefault(plan[rows[u]].file, []).append(plan[row].file)
    return [plan[r] for r in rows], copies


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """uint8 [3, H, W] -> PNG (lossless, no timestamp chunk, so the bytes are reproducible)."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")


def render_batches(
    batches: list[list[WorkItem]], generate_fn: GenerateFn, images_dir: str | Path, progress: bool = True,
    copies: dict[str, list[str]] | None = None,
) -> list[WorkItem]:
    """Generate and save each batch, each image also under its ``copies`` (``distinct_items``); returns the
    items rendered."""
    done: list[WorkItem] = []
    copies = copies or {}
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        images = generate_fn([w.prompt for w in batch], [w.negative for w in batch], [w.seed for w in batch])
        for item, image in zip(batch, images, strict=True):
            for file in (item.file, *copies.get(item.file, ())):
                save_png(image, Path(images_dir) / file)
        done.extend(batch)
    return done


def manifest_frame(plan: list[WorkItem]) -> pd.DataFrame:
    return pd.DataFrame([asdict(w) for w in plan], columns=list(WorkItem.__dataclass_fields__))


def clear_outputs(images_dir: str | Path) -> None:
    """Remove a previous run's method folders and manifest (DVC does it too; plain runs need it).

    The manifest goes first: a kill in the middle must not leave it beside a half-removed image set, which a
    reader would take for a whole one."""
    images_dir = Path(images_dir)
    (images_dir / MANIFEST).unlink(missing_ok=True)
    for method in METHODS:
        if (images_dir / method).is_dir():
            shutil.rmtree(images_dir / method)


def generate_all(params: Params, state, device: torch.device, best_of_n: Callable | None = None) -> pd.DataFrame | None:
    """The whole stage on one of ``state.num_processes`` processes; the main one returns the manifest.

    ``best_of_n``: ``negopt.compare.best_of_n.best_of_n_negatives``, passed in by the stage so that modules reading
    only ``MANIFEST`` from here (evaluate, compare) do not depend on the RL code it imports.

    The main process builds the plan (negatives need the models) and broadcasts it, so every process
    works from one plan; each renders its share of whole batches (``negopt.core.sharding.map_sharded``, as RL
    rollouts do); the main process checks every file
    exists and writes the manifest last, so a manifest always describes a complete image set.
    """
    from accelerate.utils import broadcast_object_list

    from negopt.core.sharding import map_sharded

    g = params.generate
    methods = list(dict.fromkeys(g.methods))
    images_dir = Path(params.paths.images)
    check_method_models(params, methods)
    payload: list = [None]
    profile = params.active
    loaded: list = []  # the pipeline, loaded on first use by this process
    search: dict = {}  # best_of_n's report (the images it cost), main process only

    def pipeline():
        from negopt.models.loader import load_sd_pipeline

        if not loaded:
            loaded.append(load_sd_pipeline(profile, device))  # the loader's one dtype policy, the same as rl's
        return loaded[0]

    if state.is_main_process:
        clear_outputs(images_dir)
        test = load_prompts(g.prompts, params.paths.clean, g.num_prompts)
        prompts = test["prompt"].astype(str).tolist()
        gt = test["negative_prompt"].fillna("").astype(str).tolist()
        methods = usable_methods(methods, test, g.prompts)
        seeds = prompt_seeds(g.seed, g.num_prompts, g.seeds_per_prompt)

        def search_fn(p: list[str]) -> list[str]:
            # on the main process only (accelerator None inside): the search is small next to the renders
            if best_of_n is None:
                raise ValueError("method 'best_of_n' needs generate_all(..., best_of_n=negopt.compare.best_of_n."
                                 "best_of_n_negatives)")
            kept, search["best_of_n"] = best_of_n(params, p, seeds, pipeline(), device)
            return kept

        negatives = {
            m: method_negatives(
                m, prompts, gt, g.generic_negative, lambda mm, p: model_negatives(params, mm, p, device),
                lambda p: retrieval_negatives(params.paths.clean, p), search_fn,
            )
            for m in methods
        }
        payload = [build_plan(prompts, negatives, seeds)]
    plan: list[WorkItem] = broadcast_object_list(payload)[0]
    distinct, copies = distinct_items(plan)
    batches = make_batches(distinct, g.batch_size)

    def render(idx: list[int]) -> dict[str, torch.Tensor]:
        """This process's share of whole batches -> PNG files; returns the indices of the batches written."""
        from negopt.images.render import generate_images

        pipe = pipeline()

        def generate_fn(prompts: list[str], negatives: list[str], seeds: list[int]) -> torch.Tensor:
            return generate_images(pipe, prompts, negatives, seeds, profile, batch_size=len(prompts))

        render_batches([batches[i] for i in idx], generate_fn, images_dir, progress=state.is_local_main_process,
                       copies=copies)
        return {"batch": torch.tensor(idx, dtype=torch.long)}

    written = map_sharded(state, len(batches), render)["batch"] if batches else torch.empty(0, dtype=torch.long)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    missing = sorted(set(range(len(batches))) - set(written.tolist()))
    if missing or not all((images_dir / w.file).exists() for w in plan):
        raise RuntimeError(f"generate: planned batches {missing[:3]} were not written, or their files are gone")
    manifest = manifest_frame(plan)
    write_parquet(images_dir / MANIFEST, manifest)
    write_json(Path(params.paths.metrics) / GENERATE_METRICS, generate_metrics(manifest, search))
    return manifest


def generate_metrics(manifest: pd.DataFrame, search: dict[str, dict]) -> dict:
    """metrics/generate.json: per method the evaluation images and the images its search cost beforehand
    (``search_images``: best_of_n's calibration + selection renders, 0 for the others), and each search's report."""
    counts = manifest.groupby("method", sort=False).size()
    return {
        "methods": {m: {"eval_images": int(n), "search_images": int(search.get(m, {}).get("search_images", 0))}
                    for m, n in counts.items()},
        **search,
    }
