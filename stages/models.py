"""Stage models: build the tiny zoo offline, or check that the paper profile's weights are on disk.

tiny:  trains the tokenizers on paths.clean/train.parquet (prompts and negatives), builds every random
       component with models.tiny_build.seed, and writes paths.tiny_models (replaced atomically).
world: trains every image model on the procedural world (negopt/world/zoo.py, sizes from
       models.world_build) in a resumable work folder under paths.checkpoints/world (a crash loses at most the
       model being trained), then writes paths.world_models (replaced atomically) with a random T5 whose
       tokenizer learns the train split; metrics/models.json holds each model's check against the world's truth.
paper: downloads every missing component first when the hub is reachable (HF_HUB_OFFLINE unset;
       ``negopt models fetch``), then fails before any work starts, listing every weight that is still
       not available and how to fetch it. When paths.tiny_models is absent (DVC removes it before the
       run) a small marker is written there, because dvc.yaml declares it as this stage's output; the same holds
       for paths.world_models under every profile but world.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from negopt.core.errors import ParamsError, run_stage
from negopt.core.io import atomic_dir, read_json, write_json
from negopt.core.runtime import start_stage
from negopt.data.splits import read_split
from negopt.models.check import format_table
from negopt.models.find import MissingWeightsError, check_profile, require_profile
from negopt.models.tiny import build_tiny_zoo


def train_texts(clean_dir: str) -> list[str]:
    """Prompts and negatives of the train split: the text both tiny tokenizers learn their vocabulary from."""
    df = read_split(clean_dir, "train")
    return [t for col in ("prompt", "negative_prompt") for t in df[col].dropna().astype(str)]


def check_built_paths(params, profile: str) -> None:
    """A built profile (tiny, world) must point into the folder this stage writes for it, or the loader would
    read stale files."""
    root = Path(getattr(params.paths, f"{profile}_models")).resolve()
    p = getattr(params.models, profile)
    for field in ("policy", "sd", "clip_pretrained", "clip_config", "aesthetic", "inception", "hpsv2", "hpsv2_config",
                  "pickscore", "pickscore_processor"):
        value = getattr(p, field)
        if value and root not in Path(value).resolve().parents:
            raise ParamsError(
                f"models.{profile}.{field} = {value!r} is outside paths.{profile}_models ({root}); fix params.yaml"
            )
    for name, value in p.textual_inversions.items():
        if root not in Path(value).resolve().parents:
            raise ParamsError(f"models.{profile}.textual_inversions.{name} = {value!r} is outside "
                              f"paths.{profile}_models ({root}); fix params.yaml")


def write_marker(folder: str, note: str) -> None:
    """The declared output of a profile this run does not build (kept when it exists: a zoo built by hand)."""
    if not Path(folder).exists():
        with atomic_dir(folder) as tmp:
            write_json(tmp / "NOT_BUILT.json", {"note": note})


def fetch_if_online(params) -> None:
    """Fetch what is missing unless HF_HUB_OFFLINE says not to; a failed fetch is reported, then checked."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    from negopt.models.fetch import fetch_profile

    try:
        fetched = fetch_profile(params.active, log=lambda m: print(m, file=sys.stderr))
    except Exception as err:  # no network, HTTP errors, a corrupt file: the check below lists what is missing
        print(f"models: fetch failed ({type(err).__name__}: {err})", file=sys.stderr)
    else:
        if fetched:
            print(f"models: fetched {', '.join(fetched)}", file=sys.stderr)


def build_world(params) -> None:
    """Train (or resume) the world zoo, deploy it with a T5 policy, and check every model against the truth."""
    import shutil

    from negopt.models.t5 import build_tiny_t5
    from negopt.world.checks import check_setting, check_zoo
    from negopt.world.layout import DEPLOYED, zoo_paths
    from negopt.world.zoo import build_world_zoo, zoo_config, zoo_key

    check_built_paths(params, "world")
    write_marker(params.paths.tiny_models, "profile=world; no tiny zoo built")
    build = params.models.world_build
    cfg = zoo_config(build)
    work = Path(params.paths.checkpoints) / "world" / zoo_key(cfg)
    print(f"models: training the world zoo in {work} (a rerun resumes at the first model not yet saved)")
    start = time.perf_counter()
    work_paths = build_world_zoo(cfg, work)
    with atomic_dir(params.paths.world_models) as tmp:
        for key in DEPLOYED:
            src, dst = work_paths[key], zoo_paths(tmp)[key]
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        build_tiny_t5(train_texts(params.paths.clean), tmp / "t5", vocab_size=build.t5_vocab_size, seed=build.seed)
    statuses = check_profile(params, "world")
    print(format_table(statuses, "world"))
    if not all(s.available for s in statuses):
        raise MissingWeightsError(f"the world zoo was trained but is incomplete:\n{format_table(statuses, 'world')}")
    checks = check_zoo(zoo_paths(params.paths.world_models), **check_setting(build, params.models.world))
    checks["train_seconds"] = read_json(work_paths["timings"])
    checks["stage_seconds"] = round(time.perf_counter() - start, 1)
    write_json(Path(params.paths.metrics) / "models.json", {"profile": "world", **checks})
    print(f"world zoo ready in {checks['stage_seconds']:.1f} s: {checks}")


def main() -> None:
    params = start_stage()
    # a declared output under every profile (dvc fails a stage whose output is missing); empty unless world
    (Path(params.paths.checkpoints) / "world").mkdir(parents=True, exist_ok=True)
    if params.profile == "paper":
        fetch_if_online(params)
        require_profile(params)
        write_marker(params.paths.tiny_models, "profile=paper uses hub weights; no tiny zoo built")
        write_marker(params.paths.world_models, "profile=paper uses hub weights; no world zoo trained")
        write_json(Path(params.paths.metrics) / "models.json", {"profile": "paper"})
        print(format_table(check_profile(params), "paper"))
        return
    if params.profile == "world":
        build_world(params)
        return

    write_marker(params.paths.world_models, "profile=tiny; no world zoo trained")
    check_built_paths(params, "tiny")
    build = params.models.tiny_build
    start = time.perf_counter()
    build_tiny_zoo(
        train_texts(params.paths.clean),
        params.paths.tiny_models,
        seed=build.seed,
        t5_vocab_size=build.t5_vocab_size,
        t5_pretokenizer=build.t5_pretokenizer,
        sd_vocab_size=build.sd_vocab_size,
    )
    statuses = check_profile(params, "tiny")
    print(format_table(statuses, "tiny"))
    seconds = time.perf_counter() - start
    write_json(Path(params.paths.metrics) / "models.json", {"profile": "tiny", "build_seconds": round(seconds, 1)})
    print(f"tiny zoo built in {seconds:.1f} s")
    if not all(s.available for s in statuses):
        raise MissingWeightsError(f"the tiny zoo was built but is incomplete:\n{format_table(statuses, 'tiny')}")


if __name__ == "__main__":
    run_stage(main)
