"""RL checkpoints: what a resumed run restores (weights, optimizer, reward statistics, RNG states), and
the fingerprint that says whether a checkpoint belongs to this run.

One folder, written atomically by the main process: ``policy.safetensors``, ``optimizer.pt``
(``torch.load(weights_only=True)``), ``tensors.safetensors`` (Inception marginal, torch RNG) and, last,
``state.json`` (step, fingerprint, term statistics, seconds, Python and numpy RNG, and the size of every
other file). ``atomic_dir`` means a kill mid-write leaves the previous checkpoint; a folder that is torn
all the same (copied by hand, a disk that lost a write, a checkpoint of an older version) fails
``checkpoint_meta`` and is skipped with a message, never loaded: nothing is restored from it in part.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from negopt.core.fingerprint import file_chunks
from negopt.core.fingerprint import fingerprint as run_fingerprint
from negopt.core.io import atomic_dir
from negopt.core.params import Params
from negopt.reward.term_stats import TermStats
from negopt.rl.live import save_live


@dataclass
class RunState:
    """What a run carries from step to step, and a checkpoint restores besides weights and optimizer."""

    step: int
    stats: TermStats
    marginal: torch.Tensor  # [C] Inception marginal of the fidelity term
    attempt: int = 0  # the attempt (rl.restarts): 0 first, each restart on its own training stream
    steps_before: int = 0  # steps trained by the earlier attempts (dvclive's step = steps_before + step)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("sample", "images", "update", "select", "select_images"), 0.0))


#: rl settings no saved state depends on: where checkpoints fall, the test and health bounds (after training),
#: and the stale stop (when to stop, not what a step holds): a run with other values resumes. ``rl.steps`` is in
#: the fingerprint: the last step is always checked, so it shapes the selection's state.
NOT_TRAINING = {"checkpoint_every": True, "test": True, "health": True, "selection": {"stale_steps"}}


def training_settings(params: Params) -> dict:
    """Every setting a checkpoint's state depends on: the ``rl`` section (less :data:`NOT_TRAINING`), the whole
    ``reward``, ``sampling`` and ``decode`` sections (selection's checks read the deployed decode; a setting added to
    any of them is in the fingerprint without an edit here), ``base.seed``, the profile and the SFT model's input
    format."""
    return {"rl": params.rl.model_dump(exclude=NOT_TRAINING), "reward": params.reward.model_dump(),
            "sampling": params.sampling.model_dump(), "decode": params.decode.model_dump(), "seed": params.base.seed,
            "profile": params.active.model_dump(), "task_prefix": params.sft.task_prefix,
            "max_source_length": params.sft.max_source_length}


def fingerprint(params: Params, sft_dir: str) -> str:
    """Whether a checkpoint belongs to this run: :func:`training_settings` and the SFT weights."""
    return run_fingerprint(training_settings(params), file_chunks(sorted(Path(sft_dir).glob("*.safetensors"))))


def save_checkpoint(ckpt_dir: Path, policy, optimizer, state: RunState, fp: str, selector=None,
                    live_dir: str | Path | None = None) -> None:
    """policy.safetensors, optimizer.pt, tensors.safetensors (marginal, torch RNG), state.json; with a
    ``selector`` (negopt.rl.selection.CheckpointSelector), its checks (in state.json) and kept weights
    (kept_policy.safetensors); with a ``live_dir``, a copy of its dvclive curves (``negopt.rl.live``)."""
    with atomic_dir(ckpt_dir) as tmp:
        save_model(policy, str(tmp / "policy.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"marginal": state.marginal.contiguous(), "torch_rng": torch.get_rng_state()},
                  str(tmp / "tensors.safetensors"))
        np_state = np.random.get_state()
        meta = {"step": state.step, "attempt": state.attempt, "steps_before": state.steps_before, "fingerprint": fp, "stats": state.stats.state_dict(), "seconds": state.seconds,
                "python_rng": random.getstate(), "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
        if selector is not None:
            save_file(selector.kept, str(tmp / "kept_policy.safetensors"))
            meta["selection"] = selector.state_dict()
        if live_dir is not None:
            save_live(live_dir, tmp)
        meta["files"] = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "state.json").write_text(json.dumps(meta))


def checkpoint_meta(ckpt_dir: Path) -> dict | None:
    """``state.json`` of a whole checkpoint: it parses and every file it lists is there at its written size;
    None otherwise (a torn or foreign folder)."""
    try:
        meta = json.loads((ckpt_dir / "state.json").read_text())
        files = meta["files"]
        if all((ckpt_dir / name).stat().st_size == size for name, size in files.items()):
            return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def load_checkpoint(ckpt_dir: Path, policy, optimizer, fp: str, remove_stale: bool = True,
                    selector=None) -> RunState | None:
    """Restore a checkpoint of the same run (same fingerprint); drop one of a different run or a torn one.

    Only one process may remove a stale checkpoint (``remove_stale``); the others just ignore it.
    """
    if not ckpt_dir.exists():
        return None
    meta = checkpoint_meta(ckpt_dir)
    if meta is None:
        if remove_stale:
            print(f"rl: checkpoint in {ckpt_dir} is incomplete (a file missing or cut short); not loaded, "
                  "starting afresh")
            shutil.rmtree(ckpt_dir)
        return None
    if meta["fingerprint"] != fp:
        if remove_stale:
            print(f"rl: checkpoint in {ckpt_dir} is from other settings or SFT weights; starting afresh")
            shutil.rmtree(ckpt_dir)
        return None
    load_model(policy, str(ckpt_dir / "policy.safetensors"), device=str(next(policy.parameters()).device))
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
    tensors = load_file(str(ckpt_dir / "tensors.safetensors"))
    torch.set_rng_state(tensors["torch_rng"])
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_rng = meta["numpy_rng"]
    np.random.set_state((np_rng[0], np.array(np_rng[1], dtype=np.uint32), *np_rng[2:]))
    stats = TermStats()
    stats.load_state_dict(meta["stats"])
    if selector is not None and "selection" in meta:
        selector.load_state_dict(meta["selection"], load_file(str(ckpt_dir / "kept_policy.safetensors")))
    return RunState(step=int(meta["step"]), stats=stats, marginal=tensors["marginal"], seconds=meta["seconds"],
                    attempt=int(meta["attempt"]), steps_before=int(meta["steps_before"]))
