"""A torn RL checkpoint is detected and skipped, never loaded (not even in part); a whole one restores."""

from __future__ import annotations

import json

import pytest
import torch

from negopt.reward.term_stats import TermStats
from negopt.rl.checkpoint import RunState, checkpoint_meta, load_checkpoint, save_checkpoint


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()  # an optimizer with state, as after an RL step
    return model, opt


@pytest.fixture
def saved(tmp_path):
    model, opt = _model_and_optimizer(0)
    state = RunState(step=4, stats=TermStats(), marginal=torch.tensor([0.25, 0.75]))
    save_checkpoint(tmp_path / "rl", model, opt, state, "fp-1")
    return tmp_path / "rl", {k: v.clone() for k, v in model.state_dict().items()}


def test_a_whole_checkpoint_restores_the_saved_weights_and_step(saved):
    ckpt, weights = saved
    model, opt = _model_and_optimizer(1)
    state = load_checkpoint(ckpt, model, opt, "fp-1")
    assert state.step == 4 and state.marginal.tolist() == [0.25, 0.75]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert set(checkpoint_meta(ckpt)["files"]) == {"policy.safetensors", "optimizer.pt", "tensors.safetensors"}


def _cut(path, n=1):
    path.write_bytes(path.read_bytes()[:-n])


TEARS = {
    "policy cut short": lambda c: _cut(c / "policy.safetensors"),
    "optimizer cut short": lambda c: _cut(c / "optimizer.pt", 100),
    "tensors missing": lambda c: (c / "tensors.safetensors").unlink(),
    "state.json cut short": lambda c: _cut(c / "state.json", 10),
    "state.json missing": lambda c: (c / "state.json").unlink(),
    "state.json without sizes": lambda c: (c / "state.json").write_text(
        json.dumps({k: v for k, v in json.loads((c / "state.json").read_text()).items() if k != "files"})),
}


@pytest.mark.parametrize("tear", list(TEARS))
def test_a_torn_checkpoint_is_skipped_and_nothing_of_it_loaded(saved, tear, capsys):
    ckpt, _ = saved
    TEARS[tear](ckpt)
    model, opt = _model_and_optimizer(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = opt.state_dict()["state"][0]["exp_avg"].clone()
    assert checkpoint_meta(ckpt) is None
    assert load_checkpoint(ckpt, model, opt, "fp-1") is None
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # untouched
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt_before)
    assert not ckpt.exists() and "incomplete" in capsys.readouterr().out


def test_only_the_process_allowed_to_remove_it_does(saved):
    ckpt, _ = saved
    _cut(ckpt / "policy.safetensors")
    model, opt = _model_and_optimizer(1)
    assert load_checkpoint(ckpt, model, opt, "fp-1", remove_stale=False) is None and ckpt.exists()
