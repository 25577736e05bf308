"""dvclive files of a resumed RL run: the curves must not repeat the steps a stopped run logged after
its last checkpoint (dvclive's ``resume=True`` appends, it does not rewind), nor lose the steps before it:
``dvc repro`` deletes the stage's plots output before it reruns the stage, so each checkpoint keeps a copy
of the curves (``save_live``) that a resumed run puts back (``restore_live``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from negopt.core.io import atomic_dir, write_text

SAVED = "live"  # a checkpoint's copy of the curves, <checkpoint>/live/plots


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


def save_live(live_dir: str | Path, into: Path) -> None:
    """Copy ``live_dir``'s curves (``plots/``) into a checkpoint being written (``into``, its temp folder)."""
    plots = Path(live_dir) / "plots"
    if plots.is_dir():
        shutil.copytree(plots, into / SAVED / "plots")


def restore_live(ckpt_dir: Path, live_dir: str | Path) -> bool:
    """Replace ``live_dir``'s curves with the checkpoint's copy (atomically); False when it holds none (a
    checkpoint of an older version, or of a run without dvclive): the curves then stay as they are."""
    saved = Path(ckpt_dir) / SAVED / "plots"
    if not saved.is_dir():
        return False
    with atomic_dir(Path(live_dir) / "plots") as tmp:
        shutil.copytree(saved, tmp, dirs_exist_ok=True)
    return True
