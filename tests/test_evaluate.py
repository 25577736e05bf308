"""evaluate: per-method rows from the manifest, with a stand-in scorer whose scores are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from negopt.compare.evaluate import evaluate_all, load_images
from negopt.compare.manifest import read_manifest


class FakeScorer:
    """aesthetic = mean pixel / 255; clip = prompt length * mean pixel / 255.

    The CLIP stand-in depends on the image *and* its prompt, so scoring an image against another
    image's prompt changes the method's mean (a prompt-only score would not: its mean ignores order).
    """

    def aesthetic(self, images):
        return images.float().mean(dim=(1, 2, 3)) / 255

    def clip_score(self, images, prompts):
        assert len(images) == len(prompts)
        return torch.tensor([float(len(p)) for p in prompts]) * images.float().mean(dim=(1, 2, 3)) / 255

    def inception_logits(self, images):  # class 0 posterior = mean pixel / 255 (logits = log posteriors)
        a = images.float().mean(dim=(1, 2, 3)) / 255
        return torch.stack([a, 1 - a], dim=1).clamp_min(1e-12).log()


@pytest.fixture
def images_dir(tmp_path):
    rows = []
    for method, level in (("none", 0), ("sft", 255)):
        (tmp_path / method).mkdir()
        for i, prompt in enumerate(["ab", "abcd", "abcdef"]):
            value = level if i < 2 else 51  # two flat images at `level`, one at 51
            Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(tmp_path / f"{method}/{i}_0.png")
            rows.append(
                dict(
                    method=method,
                    prompt_idx=i,
                    prompt=prompt,
                    negative="",
                    seed=0,
                    file=f"{method}/{i}_0.png",
                )
            )
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    return tmp_path


def test_load_images_round_trip(images_dir):
    x = load_images(images_dir, ["sft/0_0.png", "sft/2_0.png"])
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4, 4)
    assert x[0].unique().tolist() == [255] and x[1].unique().tolist() == [51]


def test_evaluate_all_by_hand(images_dir):
    out = evaluate_all(read_manifest(images_dir), images_dir, FakeScorer(), is_splits=1, batch_size=2)
    assert list(out) == ["none", "sft"]
    # none: pixels (0, 0, 51) -> aesthetic (0 + 0 + 0.2) / 3; sft: (1 + 1 + 0.2) / 3
    assert out["none"]["aesthetic"] == pytest.approx(0.2 / 3)
    assert out["sft"]["aesthetic"] == pytest.approx(2.2 / 3)
    # clip, prompts (ab, abcd, abcdef) paired with their own images: none (0 + 0 + 6 * 0.2) / 3,
    # sft (2 * 1 + 4 * 1 + 6 * 0.2) / 3; reversed pairing would give sft (6 + 4 + 0.4) / 3
    assert out["none"]["clip_score"] == pytest.approx(1.2 / 3) and out["sft"]["clip_score"] == pytest.approx(7.2 / 3)
    # IS of sft by hand: posteriors (1, 0), (1, 0), (0.2, 0.8); marginal q = (0.7333, 0.2667);
    # KL(p_i || q) = ln(1 / 0.7333) twice and 0.2 ln(0.2 / 0.7333) + 0.8 ln(0.8 / 0.2667); IS = exp(mean KL)
    q0, q1 = 2.2 / 3, 0.8 / 3
    kl = [math.log(1 / q0)] * 2 + [0.2 * math.log(0.2 / q0) + 0.8 * math.log(0.8 / q1)]
    assert out["sft"]["inception_score"] == pytest.approx(math.exp(sum(kl) / 3), rel=1e-6)
    assert out["sft"]["inception_score_std"] == 0.0  # one split
    assert out["none"]["n_images"] == 3
    with pytest.raises(ValueError, match="evaluate.is_splits=10"):
        evaluate_all(read_manifest(images_dir), images_dir, FakeScorer(), is_splits=10, batch_size=2)


def test_missing_manifest_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro generate"):
        read_manifest(tmp_path)


def test_evaluate_all_keeps_per_image_scores_and_posteriors(images_dir, tmp_path):
    """per_image gets each image's own scores (manifest order) and Inception posteriors, and the
    scores table round-trips with them (negopt.compare.scores)."""
    from negopt.compare.scores import read_scores, write_scores

    per_image: dict = {}
    manifest = read_manifest(images_dir)
    out = evaluate_all(manifest, images_dir, FakeScorer(), is_splits=3, batch_size=2, per_image=per_image)
    assert list(per_image) == ["none", "sft"]
    # evaluate.is_splits reaches the IS: 3 splits of one image each, every split's marginal its own posterior,
    # so IS = 1 exactly (one split gives ~1.55, test_evaluate_all_by_hand)
    assert out["sft"]["inception_score"] == pytest.approx(1.0) and out["sft"]["inception_score_std"] == pytest.approx(0.0)
    assert per_image["sft"]["aesthetic"].tolist() == pytest.approx([1.0, 1.0, 0.2])
    assert per_image["none"]["clip_score"].tolist() == pytest.approx([0.0, 0.0, 6 * 0.2])
    assert per_image["sft"]["inception_probs"].flatten().tolist() == pytest.approx([1, 0, 1, 0, 0.2, 0.8])
    assert out["sft"]["aesthetic"] == pytest.approx(float(per_image["sft"]["aesthetic"].mean()))
    write_scores(tmp_path / "scores", manifest, per_image)
    frame, probs = read_scores(tmp_path / "scores")
    assert frame[["method", "prompt_idx", "seed", "file"]].values.tolist() == manifest[
        ["method", "prompt_idx", "seed", "file"]].values.tolist()
    assert frame.loc[frame.method == "none", "clip_score"].tolist() == pytest.approx([0.0, 0.0, 1.2])
    assert probs["sft"].shape == (3, 2) and probs["sft"][2].tolist() == pytest.approx([0.2, 0.8])
