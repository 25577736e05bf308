"""dvclive files of a resumed RL run: the curves must not repeat the steps a stopped run logged after
its last checkpoint (dvclive's ``resume=True`` appends, it does not rewind)."""

from __future__ import annotations

from pathlib import Path

from negopt.io import write_text


def truncate_live(live_dir: str | Path, step: int) -> None:
    """Drop dvclive rows logged at or after ``step`` (a run stopped after its last checkpoint), and a row
    that a kill cut short while dvclive appended it (no final newline, or fewer columns than the header).
    The file is rewritten atomically: a kill here leaves the old curve, never a half one."""
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().split("\n")[:-1]  # what follows the last newline is a torn row (or "")
        if not lines:  # empty, or a torn header: dvclive writes a new file
            tsv.unlink()
            continue
        width, col = len(lines[0].split("\t")), lines[0].split("\t").index("step")
        rows = [ln.split("\t") for ln in lines[1:]]
        kept = [lines[0]] + ["\t".join(r) for r in rows if len(r) == width and r[col].isdigit() and int(r[col]) < step]
        write_text(tsv, "\n".join(kept) + "\n")
