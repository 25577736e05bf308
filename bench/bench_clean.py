"""Benchmark: the clean stage at the paper's scale (256,224 rows) vs a bare parquet read + write.

    python bench/bench_clean.py [--rows 256224] [--repeat 5]

Scales the synthetic sample to ``--rows`` rows, writes it as the raw parquet, then times
``negopt.data.clean.run_clean`` (read, clean, split, write three parquet files) against
``pd.read_parquet`` + ``DataFrame.to_parquet`` of the same rows. Target: ratio <= 2.
Best of ``--repeat`` interleaved runs each, so a busy shared machine disturbs the ratio less.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import append  # noqa: E402
from negopt.core.params import CleanRules, Split  # noqa: E402
from negopt.data.clean import run_clean  # noqa: E402
from negopt.data.sample import generate_sample  # noqa: E402

PAPER_ROWS = 256_224


def interleaved_best(repeat: int, *fns) -> tuple[list[float], list[float]]:
    """Best wall and best CPU time (all threads of this process) of each function over ``repeat``
    rounds, alternating them so that a burst of load from other processes hits both sides alike."""
    wall = [float("inf")] * len(fns)
    cpu = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i] = min(wall[i], time.perf_counter() - w0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=PAPER_ROWS)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        generate_sample(args.rows, seed=0).to_parquet(tmp / "raw.parquet", index=False)
        gen_s = time.perf_counter() - t0

        def bare() -> None:
            pd.read_parquet(tmp / "raw.parquet").to_parquet(tmp / "copy.parquet", index=False)

        report: dict = {}

        def clean() -> None:
            report.update(run_clean(tmp / "raw.parquet", tmp / "clean", CleanRules(), Split()))

        (bare_s, clean_s), (bare_cpu, clean_cpu) = interleaved_best(args.repeat, bare, clean)
    result = {"rows": args.rows, "generate_s": round(gen_s, 2), "bare_read_write_s": round(bare_s, 3),
              "clean_s": round(clean_s, 3), "ratio": round(clean_s / bare_s, 2),
              "bare_read_write_cpu_s": round(bare_cpu, 3), "clean_cpu_s": round(clean_cpu, 3),
              "cpu_ratio": round(clean_cpu / bare_cpu, 2), "rows_out": report["rows_out"], "target_ratio": 2.0,
              "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    print(append(f"clean vs a bare parquet read + write (`bench/bench_clean.py`, best of {args.repeat})",
                 ["rows", "bare read+write s", "clean s", "ratio (wall)", "ratio (CPU)", "rows out"],
                 [[f"{args.rows:,}", result["bare_read_write_s"], result["clean_s"], f"**{result['ratio']}x**",
                   f"{result['cpu_ratio']}x", f"{result['rows_out']:,}"]],
                 f"Default params (near-duplicate grouping at {Split().near_duplicate_threshold}); target <= 2x."))


if __name__ == "__main__":
    main()
