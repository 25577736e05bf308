"""dvclive files of a resumed RL run: the curves must not repeat the steps a stopped run logged after
its last checkpoint (dvclive's ``resume=True`` appends, it does not rewind)."""

from __future__ import annotations

from pathlib import Path


def truncate_live(live_dir: str | Path, step: int) -> None:
    """Drop dvclive rows logged at or after ``step`` (a run stopped after its last checkpoint)."""
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) < step]
        tsv.write_text("\n".join(kept) + "\n")
