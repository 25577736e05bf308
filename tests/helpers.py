"""Helpers the tests share (fixtures live in conftest.py): loopback servers, a dvclive stand-in, copies of the
project for dvc runs, SIGKILL-and-resume, and the small data sets and settings several test files train on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def answering(answer: Callable[[BaseHTTPRequestHandler], None]) -> type[BaseHTTPRequestHandler]:
    """A handler class whose GETs go to ``answer(handler)``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            answer(self)

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Handler


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler] | Callable[[BaseHTTPRequestHandler], None]):
    """An HTTP server on 127.0.0.1 for a handler class (or a GET ``answer`` function); yields its base URL.

    Polls shutdown every 20 ms, handler threads are daemons, and the server is closed on exit: every
    fixture server of the tests goes through here."""
    if not isinstance(handler, type):
        handler = answering(handler)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeLive:
    """Records what the RL loop logs: the part of dvclive's ``Live`` that ``run_rl`` uses."""

    def __init__(self, directory) -> None:
        self.dir, self.step, self.rows = str(directory), 0, []

    def log_metric(self, name: str, value: float) -> None:
        self.rows.append((self.step, name, value))

    def next_step(self) -> None:
        self.step += 1


VENV_BIN = Path(sys.executable).parent
NETGUARD = Path(__file__).resolve().parent / "netguard"


