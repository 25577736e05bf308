"""The Playground client against a fixture HTTP server on 127.0.0.1 (never the network)."""

import json
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from helpers import loopback_server

from negopt.core.params import Data, PlaygroundSource
from negopt.data.playground import PlaygroundClient, PlaygroundError, retry_after_seconds
from negopt.data.sources import load_source

MAX_REQUESTS = 60  # the server refuses more: a runaway client fails the test instead of spinning
CURSORS = [None, 900, 800, 700, 600]  # request cursor of page i; page 4 is the empty end page


def _item(i: int) -> dict:
    return {"id": f"img{i:03d}", "userId": "u1", "createdAt": "2023-03-07T06:21:31.722Z", "source": "stable-diffusion",
            "prompt": f"portrait number {i}", "negative_prompt": "bad anatomy", "sampler": 3, "seed": i, "steps": 50,
            "cfg_scale": 7.5, "width": 512, "height": 768, "url": f"https://img.invalid/{i}.png", "likeCount": i % 7}


# 4 pages of 3 items; page 2 repeats an item of page 1 (a duplicate across pages) and carries junk items.
PAGES = [[_item(0), _item(1), _item(2)], [_item(3), _item(4), _item(5)],
         [_item(5), _item(6), "junk", {"prompt": "no id"}], [_item(7), _item(8)], []]
ALL_IDS = [f"img{i:03d}" for i in range(9)]


class FakeAPI:
    def __init__(self):
        self.faults: dict[int, list] = {}  # page -> faults to answer before the real page, in order
        self.log: list = []  # request cursors, in order

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        q = parse_qs(urlparse(handler.path).query)
        cursor = int(q["cursor"][0]) if "cursor" in q else None
        self.log.append(cursor)
        if len(self.log) > MAX_REQUESTS or urlparse(handler.path).path != "/api/images/search":
            return self._send(handler, 404, b"{}")
        page = CURSORS.index(cursor)
        fault = self.faults.get(page, []).pop(0) if self.faults.get(page) else None
        if fault == "429":
            return self._send(handler, 429, b"slow down", {"Retry-After": "7"})
        if fault == "500":
            return self._send(handler, 500, b"oops")
        if fault == "malformed":
            return self._send(handler, 200, b'{"images": [ {"id": "tru')
        if fault == "slow":
            threading.Event().wait(0.5)
        if fault == "redirect":  # to another host: following it would hand the scrape to that host
            return self._send(handler, 302, b"", {"Location": "http://evil.invalid/api/images/search"})
        if fault == "huge":  # says so in Content-Length
            return self._send(handler, 200, b'{"images": [], "pad": "' + b"x" * 5000 + b'"}')
        if fault == "huge_unannounced":  # no Content-Length: the size shows only while reading
            handler.send_response(200)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            for _ in range(10):  # 10 x 1000 bytes, bounded
                try:
                    handler.wfile.write(b" " * 1000)
                except OSError:
                    return
            return
        if fault == "trickle":  # a body that never ends in time: 1 byte every 0.05 s, at most 80 (4 s)
            body = json.dumps({"images": PAGES[page], "cursor": None}).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for b in body[:80]:
                try:
                    handler.wfile.write(bytes([b]))
                    handler.wfile.flush()
                except OSError:
                    return
                threading.Event().wait(0.05)
            return
        if fault == "truncated":  # promises more than it sends, then closes
            handler.send_response(200)
            handler.send_header("Content-Length", "500")
            handler.end_headers()
            handler.wfile.write(b'{"images": [')
            handler.close_connection = True
            return
        nxt = CURSORS[page + 1] if page + 1 < len(CURSORS) else None
        self._send(handler, 200, json.dumps({"images": PAGES[page], "cursor": nxt}).encode())

    @staticmethod
    def _send(handler, status, body, headers=None):
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def api():
    fake = FakeAPI()

    with loopback_server(fake.answer) as url:
        fake.base_url = url
        yield fake


def _client(api, tmp_path, sleeps=None, session=None, **cfg):
    params = dict(base_url=api.base_url, endpoint="/api/images/search", query="portrait", limit=3, max_pages=20,
                  max_rows=1000, requests_per_second=1000.0, max_retries=3, backoff_base=0.5, timeout=5.0)
    params.update(cfg)
    s = session or requests.Session()
    s.trust_env = False  # no proxy between us and 127.0.0.1
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    return PlaygroundClient(PlaygroundSource(**params), tmp_path / "ckpt", session=s, sleep=record, progress=False)


