"""Seeds, devices and the start-up every stage shares."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import numpy as np

from negopt.core.errors import ParamsError
from negopt.core.params import Params, load_params, warn_recommendations

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int, uses_torch: bool = True) -> None:
    """Python's, numpy's and (unless the stage never imports it) torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if uses_torch:
        # here, not at the top: importing torch is most of a light stage's start-up (bench/RESULTS.md)
        import torch

        torch.manual_seed(seed)


def resolve_device(choice: str = "auto") -> torch.device:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise ParamsError("base.device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def start_stage(params_path: str = "params.yaml", uses_torch: bool = True) -> Params:
    """Validate params, seed everything, and keep the tiny profile off the network.

    ``uses_torch=False`` for the stages that never import torch (scrape, clean, compare:
    tests/test_errors.py checks), so they do not pay its import.
    """
    params = load_params(params_path)
    warn_recommendations(params)
    if params.profile in ("tiny", "world"):
        # These profiles are built locally; any hub call would be a bug, so make it fail loudly.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    seed_everything(params.base.seed, uses_torch)
    return params
