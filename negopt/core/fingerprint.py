"""One fingerprint for "is this saved state from the same run?": sft and rl checkpoints, scrape pages.

``fingerprint(settings, chunks)`` hashes the settings that shape the run (canonical JSON) and the
bytes of its inputs (training data, parent weights). Each caller builds its settings from whole params
sections less a short, named list of what the saved state never depends on, so a setting added to a section
is in the fingerprint without an edit (tests/test_cache_keys.py enumerates them from the schema).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fingerprint(settings: dict[str, Any], chunks: Iterable[bytes] = ()) -> str:
    """16 hex digits of sha256 over ``settings`` (sorted-key JSON) followed by each chunk."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def file_chunks(paths: Iterable[str | Path]) -> Iterable[bytes]:
    """The bytes of each file in order, read lazily (weights can be large)."""
    for path in paths:
        yield Path(path).read_bytes()
