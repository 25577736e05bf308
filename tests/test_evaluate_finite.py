"""evaluate refuses a NaN or infinite metric, naming the method and the metric, before eval.json exists."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from negopt.compare.evaluate import NonFiniteMetricError, check_finite, evaluate_all
from negopt.compare.manifest import read_manifest


class ConstScorer:
    def __init__(self, aesthetic: float = 5.0) -> None:
        self.value = aesthetic

    def aesthetic(self, images):
        return torch.full((len(images),), self.value)

    def clip_score(self, images, prompts):
        return torch.full((len(images),), 20.0)

    def inception_logits(self, images):  # two classes, a different posterior per image: a finite IS > 1
        return torch.stack([torch.arange(len(images), dtype=torch.float32), torch.zeros(len(images))], dim=1)


@pytest.fixture
def images_dir(tmp_path):
    rows = []
    for method in ("none", "rl"):
        (tmp_path / method).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / f"{method}/{i}_0.png")
            rows.append(dict(method=method, prompt_idx=i, prompt="p", negative="", seed=0, file=f"{method}/{i}_0.png"))
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    return tmp_path


def test_check_finite_passes_finite_rows_and_ints():
    check_finite("sft", {"inception_score": 1.5, "aesthetic": -3.0, "n_images": 4})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_finite_names_method_and_metric(value):
    with pytest.raises(NonFiniteMetricError, match=r"method 'rl'.*inception_score_std="):
        check_finite("rl", {"inception_score": 2.0, "inception_score_std": value, "n_images": 4})


def test_evaluate_all_stops_at_the_first_method_with_nan_is(images_dir):
    """The probe's failure: a random Inception overflowing at 299 px made every IS NaN without a word."""
    calls = []

    class Overflowing(ConstScorer):
        def inception_logits(self, images):
            calls.append(len(images))
            logits = super().inception_logits(images)
            return logits * math.nan if len(calls) == 2 else logits  # the second method (rl) goes NaN

    with pytest.raises(NonFiniteMetricError, match=r"method 'rl'.*inception_score=nan"):
        evaluate_all(read_manifest(images_dir), images_dir, Overflowing(), is_splits=2, batch_size=2)
    assert calls == [2, 2]


def test_evaluate_all_refuses_nan_aesthetic(images_dir):
    with pytest.raises(NonFiniteMetricError, match=r"method 'none'.*aesthetic=nan"):
        evaluate_all(read_manifest(images_dir), images_dir, ConstScorer(math.nan), is_splits=2, batch_size=2)
