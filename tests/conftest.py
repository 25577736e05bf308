import os
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


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


def copy_tracked(root: Path, dst: Path) -> None:
    """Copy the files git tracks in ``root`` (as a fresh clone would hold them) into ``dst``."""
    import shutil

    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        if (root / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dst / rel)


def deep_merge(dst: dict, src: dict) -> None:
    """Overlay nested ``src`` onto ``dst`` in place (a params overlay for the temp-repo dvc tests)."""
    for key, value in src.items():
        if isinstance(value, dict):
            deep_merge(dst.setdefault(key, {}), value)
        else:
            dst[key] = value


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def shared_pairs() -> Path:
    """Real user pairs from ../shared/data (never copied into the repo); skip where absent."""
    path = SHARED_DATA / "pairs_dflip3k.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/pairs_dflip3k.jsonl not present")
    return path


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


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """The tiny zoo built from a small text list (seed 0): t5/, sd/, clip/, aesthetic/, inception/."""
    from negopt.models.tiny import build_tiny_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_tiny_zoo(TINY_TEXTS, out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_params(tiny_zoo):
    """params.yaml with profile=tiny and models.tiny pointing into the session's tiny zoo."""
    from negopt.core.params import load_params

    p = load_params(ROOT / "params.yaml")
    z = tiny_zoo
    tiny = p.models.tiny.model_copy(
        update=dict(
            policy=str(z / "t5"),
            sd=str(z / "sd"),
            clip_pretrained=str(z / "clip" / "open_clip_model.safetensors"),
            clip_config=str(z / "clip" / "negopt-tiny-clip.json"),
            aesthetic=str(z / "aesthetic" / "model.safetensors"),
            inception=str(z / "inception" / "weights.pt"),
            hpsv2=str(z / "hpsv2" / "hps_tiny.pt"),
            hpsv2_config=str(z / "hpsv2" / "negopt-tiny-hpsv2.json"),
            pickscore=str(z / "pickscore"),
            pickscore_processor=str(z / "pickscore"),
        )
    )
    return p.model_copy(update=dict(profile="tiny", models=p.models.model_copy(update=dict(tiny=tiny))))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a loaded machine OpenMP spin-waits make
    two threads several times slower; restore the setting for other modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
