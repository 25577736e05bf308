"""Seeds, devices and the start-up every stage shares."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from negopt.errors import ParamsError
from negopt.params import Params, load_params, warn_recommendations


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ParamsError("base.device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def start_stage(params_path: str = "params.yaml") -> Params:
    """Validate params, seed everything, and keep the tiny profile off the network."""
    params = load_params(params_path)
    warn_recommendations(params)
    if params.profile == "tiny":
        # The tiny profile is built locally; any hub call would be a bug, so make it fail loudly.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    seed_everything(params.base.seed)
    return params
