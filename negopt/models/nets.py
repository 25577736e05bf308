"""Model classes and registrations both profiles use: the tiny zoo builds them with random weights, the
loader fills them with the profile's weights (tiny files or the real LAION / open_clip checkpoints)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class AestheticMLP(nn.Module):
    """The LAION "improved aesthetic predictor" head; key layout matches sac+logos+ava1-l14-linearMSE.pth."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def register_clip_config(config_path: str | Path) -> str:
    """Register an open_clip model config file; its stem is the model name open_clip knows it by."""
    import open_clip

    config_path = Path(config_path)
    if config_path.stem not in open_clip.list_models():
        open_clip.add_model_config(config_path)
    return config_path.stem
