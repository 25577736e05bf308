"""The default tiny pipeline, stage by stage: wall time and peak RSS of each, as `dvc repro` runs it.

Runs ``dvc repro --force --single-item <stage>`` for every stage of dvc.yaml in order (the stage's own
command through DVC, so hashing and caching are counted) after removing the resumable state under
``paths.checkpoints`` (a forced rl would resume from it otherwise). Peak RSS is the largest resident set
of the DVC process and the stage it runs (``os.wait4``'s rusage covers reaped descendants). Run it in a
fresh clone on an idle machine: other jobs on 2 cores more than double these times.

    python bench/bench_pipeline.py [--stages sft,rl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append  # noqa: E402
from negopt.core.params import load_params  # noqa: E402


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in GB (the process and its reaped descendants), exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="", help="comma-separated subset (default: every stage)")
    args = ap.parse_args()
    stages = list(yaml.safe_load(Path("dvc.yaml").read_text())["stages"])
    if args.stages:
        stages = [s for s in stages if s in args.stages.split(",")]
    shutil.rmtree(load_params().paths.checkpoints, ignore_errors=True)
    rows, total = [], 0.0
    for stage in stages:
        seconds, rss, code = run_measured(["dvc", "repro", "--force", "--single-item", stage])
        if code:
            sys.exit(f"bench_pipeline: stage {stage} failed (exit {code})")
        total += seconds
        rows.append([stage, f"{seconds:.1f}", f"{rss:.2f}"])
        print(f"bench_pipeline: {stage} {seconds:.1f} s, peak RSS {rss:.2f} GB", flush=True)
    rows.append(["**total**", f"**{total:.1f}**", f"{max(float(r[2]) for r in rows):.2f}"])
    print(append("tiny pipeline by stage (`bench/bench_pipeline.py`, `dvc repro --force --single-item`)",
                 ["stage", "wall s", "peak RSS GB"], rows))


if __name__ == "__main__":
    main()