def run_guarded(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run in the temp repo with every non-loopback connection refused at the socket level
    (tests/netguard/sitecustomize.py, logged to ../netguard.log) and no HF offline variables: the tiny
    profile must stay off the network by itself."""
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")])),
               NEGOPT_NETGUARD_LOG=str(cwd.parent / "netguard.log"))
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


# models.world_build for tests: every world trainer a few steps on a few renders (the wiring, in about a minute)
WORLD_REDUCED = {
    "train_images": 96, "calibration_images": 300, "inception_images": 64, "vae_steps": 2,
    "diffusion_steps": 2, "clip_steps": 2, "aesthetic_steps": 5, "inception_steps": 2, "t5_vocab_size": 300,
    "check_prompts": 2,
}


def copy_tracked(root: Path, dst: Path) -> None:
    """Copy the files git tracks in ``root`` (as a fresh clone would hold them) into ``dst``."""
    import shutil

    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        if (root / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dst / rel)


def project_repo(root: Path, dst: Path, overlay: dict) -> Path:
    """A git repo at ``dst`` holding the project's tracked files with ``overlay`` merged into params.yaml, committed:
    where the end-to-end tests run the real ``dvc`` commands."""
    copy_tracked(root, dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    deep_merge(params, overlay)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "e2e@negopt.invalid"],
                 ["git", "config", "user.name", "negopt e2e"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "e2e baseline"]):
        run_guarded(args, dst)
    return dst


def deep_merge(dst: dict, src: dict) -> None:
    """Overlay nested ``src`` onto ``dst`` in place (a params overlay for the temp-repo dvc tests)."""
    for key, value in src.items():
        if isinstance(value, dict):
            deep_merge(dst.setdefault(key, {}), value)
        else:
            dst[key] = value


# The crafted retrieval train set (tests/test_retrieval.py works its neighbours out by hand): "a city street"
# retrieves rows 2 then 3, "a cat oil painting" rows 1 then 0.
TRAIN_P = ["a portrait of a cat", "a cat oil painting", "a city street", "a street at night"]
TRAIN_N = ["blurry", "ugly hands", "lowres", "noise"]


# --- the tiny model zoo (helper "models"), built once per session and shared by every test ---------------
TINY_TEXTS = [
    f"{subject} {style}, {extra}"
    for subject in ("a portrait of a cat", "a castle on a hill", "a city street at night", "a bowl of fruit 2024")
    for style in ("oil painting", "photo, 8k, highly detailed", "anime style")
    for extra in ("ugly, blurry, low quality", "deformed hands, watermark, text", "lowres, jpeg artifacts")
]



# The SFT tests' pairs: a category -> negative mapping the tiny model can learn in a few dozen steps.
SFT_MAPPING = {"photo of a car": "cartoon, painting", "anime girl": "realistic, 3d",
           "mountain landscape": "people, text", "portrait of a man": "bad anatomy, extra fingers"}
SFT_PROMPTS = [f"{p} {i}" for i in range(12) for p in SFT_MAPPING]
SFT_NEGATIVES = [SFT_MAPPING[p.rsplit(" ", 1)[0]] for p in SFT_PROMPTS]
SFT_PREFIX = "negative prompt: "
SFT_FAST = dict(learning_rate=3e-3, batch_size=8, warmup_steps=0, max_source_length=24, max_target_length=16)



def sft_features(tok):
    """The SFT pairs, tokenised with the short lengths of SFT_FAST."""
    from negopt.policy.sft import encode_pairs

    return encode_pairs(tok, SFT_PROMPTS, SFT_NEGATIVES, SFT_PREFIX, SFT_FAST["max_source_length"], SFT_FAST["max_target_length"])


# The RL tests' prompts, negatives and small settings on the session's rl_zoo (conftest.py).
RL_PROMPTS = ["a red fox in snow", "portrait of an old sailor", "a castle at dusk", "neon city street",
              "a bowl of fruit", "a misty forest", "a robot in a garden", "a sailing ship at sea"]
RL_NEGATIVES = ["blurry", "deformed hands", "low contrast", "watermark", "overexposed", "lowres", "text", "ugly"]


def rl_params(base: Path, run: str, overlay: dict | None = None, **rl):
    """params.yaml on the zoo's tiny models at 32 px, 2 denoising steps, small RL settings; ``rl`` keys override
    the rl section, ``overlay`` any section (nested, merged)."""
    from negopt.core.params import validate_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = base / "tiny"
    raw["models"]["tiny"].update(policy=str(tiny / "t5"), sd=str(tiny / "sd"), aesthetic=str(tiny / "aesthetic/model.safetensors"),
                                 inception=str(tiny / "inception/weights.pt"), image_size=32, num_inference_steps=2,
                                 clip_config=str(tiny / "clip/negopt-tiny-clip.json"),
                                 clip_pretrained=str(tiny / "clip/open_clip_model.safetensors"),
                                 textual_inversions={"tiny-negative": str(tiny / "embeddings/tiny-negative.safetensors")})
    raw["paths"].update(sft=str(tiny / "t5"), checkpoints=str(base / run / "checkpoints"))
    raw["base"].update(device="cpu", seed=3)
    deep_merge(raw, {"sampling": {"max_new_tokens": 6}, "reward": {"calibration": {"prompts": 4, "samples_per_prompt": 2}},
                     "rl": {"steps": 3, "batch_prompts": 2, "k": 2, "checkpoint_every": 1, "learning_rate": 1e-3,
                            "test": {"prompts": 4}}})
    deep_merge(raw, {"rl": rl} | (overlay or {}))
    return validate_params(raw)


_SHARED: dict = {}


def rl_components(params):
    """Fresh policy and reference of ``rl_params``' zoo; the SD pipeline and scorer are stateless, so loaded once."""
    from negopt.models.loader import load_policy, load_scorer, load_sd_pipeline
    from negopt.rl.loop import Components

    dev = torch.device("cpu")
    if params.paths.sft not in _SHARED:
        _SHARED[params.paths.sft] = (load_sd_pipeline(params.active, dev), load_scorer(params.active, dev))
    pipe, scorer = _SHARED[params.paths.sft]
    policy, tok = load_policy(params.paths.sft, dev)
    ref, _ = load_policy(params.paths.sft, dev)
    return Components(policy, ref, tok, pipe, scorer, sft_dir=params.paths.sft)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every tensor of ``a``'s state dict within 1e-6 of ``b``'s (the failing key named)."""
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k



# --- SIGKILL a child at chosen moments and resume it (the kill tests of sft, rl and the writers) ----------
def one_thread_child(argv: list[str], log: Path) -> subprocess.Popen:
    """``python argv...`` with one torch thread (bit-identical CPU maths across runs), stderr to ``log``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=err)


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 600) -> None:
    """Poll every 2 ms until ``condition()`` holds or ``proc`` has exited (bounded by ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while proc.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_and_resume(start: Callable[[], subprocess.Popen], arm: Callable[[subprocess.Popen], None],
                    kills: int, log: Path) -> int:
    """Run ``start()`` again and again: the first ``kills`` runs are SIGKILLed once ``arm(proc)`` returns
    (it waits for the moment), then one runs to the end. Returns the number of kills that landed.

    Every run must end by the kill or with rc 0: a crash of its own (say, a resume from a torn checkpoint)
    fails with the child's stderr. A run that finished before its kill counts as no kill."""
    import signal

    landed = runs = 0
    while True:
        runs += 1
        assert runs <= 3 * kills + 2, "the killed run never finished"
        proc = start()
        if landed < kills:
            arm(proc)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
        rc = proc.wait(timeout=900)
        if rc == 0:
            return landed
        assert rc == -signal.SIGKILL, f"rc {rc}:\n{log.read_text(errors='replace')[-4000:]}"
