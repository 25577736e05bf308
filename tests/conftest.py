"""The tests' fixtures, all in one place (plain helpers are in helpers.py and rl_fakes.py).

Every test process runs torch on one thread: tiny models gain nothing from a second one, results are
bit-identical from run to run, and on a loaded 2-core machine OpenMP spin-waits make two threads several times
slower. Tests that start processes give them ``OMP_NUM_THREADS=1`` for the same reasons (``helpers``).

Markers: ``slow`` (kills and restarts, e2e runs of dvc, the paper replica: minutes), ``e2e`` and ``paper`` (both
also slow). ``pytest -m "not slow"`` is the development loop; ``pytest`` runs everything, as CI does.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from helpers import RL_NEGATIVES, RL_PROMPTS, TINY_TEXTS  # noqa: E402  (after sys.path: the project first)


def pytest_collection_modifyitems(items):
    """e2e and paper tests are slow too, so ``-m "not slow"`` leaves them out."""
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("paper"):
            item.add_marker(pytest.mark.slow)


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


# --- model zoos, built once per session -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """The tiny zoo built from a small text list (seed 0): t5/, sd/, clip/, aesthetic/, inception/, ..."""
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
            textual_inversions={"tiny-negative": str(z / "embeddings" / "tiny-negative.safetensors")},
        )
    )
    return p.model_copy(update=dict(profile="tiny", models=p.models.model_copy(update=dict(tiny=tiny))))


@pytest.fixture(scope="session")
def rl_zoo(tmp_path_factory) -> Path:
    """A tiny zoo on the RL tests' prompts (vocabularies of 300), under a folder ``helpers.rl_params`` runs in."""
    from negopt.models.tiny import build_tiny_zoo

    base = tmp_path_factory.mktemp("rl")
    build_tiny_zoo((RL_PROMPTS + RL_NEGATIVES) * 20, base / "tiny", seed=0, t5_vocab_size=300, sd_vocab_size=300)
    return base


@pytest.fixture(scope="session")
def wiring_t5(tmp_path_factory) -> Path:
    """A tiny T5 on the RL tests' prompts: the real policy of the wiring tests (rl_fakes.make_components)."""
    from negopt.models.t5 import build_tiny_t5

    return build_tiny_t5((RL_PROMPTS + RL_NEGATIVES) * 10, tmp_path_factory.mktemp("t5") / "t5", vocab_size=300, seed=0)


@pytest.fixture
def fake_images(monkeypatch):
    """``rl_fakes.FakeImages`` in place of ``generate_images``: every image encodes its (prompt, negative, seed)."""
    from rl_fakes import FakeImages

    import negopt.images.render

    fake = FakeImages()
    monkeypatch.setattr(negopt.images.render, "generate_images", fake)
    return fake
