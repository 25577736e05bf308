"""True quality from the truth record."""

import numpy as np
import pandas as pd
import pytest

from negopt.world.defects import SPECS, severity
from negopt.world.quality import alignment, image_quality, true_quality


def truth(**defects) -> pd.DataFrame:
    row = {"shape": "circle", "count": 2, "fg": "red", "bg": "black",
           "blur": 0.0, "washed": 0.0, "watermark": 0.0, "grain": 0.0}
    return pd.DataFrame([dict(row, **defects)])


def test_severity_by_hand():
    assert severity("blur", 0.0) == 0.0
    assert severity("blur", SPECS["blur"].low) == pytest.approx(0.4)
    assert severity("blur", SPECS["blur"].high) == pytest.approx(1.0)
    assert severity("grain", 0.13) == pytest.approx(0.4 + 0.6 * 0.5)


def test_image_quality_by_hand():
    assert image_quality(truth())[0] == 1.0
    assert image_quality(truth(blur=1.8))[0] == pytest.approx(0.75)
    worst = {d: spec.high for d, spec in SPECS.items()}
    assert image_quality(truth(**worst))[0] == pytest.approx(0.0)
    assert image_quality(truth(grain=0.08))[0] == pytest.approx(1 - 0.25 * 0.4)


def test_alignment_costs_more_than_a_defect():
    shown = truth(blur=1.8)
    asked = truth().assign(fg="blue")
    assert alignment(shown, asked)[0] == 0.75
    assert true_quality(shown, asked)[0] == pytest.approx(0.75 - 0.25)
    assert true_quality(shown)[0] == pytest.approx(0.75)
    clean_wrong = true_quality(truth(), asked)
    flawed_right = true_quality(truth(blur=1.8))
    assert np.all(clean_wrong < flawed_right + 1e-12) or np.allclose(clean_wrong, flawed_right)
