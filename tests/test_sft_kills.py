"""SFT SIGKILLed at random moments (including while the Trainer writes a checkpoint) and resumed each time.

A separate process trains the tiny T5 of tests/test_sft.py for 12 steps with a checkpoint every 2;
the test kills it with SIGKILL a seeded random few milliseconds after a new checkpoint folder appears
(often while its files are still being written), resumes, and repeats. The final weights must be
bit-identical (CPU, one thread) to an uninterrupted run's, and no torn checkpoint may ever be resumed:
a resume from one would crash the child with a traceback, which the test refuses.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch
from helpers import kill_and_resume, one_thread_child, wait_until
from safetensors.torch import load_file

from negopt.models.t5 import build_tiny_t5

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
KILLS = 4

CHILD = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[4])
from safetensors.torch import save_file
from helpers import SFT_FAST as FAST, sft_features as features
from negopt.models.t5 import load_policy
from negopt.core.params import Sft
from negopt.policy.sft import prepare_checkpoints, train_sft
t5_dir, ckpt, out = sys.argv[1:4]
sft = Sft(**FAST, max_steps=12, eval_steps=12, save_steps=2)
model, tok = load_policy(t5_dir)
resume = prepare_checkpoints(ckpt, "fp-kill", max_steps=12)
train_sft(model, tok, features(tok), features(tok)[:8], sft, ckpt, seed=0, use_cpu=True, resume_from=resume)
save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, out)
"""


def _checkpoints(ckpt: Path) -> set[str]:
    return {p.name for p in ckpt.glob("checkpoint-*")} if ckpt.exists() else set()


def test_random_sigkills_resume_to_the_same_weights(tmp_path):
    from helpers import SFT_NEGATIVES as NEGATIVES
    from helpers import SFT_PROMPTS as PROMPTS

    t5_dir = build_tiny_t5(PROMPTS + NEGATIVES, tmp_path / "t5", vocab_size=400, seed=0)
    log = tmp_path / "child.log"

    def start(ckpt: Path, out: Path):
        return lambda: one_thread_child(["-c", CHILD, str(t5_dir), str(ckpt), str(out), str(TESTS)], log)

    reference = tmp_path / "reference.safetensors"
    assert start(tmp_path / "ref-ckpt", reference)().wait(timeout=900) == 0, log.read_text()

    rng = random.Random(20261201)
    ckpt, out = tmp_path / "ckpt", tmp_path / "killed.safetensors"

    def arm(proc) -> None:
        before = _checkpoints(ckpt)
        wait_until(proc, lambda: bool(_checkpoints(ckpt) - before))  # a new one (save_total_limit=2 drops the oldest)
        time.sleep(rng.uniform(0.0, 0.05))  # inside or just after the checkpoint write

    assert kill_and_resume(start(ckpt, out), arm, KILLS, log) == KILLS
    want, got = load_file(reference), load_file(out)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), "resumed weights differ from the uninterrupted run"
