"""Stage models: build the tiny zoo offline, or check that the paper profile's weights are on disk.

tiny:  trains the tokenizers on paths.clean/train.parquet (prompts and negatives), builds every random
       component with models.tiny_build.seed, and writes paths.tiny_models (replaced atomically).
paper: downloads every missing component first when the hub is reachable (HF_HUB_OFFLINE unset;
       ``negopt models fetch``), then fails before any work starts, listing every weight that is still
       not available and how to fetch it. When paths.tiny_models is absent (DVC removes it before the
       run) a small marker is written there, because dvc.yaml declares it as this stage's output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from negopt.core.errors import ParamsError, run_stage
from negopt.core.io import atomic_dir, write_json
from negopt.core.runtime import start_stage
from negopt.data.splits import read_split
from negopt.models.check import format_table
from negopt.models.find import MissingWeightsError, check_profile, require_profile
from negopt.models.tiny import build_tiny_zoo


def train_texts(clean_dir: str) -> list[str]:
    """Prompts and negatives of the train split: the text both tiny tokenizers learn their vocabulary from."""
    df = read_split(clean_dir, "train")
    return [t for col in ("prompt", "negative_prompt") for t in df[col].dropna().astype(str)]


def check_tiny_paths(params) -> None:
    """The tiny profile must point into paths.tiny_models, or the loader would read stale files."""
    root = Path(params.paths.tiny_models).resolve()
    p = params.models.tiny
    for field in ("policy", "sd", "clip_pretrained", "clip_config", "aesthetic", "inception", "hpsv2", "hpsv2_config",
                  "pickscore", "pickscore_processor"):
        value = getattr(p, field)
        if value and root not in Path(value).resolve().parents:
            raise ParamsError(
                f"models.tiny.{field} = {value!r} is outside paths.tiny_models ({root}); fix params.yaml"
            )
    for name, value in p.textual_inversions.items():
        if root not in Path(value).resolve().parents:
            raise ParamsError(f"models.tiny.textual_inversions.{name} = {value!r} is outside paths.tiny_models "
                              f"({root}); fix params.yaml")


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


def main() -> None:
    params = start_stage()
    if params.profile == "paper":
        fetch_if_online(params)
        require_profile(params)
        if not Path(params.paths.tiny_models).exists():  # the declared output; keep a tiny zoo built by hand
            with atomic_dir(params.paths.tiny_models) as tmp:
                write_json(
                    tmp / "PAPER_PROFILE.json", {"note": "profile=paper uses hub weights; no tiny zoo built"}
                )
        print(format_table(check_profile(params), "paper"))
        return

    check_tiny_paths(params)
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
    print(f"tiny zoo built in {time.perf_counter() - start:.1f} s")
    if not all(s.available for s in statuses):
        raise MissingWeightsError(f"the tiny zoo was built but is incomplete:\n{format_table(statuses, 'tiny')}")


if __name__ == "__main__":
    run_stage(main)
