"""Images per method for the comparison: the same prompts and seeds, only the negative differs.

Prompts: ``generate.prompts`` (the clean test split, or a file: ``negopt.data.prompt_files``). Methods: the
registry of :mod:`negopt.compare.methods` (none, generic, ground_truth, retrieval, best_of_n, sft, rl; a
prompt file without negatives skips ground_truth with a notice). :func:`generate_all`:

1. **plan** (main process): each method's negatives, then one work item per (method, prompt, seed); broadcast,
   so every process works from one plan;
2. **render**: the plan's distinct (prompt, negative, seed) items, each once for every method that shares it, cut
   into fixed batches that accelerate deals to processes whole, so an image is made in the same batch whatever
   the process count (and has its own seeded generator): a sharded run writes the same files as one process;
3. **record** (main process): every file checked, then the manifest written last, so a manifest always
   describes a whole image set; and what each method's search cost and how its negatives are written, with a
   warning for any textual-inversion name the pipeline has not loaded (metrics/generate.json).

Every render reads the text as the profile's ``prompt_syntax`` says (``negopt.images.render.text_inputs``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from negopt.compare.manifest import GENERATE_METRICS, MANIFEST
from negopt.compare.methods import METHODS, MODEL_FOLDERS, MethodInputs, negatives_of
from negopt.compare.seeds import prompt_seeds
from negopt.core.errors import MissingInputError
from negopt.core.io import atomic_path, write_json, write_parquet
from negopt.core.params import Params
from negopt.core.prompt_syntax import KNOWN_EMBEDDINGS, syntax_counts, unloaded_embeddings, unloaded_warning
from negopt.data.prompt_files import has_negatives, load_prompts

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


def usable_methods(methods: list[str], prompts: pd.DataFrame, source: str) -> list[str]:
    """``methods`` less ``ground_truth`` when the prompts carry no negatives (a prompt-only file), with a notice."""
    if "ground_truth" in methods and not has_negatives(prompts):
        print(f"generate: skipping 'ground_truth': generate.prompts={source} carries no negative prompts",
              file=sys.stderr)
        return [m for m in methods if m != "ground_truth"]
    return methods


def check_method_models(params: Params, methods: Sequence[str]) -> None:
    """Fail before any work if a method that reads a trained model has none on disk."""
    problems = []
    for method in methods:
        if method not in MODEL_FOLDERS:
            continue
        key = MODEL_FOLDERS[method]
        path = Path(getattr(params.paths, key))
        if not (path / "config.json").exists():
            problems.append(
                f"generate.methods lists {method!r} but {path} (paths.{key}) holds no trained model: "
                f"run `dvc repro {key}`, or drop {method!r} from generate.methods"
            )
    if problems:
        raise MissingInputError("\n".join(problems))


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
    files that are the same image (methods that chose the same negative, as sft and rl often do:
    bench/RESULTS.md, "A repeated (prompt, negative, seed) rendered once"):
    ``negopt.images.render.distinct_triples``, as RL's scoring."""
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


