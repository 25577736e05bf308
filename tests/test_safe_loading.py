"""Weights load only through safetensors or torch.load(weights_only=True): a pickle that carries code
is refused before it can run."""

from __future__ import annotations

import pickle

import pytest
import torch

MARKER = "negopt-pickle-ran"


class _Payload:
    """Unpickling this calls os.system, the classic code-carrying pickle."""

    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


def _evil_pth(path):
    with open(path, "wb") as f:
        pickle.dump({"layers.0.weight": _Payload()}, f)
    return path


def test_aesthetic_loader_refuses_a_code_pickle(tmp_path, monkeypatch):
    from negopt.models.loader import load_aesthetic

    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        load_aesthetic(_evil_pth(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"))
    assert not (tmp_path / MARKER).exists()


def test_inception_loader_refuses_a_code_pickle(tmp_path, monkeypatch):
    from negopt.metrics import check_inception_weights

    monkeypatch.chdir(tmp_path)
    # torch refuses it either way: weights_only's unpickler, or mmap's "not a zip file" check first
    with pytest.raises((pickle.UnpicklingError, RuntimeError)):
        check_inception_weights(str(_evil_pth(tmp_path / "weights-inception.pth")))
    assert not (tmp_path / MARKER).exists()


def test_plain_state_dicts_still_load(tmp_path):
    """The refusal is about code, not about .pth files: a tensor-only state dict loads."""
    from negopt.models.loader import load_aesthetic
    from negopt.models.nets import AestheticMLP

    path = tmp_path / "mlp.pth"
    torch.save(AestheticMLP(8).state_dict(), path)
    assert load_aesthetic(path).input_size == 8
