"""The Playground scrape SIGKILLed at random points against a faulty 127.0.0.1 API, resumed each time.

The server answers 80 pages (items repeated across pages, junk items) and, on a fixed cycle of requests,
faults: 429 with Retry-After, 500, malformed JSON, a truncated body, a reply slower than the timeout. A
separate process runs the scrape; the server kills it with SIGKILL at a seeded random request, either
before answering or a random few milliseconds after (while the client parses and appends its
checkpoint). After >= 20 kills and a final uninterrupted resume, the raw dataset must equal an
uninterrupted run's: no row lost, none duplicated, same values.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from helpers import loopback_server

pytestmark = pytest.mark.slow

N_PAGES = 80  # enough that the 20 kills (~0.8 pages each) never run out of feed
KILLS = 20
FAULTS = ["429", None, "500", None, "malformed", None, "truncated", None, "slow", None, None]  # cycled


def _page(i: int) -> list:
    items = [{"id": f"p{i:02d}i{j}", "prompt": f"prompt {i} {j}", "negative_prompt": "blurry", "likeCount": j}
             for j in range(3)]
    if i > 0:
        items.append({"id": f"p{i - 1:02d}i2", "prompt": "repeat", "negative_prompt": "x"})  # seen on page i-1
    if i % 5 == 0:
        items.append("junk")
    return items


class API:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.requests = 0  # over the whole test: drives the fault cycle
        self.kill_at: int | None = None  # kill the child at this request of its run
        self.run_requests = 0
        self.child: subprocess.Popen | None = None
        self.kills = 0
        self.lock = threading.Lock()

    def _kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            os.kill(self.child.pid, signal.SIGKILL)
            self.kills += 1
        self.kill_at = None

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests += 1
            self.run_requests += 1
            fault = FAULTS[self.requests % len(FAULTS)]
            kill_now = self.kill_at == self.run_requests
            after = self.rng.random() < 0.5
            delay = self.rng.uniform(0.0, 0.03)
        if self.requests > 2000:  # a runaway client fails the test instead of spinning
            return self._send(h, 404, b"{}")
        if kill_now and not after:
            return self._kill()
        q = parse_qs(urlparse(h.path).query)
        page = int(q["cursor"][0]) if "cursor" in q else 0
        body = json.dumps({"images": _page(page) if page < N_PAGES else [], "cursor": page + 1}).encode()
        if fault == "429":
            self._send(h, 429, b"later", {"Retry-After": "0"})
        elif fault == "500":
            self._send(h, 500, b"oops")
        elif fault == "malformed":
            self._send(h, 200, body[: len(body) // 2] + b"\n")
        elif fault == "truncated":
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 3])
            h.close_connection = True
        else:
            if fault == "slow":
                threading.Event().wait(0.6)  # past the client's 0.3 s timeout
            self._send(h, 200, body)
        if kill_now:
            threading.Event().wait(delay)
            self._kill()

    @staticmethod
    def _send(h, status, body, headers=None):
        try:
            h.send_response(status)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:  # the client was killed or gave up
            pass


@pytest.fixture
def api():
    fake = API(random.Random(20261201))

    with loopback_server(fake.answer) as url:
        fake.base_url = url
        yield fake


CHILD = """
import sys, json, requests
from negopt.data.playground import PlaygroundClient
from negopt.core.io import write_parquet
from negopt.core.params import PlaygroundSource
cfg = PlaygroundSource(**json.loads(sys.argv[1]))
s = requests.Session(); s.trust_env = False
client = PlaygroundClient(cfg, sys.argv[2], session=s, progress=False, log=lambda m: None)
write_parquet(sys.argv[3], client.scrape())
"""


def _start(api: API, ckpt: Path, out: Path) -> subprocess.Popen:
    cfg = dict(base_url=api.base_url, endpoint="/api/images/search", query="", limit=3, max_pages=100,
               max_rows=10_000, requests_per_second=1000.0, max_retries=8, backoff_base=0.001, timeout=0.3)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    api.run_requests = 0
    api.child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), str(ckpt), str(out)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return api.child


def test_random_sigkills_lose_and_duplicate_nothing(api, tmp_path):
    reference = tmp_path / "reference.parquet"
    proc = _start(api, tmp_path / "ref-ckpt", reference)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    want = pd.read_parquet(reference)
    ids = {f"p{i:02d}i{j}" for i in range(N_PAGES) for j in range(3)}
    assert set(want["id"]) == ids and want["id"].is_unique  # the reference itself is whole

    ckpt, out = tmp_path / "ckpt", tmp_path / "killed.parquet"
    runs = 0
    while True:
        runs += 1
        assert runs <= 80, "the killed scrape never finished"
        if api.kills < KILLS:
            api.kill_at = api.rng.randint(1, 3)  # a request of this run (~0.8 pages per killed run)
        proc = _start(api, ckpt, out)
        rc = proc.wait(timeout=600)
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, proc.stderr.read()  # killed by us, never a crash of its own
    assert api.kills >= KILLS
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    # the checkpoint holds each page once, in order, after all those kills
    pages = [json.loads(line)["page"] for line in (ckpt / "pages.jsonl").read_text().splitlines()]
    assert pages == list(range(len(pages))) and len(pages) == N_PAGES + 1
