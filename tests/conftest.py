import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def shared_pairs() -> Path:
    """Real user pairs from ../shared/data (never copied into the repo); skip where absent."""
    path = SHARED_DATA / "pairs_dflip3k.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/pairs_dflip3k.jsonl not present")
    return path