def test_full_scrape_maps_fields_and_dedups(api, tmp_path):
    client = _client(api, tmp_path)
    df = client.scrape()
    assert list(df["id"]) == ALL_IDS
    row = df.iloc[4]  # img004 came from page 1, requested with cursor 900
    assert (row["created_at"], row["model"], row["sampler"], row["likes"], row["cursor"]) == (
        "2023-03-07T06:21:31.722Z", "stable-diffusion", "k_euler_ancestral", 4, 900)
    assert (row["width"], row["height"], row["steps"], row["cfg_scale"]) == (512, 768, 50, 7.5)
    st = client.stats
    assert (st.pages, st.requests, st.retries, st.duplicates, st.malformed_items, st.exhausted) == (5, 5, 0, 1, 2, True)
    assert api.log == CURSORS
    assert len((tmp_path / "ckpt" / "pages.jsonl").read_text().splitlines()) == 5


def test_faults_retry_with_backoff_and_retry_after(api, tmp_path):
    api.faults = {0: ["429"], 1: ["500", "malformed"], 3: ["slow"]}
    sleeps: list[float] = []
    client = _client(api, tmp_path, sleeps=sleeps, timeout=0.2)
    df = client.scrape()
    assert list(df["id"]) == ALL_IDS
    assert client.stats.retries == 4 and client.stats.requests == 9
    waits = [s for s in sleeps if s > 0.01]  # drop the tiny rate-limit waits
    # Retry-After 7 s on page 0; page 1: 0.5 * 2**0 then 0.5 * 2**1; page 3 timed out once: 0.5
    assert waits == [7.0, 0.5, 1.0, 0.5]


def test_hostile_server_is_cut_off_counted_and_survived(api, tmp_path):
    """Oversized (announced or not), trickling and truncated bodies: each a failed attempt, counted by
    reason and retried; the scrape still ends with every row once."""
    api.faults = {0: ["huge"], 1: ["huge_unannounced", "trickle"], 3: ["truncated"]}
    client = _client(api, tmp_path, timeout=0.5, max_response_bytes=2000)
    df = client.scrape()
    assert list(df["id"]) == ALL_IDS and df["id"].is_unique
    assert client.stats.failures == {"too_large": 2, "body_timeout": 1, "malformed": 1}
    assert client.stats.retries == 4 and client.stats.requests == 9


def test_oversized_page_is_never_read_whole(api, tmp_path):
    """A 5 kB page against a 2 kB cap is refused from its Content-Length, attempt after attempt."""
    api.faults = {0: ["huge"] * 2}
    client = _client(api, tmp_path, max_response_bytes=2000, max_retries=1)
    with pytest.raises(PlaygroundError, match="gave up after 2 attempts.*over data.playground.max_response_bytes=2000"):
        client.scrape()
    assert client.stats.failures == {"too_large": 2}


def test_redirect_is_not_followed(api, tmp_path):
    api.faults = {1: ["redirect"]}
    client = _client(api, tmp_path)
    with pytest.raises(PlaygroundError, match=r"HTTP 302, a redirect to 'http://evil.invalid/.*not followed"):
        client.scrape()
    assert api.log == [None, 900] and client.stats.failures == {"redirect": 1}  # asked once, never retried
    assert len((tmp_path / "ckpt" / "pages.jsonl").read_text().splitlines()) == 1  # page 0 kept for the resume


def test_gives_up_with_a_clear_error_and_keeps_pages(api, tmp_path):
    api.faults = {1: ["500"] * 10}
    client = _client(api, tmp_path, max_retries=2)
    with pytest.raises(PlaygroundError, match="gave up after 3 attempts, last error HTTP 500.*rerun the stage to resume"):
        client.scrape()
    assert api.log == [None, 900, 900, 900]
    assert len((tmp_path / "ckpt" / "pages.jsonl").read_text().splitlines()) == 1


