"""Where benchmark figures go: ``bench/RESULTS.md``, one block per run, with the machine that produced them.

Ratios are only comparable inside one block (the same run on the same machine); the load average says
how idle the machine was.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """CPU model, cores, GPU (or none), torch version and the 1-minute load average."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
            f"load avg {os.getloadavg()[0]:.2f}")


def append(title: str, columns: list[str], rows: list[list], note: str = "") -> str:
    """Append a markdown block (title, date, machine, table, note) to RESULTS.md; returns the block."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {title} ({stamp})", "", f"Machine: {machine()}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    block = "\n".join(lines + ([""] + [note] if note else [])) + "\n"
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n" + block)
    return block
