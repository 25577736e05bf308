"""Analytic detectors, their calibration and AUC, and the content checker, on renderer images."""

import numpy as np
import pytest

from negopt.world.defects import DEFECTS
from negopt.world.detectors import (
    Calibration,
    auc,
    calibrate,
    defect_scores,
    detect,
    estimate_strengths,
    read_content,
    youden_threshold,
)
from negopt.world.grammar import Content
from negopt.world.scenes import Scene, render, sample_scenes, truth_frame


@pytest.fixture(scope="module")
def renders():
    scenes = sample_scenes(1200, seed=101)
    return render(scenes), truth_frame(scenes)


@pytest.fixture(scope="module")
def calibration():
    scenes = sample_scenes(1500, seed=202)
    return calibrate(render(scenes), truth_frame(scenes), seed=202)


def test_auc_by_hand():
    assert auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # all tied
    # positives 2 and 4 vs negatives 1 and 3: pairs (2>1, 2<3, 4>1, 4>3) -> 3/4
    assert auc([1, 2, 3, 4], [0, 1, 0, 1]) == 0.75
    assert np.isnan(auc([1, 2], [1, 1]))


def test_youden_threshold_separates():
    assert youden_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_detector_auc_on_renders_at_least_095(renders):
    images, truth = renders
    scores = defect_scores(images)
    aucs = {d: auc(scores[d], truth[d] > 0) for d in DEFECTS}
    assert all(a >= 0.95 for a in aucs.values()), aucs


def test_watermark_score_is_its_alpha_and_grain_its_sigma():
    def one(**defects) -> Scene:
        content = Content("circle", 1, "red", "grey")  # grey: grain does not clip at 0 or 1
        return Scene(content, ((10.0, 10.0, 5.0),), {d: defects.get(d, 0.0) for d in DEFECTS}, (), "", 0)

    assert defect_scores(render([one(watermark=0.3)]))["watermark"][0] == pytest.approx(0.3, abs=0.02)
    assert defect_scores(render([one()]))["watermark"][0] == pytest.approx(0.0, abs=0.01)
    assert defect_scores(render([one(grain=0.12)]))["grain"][0] == pytest.approx(0.12, rel=0.1)


def test_calibrated_detection_and_strengths(renders, calibration):
    images, truth = renders
    found = detect(images, calibration)
    for d in DEFECTS:
        assert (found[d] == (truth[d] > 0)).mean() >= 0.93, d
    strengths = estimate_strengths(images, calibration)
    assert (strengths.to_numpy()[~found.to_numpy()] == 0).all()
    wm = truth["watermark"] > 0
    assert np.corrcoef(strengths["watermark"][wm], truth["watermark"][wm])[0, 1] > 0.9


def test_calibration_round_trips(tmp_path, calibration):
    calibration.save(tmp_path / "cal.json")
    again = Calibration.load(tmp_path / "cal.json")
    assert again == calibration


def test_read_content_on_renders(renders):
    images, truth = renders
    read = read_content(images[:600])
    t = truth.iloc[:600]
    acc = {a: (read[a].to_numpy() == t[a].to_numpy()).mean() for a in ("shape", "count", "fg", "bg")}
    assert acc["bg"] >= 0.98 and acc["fg"] >= 0.98 and acc["count"] >= 0.95 and acc["shape"] >= 0.9, acc


def test_read_content_of_an_empty_image():
    flat = np.full((1, 3, 32, 32), 128, dtype=np.uint8)
    read = read_content(flat)
    assert read["count"][0] == 0 and read["fg"][0] == "" and read["bg"][0] == "grey"
