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
    from negopt.images.scorers import check_inception_weights

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


def _with_payload(path, tmp_path):
    """``path`` (a weights file) replaced by the code-carrying pickle."""
    _evil_pth(tmp_path / "evil.pt")
    path.write_bytes((tmp_path / "evil.pt").read_bytes())
    return path


def test_fetch_verifiers_refuse_a_code_pickle(tmp_path, monkeypatch):
    from negopt.models.fetch import verify_aesthetic, verify_inception

    monkeypatch.chdir(tmp_path)
    for verify in (verify_aesthetic, verify_inception):
        with pytest.raises((pickle.UnpicklingError, RuntimeError)):
            verify(_evil_pth(tmp_path / "download.pth"))
    assert not (tmp_path / MARKER).exists()


def test_rl_checkpoint_refuses_a_code_pickle_as_its_optimizer_state(tmp_path, monkeypatch):
    """A crafted checkpoint whose state.json lists the payload's size: whole by its sizes, refused as a pickle."""
    import json

    from negopt.reward.term_stats import TermStats
    from negopt.rl.checkpoint import RunState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = tmp_path / "rl"
    save_checkpoint(ckpt, model, opt, RunState(step=1, stats=TermStats(), marginal=torch.ones(2)), "fp")
    _with_payload(ckpt / "optimizer.pt", tmp_path)
    meta = json.loads((ckpt / "state.json").read_text())
    meta["files"]["optimizer.pt"] = (ckpt / "optimizer.pt").stat().st_size
    (ckpt / "state.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(ckpt, model, opt, "fp")
    assert not (tmp_path / MARKER).exists()


def test_policy_folder_with_a_code_pickle_instead_of_safetensors_is_refused(tmp_path, monkeypatch):
    """A T5 folder whose weights are a pytorch_model.bin carrying code (no model.safetensors)."""
    from negopt.models.t5 import build_tiny_t5, load_policy

    folder = build_tiny_t5(["a cat", "a dog, blurry"] * 5, tmp_path / "t5", vocab_size=60, seed=0)
    (folder / "model.safetensors").unlink()
    _with_payload(folder / "pytorch_model.bin", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):  # transformers: weights_only
        load_policy(str(folder))
    assert not (tmp_path / MARKER).exists(), "the pickle's code ran"
