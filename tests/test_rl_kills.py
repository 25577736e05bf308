"""RL SIGKILLed at random moments, some of them inside a checkpoint write, and resumed each time.

A child process (tests/rl_worker.py with dvclive curves) runs 5 RLOO steps of the tiny rl_zoo with a
checkpoint after every step; its fsyncs are slowed by 4 ms each (a slow disk) so that a kill can land
inside ``save_checkpoint``. Each killed run first completes one checkpoint (so every run makes progress
and no kill is spent in start-up), then the test SIGKILLs it at a seeded random moment: either while the
next checkpoint's temp folder exists (mid-write) or at a random time of the next step (rollout, images,
update, dvclive logging). After every kill the next run resumes. The final weights, Inception marginal and reward statistics must be bit-identical
(CPU, one thread) to an uninterrupted run's, and so must the dvclive curves (step and value columns).
A resume from a torn checkpoint would crash the child, which ``kill_and_resume`` refuses.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
from helpers import RL_PROMPTS as PROMPTS
from helpers import kill_and_resume, one_thread_child, rl_params, wait_until
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
KILLS = 4
STEPS = 2 * KILLS + 1  # a killed run keeps at most 2 steps (see arm): every kill lands before the end

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(1)
import negopt.core.io
fsync = negopt.core.io.fsync_path
def slow_fsync(path):  # a slow disk: widens the window in which a kill lands mid-checkpoint
    time.sleep(0.004)
    fsync(path)
negopt.core.io.fsync_path = slow_fsync
import rl_worker
rl_worker.main(*sys.argv[1:4])
"""


def _curves(live_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Each dvclive tsv as (step, value) rows: the timestamps of two runs differ by design, and so do the
    step-time curves (train/seconds_*), which measure the machine, not the run."""
    out = {}
    for tsv in sorted(live_dir.glob("plots/metrics/**/*.tsv")):
        if tsv.stem.startswith("seconds_"):
            continue
        lines = tsv.read_text().splitlines()
        head = lines[0].split("\t")
        step, value = head.index("step"), len(head) - 1
        out[str(tsv.relative_to(live_dir))] = [(r.split("\t")[step], r.split("\t")[value]) for r in lines[1:]]
    return out


def _checkpoint_step(ckpt_root: Path) -> int:
    """The step of the complete checkpoint (0 when there is none yet)."""
    try:
        return json.loads((ckpt_root / "rl" / "state.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _mid_write(ckpt_root: Path) -> bool:
    """A checkpoint's temp folder (``atomic_dir``) is there: the main process is inside save_checkpoint."""
    return any(p.name.startswith(".rl.") and p.name != ".rl.old" for p in ckpt_root.glob(".rl.*"))


def test_random_sigkills_resume_to_the_same_weights_and_curves(rl_zoo, tmp_path):
    def start_in(run: str):
        params = rl_params(rl_zoo, run, steps=STEPS)
        spec = tmp_path / f"{run}.json"
        spec.write_text(json.dumps({"params": params.model_dump(), "prompts": PROMPTS}))
        out, live, log = tmp_path / run / "out", tmp_path / run / "live", tmp_path / f"{run}.log"
        return (lambda: one_thread_child(["-c", CHILD, str(spec), str(out), str(live), str(TESTS)], log),
                Path(params.paths.checkpoints), out, live, log)

    start, ref_root, ref_out, ref_live, log = start_in("reference")
    proc = start()
    wait_until(proc, lambda: _checkpoint_step(ref_root) > 0)
    t1 = time.monotonic()
    assert proc.wait(timeout=900) == 0, log.read_text()
    step_seconds = (time.monotonic() - t1) / (STEPS - 1)  # start-up and calibration excluded

    rng = random.Random(20261202)
    start, ckpt_root, out, live, log = start_in("killed")
    moments = {"mid-write": 0, "random": 0}

    def arm(proc) -> None:
        """Mid-write: in the run's first checkpoint write (at most 1 step kept). Random: within the step after
        the run's first checkpoint (at most 2 steps kept)."""
        if rng.random() < 0.5:
            wait_until(proc, lambda: _mid_write(ckpt_root))
            time.sleep(rng.uniform(0.0, 0.02))
            moments["mid-write"] += _mid_write(ckpt_root)
        else:
            start_step = _checkpoint_step(ckpt_root)
            wait_until(proc, lambda: _checkpoint_step(ckpt_root) > start_step)
            time.sleep(rng.uniform(0.0, step_seconds))
            moments["random"] += 1

    assert kill_and_resume(start, arm, KILLS, log) == KILLS
    assert moments["mid-write"] >= 1, moments  # at least one kill tore a checkpoint write
    print(f"rl kills: {moments}, {step_seconds:.1f} s a step")

    want, got = load_file(str(ref_out / "state.safetensors")), load_file(str(out / "state.safetensors"))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), "resumed weights differ from the uninterrupted run"
    assert json.loads((out / "run.json").read_text()) == json.loads((ref_out / "run.json").read_text())
    ref_curves = _curves(ref_live)
    assert ref_curves and all(len(rows) == STEPS for rows in ref_curves.values())
    assert _curves(live) == ref_curves