def test_client_errors_fail_fast(api, tmp_path):
    with pytest.raises(PlaygroundError, match="HTTP 404.*data.playground.base_url"):
        _client(api, tmp_path, endpoint="/api/nothing").scrape()
    assert len(api.log) == 1


def test_max_pages_then_resume_neither_loses_nor_duplicates(api, tmp_path):
    first = _client(api, tmp_path, max_pages=2).scrape()
    assert list(first["id"]) == ALL_IDS[:6] and api.log == [None, 900]
    second = _client(api, tmp_path).scrape()
    assert list(second["id"]) == ALL_IDS
    assert api.log == [None, 900, 800, 700, 600]  # resumed at page 2's cursor, nothing fetched twice
    third = _client(api, tmp_path).scrape()  # finished: no request at all
    assert list(third["id"]) == ALL_IDS and len(api.log) == 5


class _Crash(BaseException):
    pass


class CrashingSession(requests.Session):
    """Dies (like a kill) on its n-th request."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def get(self, *a, **kw):
        self.n -= 1
        if self.n == 0:
            raise _Crash()
        return super().get(*a, **kw)


def test_crash_mid_scrape_and_torn_checkpoint_resume(api, tmp_path):
    with pytest.raises(_Crash):
        _client(api, tmp_path, session=CrashingSession(3)).scrape()
    pages_file = tmp_path / "ckpt" / "pages.jsonl"
    with open(pages_file, "a") as f:
        f.write('{"page": 2, "cursor": 800, "images": [{"id": "img0')  # torn write of a third page
    resumed = _client(api, tmp_path)
    df = resumed.scrape()
    assert list(df["id"]) == ALL_IDS and df["id"].is_unique
    assert api.log == [None, 900, 800, 700, 600] and resumed.stats.pages_fetched == 3
    assert len(pages_file.read_text().splitlines()) == 5


def test_max_rows_and_changed_query_starts_fresh(api, tmp_path):
    assert list(_client(api, tmp_path, max_rows=4).scrape()["id"]) == ALL_IDS[:4]
    assert api.log == [None, 900]
    df = _client(api, tmp_path, query="landscape").scrape()  # another query: old pages set aside
    assert list(df["id"]) == ALL_IDS and api.log[2] is None
    assert len(list((tmp_path / "ckpt").glob("pages.stale-*.jsonl"))) == 1


def test_rate_limit_spaces_requests():
    now = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    class Resp:
        status_code, headers, url, is_redirect, is_permanent_redirect = 200, {}, "fake", False, False

        class raw:  # noqa: N801 (requests' attribute name)
            body = [json.dumps({"images": [_item(0)], "cursor": 5}).encode()]

            @classmethod
            def read1(cls, amt, decode_content=True):
                return cls.body.pop() if cls.body else b""

        def __enter__(self):
            type(self).raw.body = [json.dumps({"images": [_item(0)], "cursor": 5}).encode()]
            return self

        def __exit__(self, *exc):
            return False

    class Session:
        headers: dict = {}

        def get(self, *a, **kw):
            now[0] += 0.1  # each request takes 0.1 s
            return Resp()

    cfg = PlaygroundSource(base_url="http://127.0.0.1:9", requests_per_second=2.0, max_pages=3)
    client = PlaygroundClient(cfg, "/nonexistent", session=Session(), sleep=sleep, clock=lambda: now[0])
    for _ in range(3):
        client.fetch_page(None)
    # 2 requests/s: a request starts 0.5 s after the previous start, which took 0.1 s -> wait 0.4 s
    assert sleeps == pytest.approx([0.4, 0.4])


def test_retry_after_parsing():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    # an HTTP date 30 s after "now" (1 Jan 2024 00:00:00 UTC = 1704067200)
    assert retry_after_seconds("Mon, 01 Jan 2024 00:00:30 GMT", now=1704067200.0) == 30.0


def test_load_source_playground_stats(api, tmp_path):
    s = requests.Session()
    s.trust_env = False
    cfg = PlaygroundSource(base_url=api.base_url, limit=3, requests_per_second=1000.0)
    df, stats = load_source(Data(source="playground", playground=cfg), tmp_path / "ck", progress=False, session=s)
    assert len(df) == stats["rows_fetched"] == 9 and stats["pages"] == 5 and stats["retries"] == 0
