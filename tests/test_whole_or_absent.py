"""Every output whole or absent: the writers of negopt.core.io (and the writers built on them) SIGKILLed at
random moments, dozens of times, while a reader keeps reading the final paths.

Each kind of output is written over and over by a forked child (two versions in turn, both known in
advance by their bytes), killed after a seeded random delay. While it runs, the parent reads the final
path in a loop; after every kill it reads it once more. Every read must be absent or byte-for-byte one
of the known versions (for a folder: every file one of the known versions of that file while the writer
runs, the whole folder one known version once it is dead). A partial file at a final path fails the
test. Finally one uninterrupted write (the stage rerun that ``dvc repro`` does after a killed stage,
which wrote no dvc.lock entry) leaves exactly the wanted version and no temp file of the killed writers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tqdm
import tqdm.auto

from negopt.compare.generate import (
    MANIFEST,
    WorkItem,
    clear_outputs,
    manifest_frame,
    render_batches,
    save_png,
)
from negopt.core import io
from negopt.models.t5 import build_tiny_t5

pytestmark = pytest.mark.slow

KILLS = 12  # per kind (60 in all)
TEXTS = [f"a photo of a {w} in the {p}, blurry, lowres" for w in ("cat", "dog", "fox") for p in ("snow", "rain")]


def _frame(v: int) -> pd.DataFrame:
    n = 20_000  # ~0.7 MB of parquet: a write takes milliseconds, so kills land inside it
    return pd.DataFrame({"prompt": [f"prompt {i} of version {v}" for i in range(n)], "v": np.full(n, v)})


def _image(v: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * v + seed)
    return torch.randint(0, 256, (3, 256, 256), generator=g, dtype=torch.uint8)  # noise: PNG cannot shrink it


def _plan(v: int) -> list[WorkItem]:
    return [WorkItem("sft", i, f"p{i}", f"n{i} v{v}", s, f"sft/{i}_{s}.png") for i in range(3) for s in range(2)]


def _images(v: int, path: Path) -> None:
    """A PNG folder as generate writes it: the old manifest and PNGs removed, every PNG, the manifest last.
    So the folder is whole when its manifest is there; without one, a reader (evaluate) stops."""
    plan = _plan(v)
    clear_outputs(path)
    render_batches([plan[:3], plan[3:]], lambda p, n, seeds: torch.stack([_image(v, s) for s in seeds]), path,
                   progress=False)
    io.write_parquet(path / MANIFEST, manifest_frame(plan))


WRITERS = {  # kind -> (write version v to path, is_folder)
    "parquet": (lambda v, p: io.write_parquet(p, _frame(v)), False),
    "json": (lambda v, p: io.write_json(p, {"v": v, "text": f"{v}" * 3_000_000}), False),  # the write, not dumps
    "png": (lambda v, p: save_png(_image(v), p), False),
    "png folder + manifest": (_images, True),
    "model folder (save_pretrained)": (lambda v, p: build_tiny_t5(TEXTS, p, vocab_size=120, seed=v), True),
}


def _hashes(path: Path) -> dict[str, str] | None:
    """{relative file: sha256} of a file or a folder's files (temp siblings excluded: no reader opens
    them); None when the path is absent."""
    files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else []
    if not files:
        return None
    out = {}
    for f in files:
        rel = str(f.relative_to(path)) if f != path else "."
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        with open(f, "rb") as fh:  # one open: a rename after it still reads the whole old file
            out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _own_progress_locks() -> None:
    """tqdm's write lock holds a multiprocessing RLock, a semaphore that a forked child shares with its
    parent: a child killed while it draws a progress bar (save_pretrained draws one) leaves it taken, and
    the parent's next bar blocks for ever -- the hang that ran CI past its 90 minutes. The child draws
    with locks of its own."""
    classes = [tqdm.tqdm]
    while classes:
        cls = classes.pop()
        classes += cls.__subclasses__()
        if cls is tqdm.tqdm or "_lock" in vars(cls):
            cls.set_lock(threading.RLock())


def _write_forever(kind: str, path: str, started, writing) -> None:
    torch.set_num_threads(1)
    _own_progress_locks()
    write, _ = WRITERS[kind]
    started.set()
    for i in range(10_000):  # bounded; the parent kills it long before
        writing.value = 1  # shared memory: after the kill the parent knows whether it landed inside a write
        write(i % 2, Path(path))
        writing.value = 0


@pytest.mark.parametrize("kind", list(WRITERS))
def test_killed_writers_leave_whole_outputs_or_none(kind, tmp_path):
    write, folder = WRITERS[kind]
    versions = []
    for v in (0, 1):
        ref = tmp_path / f"ref{v}" / "out.bin"
        t0 = time.monotonic()
        write(v, ref)
        versions.append(_hashes(ref))
    seconds = time.monotonic() - t0
    assert versions[0] != versions[1]
    per_file = {f: {h[f] for h in versions} for h in versions for f in h}

    def seen_ok(h: dict | None, writer_dead: bool) -> bool:
        """Absent, or a known version; a folder being written (or, for PNGs, one without its manifest) may
        mix versions, but each of its files is a known version of that file."""
        if h is None:
            return True
        if not folder or (writer_dead and (kind != "png folder + manifest" or MANIFEST in h)):
            return h in versions
        return all(h_f in per_file.get(f, ()) for f, h_f in h.items())

    path = tmp_path / "live" / "out.bin"
    path.parent.mkdir()
    rng = random.Random(zlib.crc32(kind.encode()))  # hash() of a str differs per process
    ctx = multiprocessing.get_context("fork")  # the parent's imports come along: each start costs milliseconds
    reads = mid_write = 0
    for _ in range(KILLS):
        started, writing = ctx.Event(), ctx.Value("i", 0, lock=False)
        child = ctx.Process(target=_write_forever, args=(kind, str(path), started, writing), daemon=True)
        child.start()
        try:  # a failed check still kills the writer: a live child would block pytest's exit
            assert started.wait(timeout=60)
            deadline = time.monotonic() + rng.uniform(0.0, 2 * seconds)  # within the first two writes
            while time.monotonic() < deadline:
                try:
                    h = _hashes(path)
                except FileNotFoundError:  # a folder swapped while listed: absent for that moment
                    continue
                assert seen_ok(h, writer_dead=False), f"{kind}: a reader saw a partial output while written"
                reads += 1
            assert child.is_alive(), f"{kind}: the writer died on its own (exit code {child.exitcode})"
        finally:
            child.kill()
            child.join(timeout=30)
        mid_write += writing.value
        assert seen_ok(_hashes(path), writer_dead=True), f"{kind}: a kill left a partial output at the final path"
        reads += 1
    print(f"{kind}: {KILLS} kills, {mid_write} inside a write, {reads} reads, one write {seconds * 1000:.0f} ms")
    assert mid_write >= 1  # a kill did land inside a write

    write(1, path)  # the stage's rerun
    assert _hashes(path) == versions[1]
    assert not list(path.parent.rglob(".*"))  # no temp file of a killed writer remains


def _hold_a_progress_lock(held) -> None:
    _own_progress_locks()
    tqdm.auto.tqdm.get_lock().acquire()  # what a bar does while it draws
    held.set()
    time.sleep(60)


def test_a_writer_killed_while_drawing_a_progress_bar_leaves_the_parents_bars_free():
    for _ in tqdm.auto.tqdm(range(2), disable=False):  # the parent's lock exists before the fork, as in a run
        pass
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    child = ctx.Process(target=_hold_a_progress_lock, args=(held,), daemon=True)
    child.start()
    try:
        assert held.wait(timeout=60)
    finally:
        child.kill()
        child.join(timeout=30)
    locks = tqdm.auto.tqdm.get_lock().locks
    free = [lk.acquire(timeout=2) for lk in locks]
    for lk, ok in zip(locks, free, strict=True):
        if ok:
            lk.release()
    assert all(free), "the parent's next progress bar would block for ever"
