"""A Hugging Face hub on 127.0.0.1 that serves the repos of a local hub cache, for fetch tests.

It answers the four requests ``huggingface_hub.snapshot_download`` / ``hf_hub_download`` make
(huggingface_hub 2.x, plain HTTP, no Xet): repo info, the recursive tree listing, and HEAD / GET of
``/<repo>/resolve/<revision>/<path>`` with the ``X-Repo-Commit`` / ``ETag`` headers the client caches
by. The files are whatever ``<cache>/models--org--name/snapshots/<refs/main>/`` holds (e.g. the
full-size replica), so a fetch against it downloads the real bytes of every file the loaders read.
Extra routes (``routes``: url path -> file) serve the URL-downloaded files (aesthetic MLP, Inception).

``requests`` records every path asked for, so a test can check what was downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from helpers import loopback_server

_API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class CacheRepos:
    """The repos of one hub cache folder: repo id -> (commit, {path: file on disk})."""

    def __init__(self, cache: Path):
        self.repos: dict[tuple[str, str], tuple[str, dict[str, Path]]] = {}
        for folder in Path(cache).glob("*--*--*"):
            kind, org, name = folder.name.split("--", 2)
            commit = (folder / "refs" / "main").read_text().strip()
            snap = folder / "snapshots" / commit
            files = {str(p.relative_to(snap)): p for p in sorted(snap.rglob("*")) if p.is_file()}
            self.repos[(kind, f"{org}/{name}")] = (commit, files)

    def get(self, kind: str, repo: str, revision: str) -> tuple[str, dict[str, Path]] | None:
        entry = self.repos.get((kind, repo))
        if entry is None or revision not in ("main", entry[0]):
            return None
        return entry


def _etag(path: Path) -> str:
    """The blob's content name: the replica (and ``hf download``) names blobs by their sha256."""
    return Path(os.path.realpath(path)).name


def make_handler(repos: CacheRepos, routes: dict[str, Path], requests: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, obj) -> None:
            self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _api(self, m: re.Match) -> None:
            kind, repo, what, revision, _sub = m.groups()
            entry = repos.get(kind, repo, unquote(revision))
            if entry is None:
                return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            commit, files = entry
            if what == "revision":
                return self._json({"id": repo, "sha": commit, "siblings": [{"rfilename": f} for f in files]})
            tree = []
            for rel, path in files.items():
                size = path.stat().st_size
                item = {"type": "file", "path": rel, "size": size, "oid": _etag(path)[:40]}
                if size > 1 << 20:  # the hub stores large files in LFS: the client then keys them by sha256
                    item["lfs"] = {"oid": _etag(path), "size": size, "pointerSize": 134}
                tree.append(item)
            return self._json(tree)

        def _file(self, path: Path, headers: dict, head: bool) -> None:
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            if not head:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

        def _resolve(self, m: re.Match, head: bool) -> None:
            dataset, repo, revision, rel = m.groups()
            entry = repos.get("datasets" if dataset else "models", repo, unquote(revision))
            path = entry[1].get(unquote(rel)) if entry else None
            if path is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            self._file(path, {"X-Repo-Commit": entry[0], "ETag": f'"{_etag(path)}"'}, head)

        def _route(self, head: bool) -> None:
            path = urlsplit(self.path).path
            requests.append(f"{self.command} {path}")
            if path in routes:
                return self._file(routes[path], {}, head)
            if m := _API.match(path):
                return self._api(m)
            if m := _RESOLVE.match(path):
                return self._resolve(m, head)
            return self._send(404, b"", head=head)

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._route(head=False)

        def do_HEAD(self):  # noqa: N802
            self._route(head=True)

        def log_message(self, *args):
            pass

    return Handler


@contextmanager
def serve_hub(cache: Path, routes: dict[str, Path] | None = None):
    """Serve ``cache``'s repos (and ``routes``) on 127.0.0.1; yields (base url, list of requests)."""
    requests: list[str] = []
    with loopback_server(make_handler(CacheRepos(cache), routes or {}, requests)) as url:
        yield url, requests
