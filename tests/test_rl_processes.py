"""Two accelerate processes train the same weights as one, under the condition README states: every
process runs with the same number of torch threads as the one-process run (``OMP_NUM_THREADS=1`` here).

Why the condition: a float sum's result depends on its order, and the order of a CPU matmul or
convolution depends on how many threads split it. ``torchrun`` / ``accelerate launch`` start each
process with ``OMP_NUM_THREADS=1`` unless it is set, while ``python stages/rl.py`` takes torch's
default (one per core), so with default settings the runs differ (measured: 6 RL steps, 4e-4 max abs
weight difference, about 12% of the update). With equal threads, sharding whole micro-batches
(``negopt.core.sharding``) makes every image, reward and update the same bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import RL_PROMPTS as PROMPTS
from helpers import rl_params
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "rl_worker.py"

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(params, out: Path, processes: int) -> tuple[dict, dict]:
    spec = out.with_suffix(".json")
    spec.write_text(json.dumps({"params": params.model_dump(), "prompts": PROMPTS}))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if processes == 1:
        cmd = [sys.executable, str(WORKER), str(spec), str(out)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), str(WORKER), str(spec),
               str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_file(str(out / "state.safetensors")), json.loads((out / "run.json").read_text())


def test_two_processes_with_equal_threads_train_the_same_weights_as_one(rl_zoo, tmp_path):
    # 3 prompts x k=2 = 6 images per step in micro-batches of 2: process 0 takes 2 batches, process 1 one
    small = {"reward": {"image_batch_size": 2, "calibration": {"prompts": 3}}}
    one = rl_params(rl_zoo, "one", small, steps=2, batch_prompts=3, k=2)
    two = rl_params(rl_zoo, "two", small, steps=2, batch_prompts=3, k=2)
    a, run_a = run_worker(one, tmp_path / "one", 1)
    b, run_b = run_worker(two, tmp_path / "two", 2)
    assert (run_a["processes"], run_b["processes"]) == (1, 2) and run_a["threads"] == run_b["threads"] == 1
    assert run_a["stats"] == run_b["stats"]  # calibration: the same images, terms and scales
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    sft = load_file(str(Path(one.paths.sft) / "model.safetensors"))
    assert any(not torch.equal(a[f"policy.{k}"], v) for k, v in sft.items() if f"policy.{k}" in a)  # it trained
