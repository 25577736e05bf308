"""Stage `generate`: images for every method on the same test prompts and seeds.

Single process: `python stages/generate.py`. Sharded over N GPUs (same files as one process):
`accelerate launch --multi_gpu --num_processes N stages/generate.py`. The same command shards over CPU
processes on a machine without GPUs (or with base.device=cpu); note that accelerate's `--cpu` flag
alone starts a single process unless MPI is installed (`--mpirun_hostfile`).
"""

from __future__ import annotations

import time
from pathlib import Path

from accelerate import PartialState

from negopt.compare.generate import MANIFEST, generate_all
from negopt.core.errors import run_stage
from negopt.core.runtime import resolve_device, start_stage


def main() -> None:
    params = start_stage()
    device = resolve_device(params.base.device)
    # cpu=True makes processes started by torchrun / `accelerate launch --multi_gpu` join over gloo.
    state = PartialState(cpu=device.type == "cpu")
    if device.type == "cuda":
        device = state.device  # one GPU per process under accelerate launch
    start = time.perf_counter()
    manifest = generate_all(params, state, device)
    if manifest is not None:
        seconds = time.perf_counter() - start
        print(
            f"generate: {len(manifest)} images ({manifest['method'].nunique()} methods) on "
            f"{state.num_processes} process(es), {device}, in {seconds:.1f} s "
            f"({len(manifest) / seconds:.1f} images/s) -> {Path(params.paths.images) / MANIFEST}"
        )


if __name__ == "__main__":
    run_stage(main)
