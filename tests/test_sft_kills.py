"""SFT SIGKILLed at random moments (including while the Trainer writes a checkpoint) and resumed each time.

A separate process trains the tiny T5 of tests/test_sft.py for 12 steps with a checkpoint every 2;
the test kills it with SIGKILL a seeded random few milliseconds after a new checkpoint folder appears
(often while its files are still being written), resumes, and repeats. The final weights must be
bit-identical (CPU, one thread) to an uninterrupted run's, and no torn checkpoint may ever be resumed:
a resume from one would crash the child with a traceback, which the test refuses.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from negopt.models.policy import build_tiny_t5

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
KILLS = 4

CHILD = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
from safetensors.torch import save_file
from test_sft import FAST, features
from negopt.models.policy import load_policy
from negopt.params import Sft
from negopt.sft import prepare_checkpoints, train_sft
t5_dir, ckpt, out = sys.argv[1:4]
sft = Sft(**FAST, max_steps=12, eval_steps=12, save_steps=2)
model, tok = load_policy(t5_dir)
resume = prepare_checkpoints(ckpt, "fp-kill", max_steps=12)
train_sft(model, tok, features(tok), features(tok)[:8], sft, ckpt, seed=0, use_cpu=True, resume_from=resume)
save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, out)
"""


def _start(t5_dir: Path, ckpt: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(t5_dir), str(ckpt), str(out), str(TESTS)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checkpoints(ckpt: Path) -> set[str]:
    return {p.name for p in ckpt.glob("checkpoint-*")} if ckpt.exists() else set()


def test_random_sigkills_resume_to_the_same_weights(tmp_path):
    from test_sft import NEGATIVES, PROMPTS

    t5_dir = build_tiny_t5(PROMPTS + NEGATIVES, tmp_path / "t5", vocab_size=400, seed=0)
    reference = tmp_path / "reference.safetensors"
    proc = _start(t5_dir, tmp_path / "ref-ckpt", reference)
    assert proc.wait(timeout=900) == 0, proc.stderr.read()

    rng = random.Random(20261201)
    ckpt, out = tmp_path / "ckpt", tmp_path / "killed.safetensors"
    kills = runs = 0
    while True:
        runs += 1
        assert runs <= 3 * KILLS + 2, "the killed training never finished"
        before = _checkpoints(ckpt)
        proc = _start(t5_dir, ckpt, out)
        if kills < KILLS:
            deadline = time.monotonic() + 600
            while proc.poll() is None and _checkpoints(ckpt) <= before and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))  # inside or just after the checkpoint write
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        rc = proc.wait(timeout=900)
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, proc.stderr.read()  # never a crash of its own (e.g. a torn resume)
    assert kills == KILLS
    want, got = load_file(reference), load_file(out)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), "resumed weights differ from the uninterrupted run"
