"""A rendered training set: images, their truth and captions, saved once and shared by every trainer.

Folder layout written by :meth:`RenderedSet.save`::

    images.npy       uint8 [N, 3, H, W]
    truth.parquet    one row per image (:func:`negopt.world.scenes.truth_frame`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from negopt.world.scenes import WorldConfig, render, sample_scenes, truth_frame


@dataclass
class RenderedSet:
    """``images`` uint8 ``[N, 3, H, W]`` and ``truth`` (N rows, with ``caption`` and ``prompt``)."""

    images: np.ndarray
    truth: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", self.images)
        self.truth.to_parquet(folder / "truth.parquet")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RenderedSet:
        folder = Path(folder)
        return cls(np.load(folder / "images.npy"), pd.read_parquet(folder / "truth.parquet"))

    def subset(self, index) -> RenderedSet:
        index = np.asarray(index)
        return RenderedSet(self.images[index], self.truth.iloc[index].reset_index(drop=True))


def render_set(n: int, seed: int, config: WorldConfig = WorldConfig(), chunk: int = 512,
               progress: bool = True) -> RenderedSet:
    """``n`` scenes of ``sample_scenes(n, seed, config)``, rendered in chunks (a tqdm bar when ``progress``)."""
    from tqdm.auto import tqdm

    scenes = sample_scenes(n, seed, config)
    parts = [render(scenes[i:i + chunk]) for i in tqdm(range(0, n, chunk), desc="render", disable=not progress)]
    return RenderedSet(np.concatenate(parts), truth_frame(scenes))