class Lazy:
    """A value made on first use (this process's pipeline: a method or a render may need it, or neither)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.make, self.value = make, None

    def __call__(self):
        if self.value is None:
            self.value = self.make()
        return self.value


def plan_images(params: Params, device: torch.device, pipeline: Lazy) -> tuple[list[WorkItem], dict[str, dict]]:
    """Step 1: the prompts, their evaluation seeds and each method's negatives -> the work items; and the reports
    of the methods that searched (what their search cost)."""
    g = params.generate
    images_dir = Path(params.paths.images)
    clear_outputs(images_dir)
    table = load_prompts(g.prompts, params.paths.clean, g.num_prompts)
    prompts = table["prompt"].astype(str).tolist()
    methods = usable_methods(list(dict.fromkeys(g.methods)), table, g.prompts)
    seeds = prompt_seeds(g.seed, g.num_prompts, g.seeds_per_prompt)
    inputs = MethodInputs(params, prompts, table["negative_prompt"].fillna("").astype(str).tolist(), seeds, device,
                          pipeline)
    negatives = {m: negatives_of(m, inputs) for m in methods}
    return build_plan(prompts, negatives, seeds), inputs.reports


def render_plan(params: Params, state, plan: list[WorkItem], pipeline: Lazy) -> list[int]:
    """Step 2: this process's share of the distinct items' batches -> PNG files (a shared image under each of
    its files); returns the indices of every process's batches written (gathered)."""
    from negopt.core.sharding import map_sharded
    from negopt.images.render import generate_images

    distinct, copies = distinct_items(plan)
    batches = make_batches(distinct, params.generate.batch_size)
    if not batches:
        return []

    def render(idx: list[int]) -> dict[str, torch.Tensor]:
        pipe = pipeline()

        def generate_fn(prompts: list[str], negatives: list[str], seeds: list[int]) -> torch.Tensor:
            return generate_images(pipe, prompts, negatives, seeds, params.active, batch_size=len(prompts))

        render_batches([batches[i] for i in idx], generate_fn, params.paths.images,
                       progress=state.is_local_main_process, copies=copies)
        return {"batch": torch.tensor(idx, dtype=torch.long)}

    written = map_sharded(state, len(batches), render)["batch"].tolist()
    if sorted(set(written)) != list(range(len(batches))):
        raise RuntimeError(f"generate: planned batches {sorted(set(range(len(batches))) - set(written))[:3]} "
                           "were not written")
    return written


def generate_all(params: Params, state, device: torch.device) -> pd.DataFrame | None:
    """The whole stage on one of ``state.num_processes`` processes (the module docstring's three steps); the
    main process returns the manifest, the others None."""
    from accelerate.utils import broadcast_object_list

    from negopt.models.loader import load_sd_pipeline

    check_method_models(params, list(dict.fromkeys(params.generate.methods)))
    pipeline = Lazy(lambda: load_sd_pipeline(params.active, device))  # the loader's one dtype policy, as rl's
    payload: list = [None]
    reports: dict[str, dict] = {}
    if state.is_main_process:  # 1. plan
        plan, reports = plan_images(params, device, pipeline)
        payload = [plan]
    plan = broadcast_object_list(payload)[0]
    render_plan(params, state, plan, pipeline)  # 2. render
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    images_dir = Path(params.paths.images)  # 3. record
    if not all((images_dir / w.file).exists() for w in plan):
        raise RuntimeError("generate: planned images are missing after rendering")
    manifest = manifest_frame(plan)
    write_parquet(images_dir / MANIFEST, manifest)
    metrics = generate_metrics(manifest, reports, list(params.active.textual_inversions))
    for method, missing in metrics["unloaded_embeddings"].items():
        print(f"generate: WARNING: {unloaded_warning(f'{method} negatives', missing)}", file=sys.stderr)
    write_json(Path(params.paths.metrics) / GENERATE_METRICS, metrics)
    return manifest


def generate_metrics(manifest: pd.DataFrame, search: dict[str, dict], loaded: Sequence[str] = ()) -> dict:
    """metrics/generate.json: per method the evaluation images and the images its search cost beforehand
    (``search_images``: best_of_n's calibration + selection renders, 0 for the others), and each search's report;
    how each method's negatives are written (``syntax``, one count per prompt: ``syntax_counts``), and the
    textual-inversion names they use that the pipeline has not ``loaded`` (``unloaded_embeddings``, methods with
    none left out)."""
    counts = manifest.groupby("method", sort=False).size()
    per_prompt = manifest.drop_duplicates(["method", "prompt_idx"])
    names = [*KNOWN_EMBEDDINGS, *loaded]
    syntax = {m: syntax_counts(g["negative"].tolist(), names) for m, g in per_prompt.groupby("method", sort=False)}
    unloaded = {m: missing for m, c in syntax.items() if (missing := unloaded_embeddings(c, loaded))}
    return {
        "methods": {m: {"eval_images": int(n), "search_images": int(search.get(m, {}).get("search_images", 0))}
                    for m, n in counts.items()},
        **search,
        "syntax": syntax,
        "unloaded_embeddings": unloaded,
    }
