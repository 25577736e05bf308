"""A polite, resumable client for the Playground AI image API (the paper's data source).

``GET {base_url}{endpoint}?limit=..&cursor=..`` answers ``{"images": [...], "cursor": <next>}``;
an empty ``images`` list ends the feed. The client
- keeps at most ``requests_per_second`` requests per second;
- retries 429 / 5xx / timeouts / connection errors / malformed JSON with exponential backoff
  (``backoff_base * 2**attempt``), or waits what ``Retry-After`` says when the server sends it;
- trusts the server with nothing: a redirect is never followed (another host could answer anything;
  the scrape stops naming the target), a body is streamed and cut off past ``max_response_bytes`` or
  when it has not ended ``timeout`` seconds after the request (``requests``' own timeout is per socket
  read, so a server trickling bytes would hold it forever); both count as a failed attempt and are
  retried. Every failed attempt is counted by reason in ``stats.failures`` (``metrics/scrape.json``)
  and logged;
- appends every raw page to ``<checkpoint_dir>/pages.jsonl`` (fsync'd) before moving on. That file
  is the checkpoint: the next cursor is read back from its last page, so a stopped scrape resumes
  where it stopped, and rows are rebuilt from the raw pages deduplicated by ``id`` (nothing lost,
  nothing twice). Cleaning can be re-run without re-scraping.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import urllib3
from tqdm.auto import tqdm

from negopt.core.fingerprint import fingerprint
from negopt.core.io import append_jsonl, write_json
from negopt.core.params import PlaygroundSource
from negopt.data.schema import conform

# The API sends the sampler as an int 0-14; negopt_full stores names. The API does not document the
# order: this table follows the k-diffusion / diffusers naming the dataset shows (k_euler_ancestral,
# k_euler, plms, ...). An int outside it is kept as "sampler_<n>" so no information is lost.
SAMPLER_NAMES: dict[int, str] = {
    0: "ddim", 1: "plms", 2: "k_euler", 3: "k_euler_ancestral", 4: "k_heun", 5: "k_dpm_2",
    6: "k_dpm_2_ancestral", 7: "k_lms", 8: "dpmpp_2m", 9: "dpmpp_2s_ancestral", 10: "dpmpp_sde",
    11: "dpmpp_2m_karras", 12: "dpmpp_2s_ancestral_karras", 13: "dpmpp_sde_karras", 14: "unipc",
}


def sampler_name(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return SAMPLER_NAMES.get(value, f"sampler_{value}")
    return value  # already a name


def _same(value: Any) -> Any:
    return value


# API field -> (dataset column, conversion). The one table of the mapping; `conform` casts types,
# so a value of the wrong type becomes null instead of failing the scrape. The dataset's `cursor`
# column holds the request cursor of the page an item came from.
FIELD_MAP: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "id": ("id", _same),
    "createdAt": ("created_at", _same),
    "prompt": ("prompt", _same),
    "negative_prompt": ("negative_prompt", _same),
    "url": ("url", _same),
    "source": ("model", _same),
    "sampler": ("sampler", sampler_name),
    "likeCount": ("likes", _same),
    "height": ("height", _same),
    "width": ("width", _same),
    "steps": ("steps", _same),
    "cfg_scale": ("cfg_scale", _same),
}

MAX_WAIT_S = 600.0  # never sleep longer than this on one Retry-After


class PlaygroundError(RuntimeError):
    """The API failed in a way retries cannot fix; the message says what to change."""


class _Transient(Exception):
    """A failed attempt a retry may fix: ``kind`` is counted in the stats, ``reason`` logged, and ``wait`` (the
    server's Retry-After, when it gave one) replaces the backoff before the next attempt."""

    def __init__(self, kind: str, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.wait = kind, reason, wait


@dataclass
class ScrapeStats:
    pages: int = 0            # pages in the checkpoint (resumed + fetched now)
    pages_fetched: int = 0    # pages fetched by this run
    requests: int = 0
    retries: int = 0
    rows_fetched: int = 0     # unique rows returned
    duplicates: int = 0       # items whose id was already seen
    malformed_items: int = 0  # items that are not objects or lack an id
    exhausted: bool = False   # the feed ended (an empty page)
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts by reason (retried or fatal)


def item_to_row(item: dict, cursor: int | None) -> dict:
    row = {col: conv(item.get(field)) for field, (col, conv) in FIELD_MAP.items()}
    row["cursor"] = cursor
    return row


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.replace(tzinfo=when.tzinfo or UTC).timestamp() - now)


class PlaygroundClient:
    """Scrape ``cfg.endpoint`` into the negopt_full schema with a resumable checkpoint."""

    def __init__(
        self,
        cfg: PlaygroundSource,
        checkpoint_dir: str | Path,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.dir = Path(checkpoint_dir)
        self.pages_file = self.dir / "pages.jsonl"
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "negopt-scraper/0.1 (research; polite)")
        self.sleep, self.clock, self.progress = sleep, clock, progress
        self.log = log or (lambda message: tqdm.write(message))
        self.stats = ScrapeStats()
        self._last_request: float | None = None

    # -- HTTP ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.cfg.base_url.rstrip("/") + "/" + self.cfg.endpoint.lstrip("/")

    def query(self, cursor: int | None) -> dict[str, Any]:
        q: dict[str, Any] = {"limit": self.cfg.limit}
        if cursor is not None:
            q["cursor"] = cursor
        if self.cfg.query:
            q["query"] = self.cfg.query
        if self.cfg.user_id:
            q.update(userId=self.cfg.user_id, id=self.cfg.user_id, likedImages="false",
                     sortBy="Newest", filter="All")
        return q

    def _throttle(self) -> None:
        if self._last_request is not None:
            wait = self._last_request + 1.0 / self.cfg.requests_per_second - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last_request = self.clock()

    def _fail(self, kind: str) -> None:
        self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1

    def _read_body(self, resp: requests.Response, deadline: float) -> bytes:
        """The body, streamed: refused past ``max_response_bytes`` or after ``deadline`` (time.monotonic)."""
        cap = self.cfg.max_response_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _Transient("too_large", f"response of {declared} bytes over data.playground.max_response_bytes={cap}")
        chunks, size = [], 0
        # read1 returns what has arrived (iter_content blocks until a whole chunk or the end), so the
        # deadline is checked while a server trickles bytes.
        while chunk := resp.raw.read1(1 << 16, decode_content=True):
            size += len(chunk)
            if size > cap:
                raise _Transient("too_large", f"response over data.playground.max_response_bytes={cap}, cut off")
            if time.monotonic() > deadline:
                raise _Transient("body_timeout", f"body not finished within data.playground.timeout={self.cfg.timeout} s")
            chunks.append(chunk)
        return b"".join(chunks)

    def attempt(self, cursor: int | None) -> dict:
        """One request for the page at ``cursor``: ``{"images": list, "cursor": next}``. Raises ``_Transient`` for
        what a retry may fix (a timeout, a dropped connection, 429 / 5xx, a body too large, too slow or not the
        expected JSON) and ``PlaygroundError`` for what it cannot (a redirect, another 4xx)."""
        self._throttle()
        self.stats.requests += 1
        deadline = time.monotonic() + self.cfg.timeout
        try:
            resp = self.session.get(self.url, params=self.query(cursor), timeout=self.cfg.timeout,
                                    stream=True, allow_redirects=False)
        except (requests.Timeout, requests.ConnectionError) as err:
            kind = "timeout" if isinstance(err, requests.Timeout) else "connection"
            raise _Transient(kind, type(err).__name__) from None
        with resp:
            if resp.is_redirect or resp.is_permanent_redirect:
                self._fail("redirect")
                raise PlaygroundError(
                    f"{self.url} answered HTTP {resp.status_code}, a redirect to {resp.headers.get('Location')!r}, "
                    f"which is not followed (another host could serve anything): set data.playground.base_url / "
                    f"endpoint to the final address")
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"http_{resp.status_code}", f"HTTP {resp.status_code}",
                                 retry_after_seconds(resp.headers.get("Retry-After")))
            if resp.status_code >= 400:
                self._fail(f"http_{resp.status_code}")
                raise PlaygroundError(
                    f"{resp.url} answered HTTP {resp.status_code}: check data.playground.base_url, "
                    f"endpoint, query and user_id (the API may have changed or need a login)")
            try:
                data = json.loads(self._read_body(resp, deadline))
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                # a stalled or cut body (urllib3's read timeout / IncompleteRead), bad JSON
                raise _Transient("malformed", f"unreadable body ({type(err).__name__})") from None
        if not (isinstance(data, dict) and isinstance(data.get("images"), list)):
            raise _Transient("malformed", "malformed JSON (no 'images' list)")
        return data

    def fetch_page(self, cursor: int | None) -> dict:
        """One page, retrying transient failures up to ``max_retries`` times, each after the backoff
        (``backoff_base * 2**attempt`` seconds, or the server's Retry-After)."""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                return self.attempt(cursor)
            except _Transient as failure:
                self._fail(failure.kind)
                if attempt == self.cfg.max_retries:
                    raise PlaygroundError(
                        f"{self.url} cursor={cursor}: gave up after {attempt + 1} attempts, last error {failure.reason}. "
                        f"{self.stats.pages} pages are kept in {self.pages_file}; rerun the stage to resume, "
                        f"or raise data.playground.max_retries / backoff_base") from None
                wait = self.cfg.backoff_base * 2**attempt if failure.wait is None else failure.wait
                self.log(f"scrape: cursor={cursor} attempt {attempt + 1} failed ({failure.reason}); retrying in "
                         f"{min(wait, MAX_WAIT_S):.1f} s")
                self.stats.retries += 1
                self.sleep(min(wait, MAX_WAIT_S))
        raise AssertionError("unreachable")

    # -- checkpoint -----------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """Pages of another query or page size must not mix with these (max_pages may change: it resumes)."""
        c = self.cfg
        return fingerprint({"base_url": c.base_url, "endpoint": c.endpoint, "query": c.query, "user_id": c.user_id,
                            "limit": c.limit})

    def _load_pages(self) -> list[dict]:
        """Pages of an earlier run of the same query; a torn last line (crash mid-write) is cut off."""
        state_file = self.dir / "state.json"
        if state_file.exists() and json.loads(state_file.read_text()).get("fingerprint") != self._fingerprint():
            # Another query's pages must not mix with this one; keep them aside rather than delete.
            if self.pages_file.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                self.pages_file.rename(self.dir / f"pages.stale-{stamp}.jsonl")
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(state_file, {"fingerprint": self._fingerprint()})
        if not self.pages_file.exists():
            return []
        pages, good_bytes = [], 0
        with open(self.pages_file, "rb") as f:
            for line in f:
                try:
                    page = json.loads(line)
                except ValueError:
                    break
                if not line.endswith(b"\n") or not isinstance(page, dict):
                    break
                pages.append(page)
                good_bytes += len(line)
        if good_bytes != self.pages_file.stat().st_size:
            with open(self.pages_file, "r+b") as f:
                f.truncate(good_bytes)
        return pages

    def _add_items(self, rows: dict[str, dict], images: list, cursor: int | None) -> None:
        for item in images:
            if not isinstance(item, dict) or item.get("id") in (None, ""):
                self.stats.malformed_items += 1
                continue
            key = str(item["id"])
            if key in rows:
                self.stats.duplicates += 1
                continue
            rows[key] = item_to_row(item, cursor)

    # -- the scrape -------------------------------------------------------------------------------
    def scrape(self) -> pd.DataFrame:
        """Resume from the checkpoint and fetch until the feed ends, max_pages or max_rows."""
        cfg = self.cfg
        rows: dict[str, dict] = {}
        cursor: int | None = None
        pages = self._load_pages()
        for page in pages:
            self._add_items(rows, page.get("images") or [], page.get("cursor"))
            self.stats.exhausted = self._ends(page)
            cursor = page.get("next_cursor")
        self.stats.pages = len(pages)
        bar = tqdm(total=cfg.max_pages, initial=min(len(pages), cfg.max_pages), unit="page",
                   desc="scrape playground", disable=not self.progress)
        while not self.stats.exhausted and self.stats.pages < cfg.max_pages and len(rows) < cfg.max_rows:
            data = self.fetch_page(cursor)
            page = {"page": self.stats.pages, "cursor": cursor, "next_cursor": data.get("cursor"),
                    "images": data["images"]}
            append_jsonl(self.pages_file, [page])  # durable before it counts
            self._add_items(rows, page["images"], cursor)
            self.stats.pages += 1
            self.stats.pages_fetched += 1
            self.stats.exhausted = self._ends(page)
            cursor = page["next_cursor"]
            bar.update(1)
            bar.set_postfix(rows=len(rows), retries=self.stats.retries)
        bar.close()
        kept = list(rows.values())[: cfg.max_rows]
        self.stats.rows_fetched = len(kept)
        return conform(pd.DataFrame.from_records(kept, columns=[*(c for c, _ in FIELD_MAP.values()), "cursor"]))

    @staticmethod
    def _ends(page: dict) -> bool:
        nxt = page.get("next_cursor")
        return not page.get("images") or nxt is None or nxt == page.get("cursor")

    def stats_dict(self) -> dict:
        return asdict(self.stats)
