"""compare: relative gains on a crafted eval.json, checked against percentages worked out by hand."""

from __future__ import annotations

import json

import pytest

from negopt.compare.gains import compare_methods, format_gain, gains_markdown, relative_gain, write_comparison


def row(is_, aes, clip, std=0.1, n=20):
    return {
        "inception_score": is_,
        "inception_score_std": std,
        "aesthetic": aes,
        "clip_score": clip,
        "n_images": n,
    }


@pytest.fixture
def eval_metrics():
    return {
        "none": row(2.0, -4.0, 20.0),
        "generic": row(2.4, 5.0, 25.0),
        "ground_truth": row(1.6, 4.0, 0.0),
        "sft": row(2.5, -3.0, 18.0),
        "rl": row(3.0, 5.0, 22.0),
    }


def test_relative_gain_by_hand():
    assert relative_gain(2.5, 2.0) == pytest.approx(25.0)
    assert relative_gain(1.5, 2.0) == pytest.approx(-25.0)
    # |base| in the denominator: -3 is better than -4, so the gain is positive (+1 / 4).
    assert relative_gain(-3.0, -4.0) == pytest.approx(25.0)
    assert relative_gain(1.0, 0.0) is None


def test_format_gain():
    assert format_gain(24.84) == "+24.8%" and format_gain(-10.0) == "-10.0%" and format_gain(None) == "n/a"
    # A random Inception's IS moves by ~1e-5: (1.000012 - 1.0) / 1.0 = +0.0012 % must not print as +0.0 %.
    assert format_gain(relative_gain(1.000012, 1.0)) == "+0.0012%"


def test_compare_crafted_eval(eval_metrics):
    c = compare_methods(eval_metrics, ["sft", "rl"], ["none", "generic", "ground_truth"])
    assert list(c) == ["sft", "rl"]
    assert list(c["sft"]) == ["vs_none", "vs_generic", "vs_ground_truth"]
    # sft vs none: IS (2.5-2)/2 = +25 %, aesthetic (-3+4)/4 = +25 %, CLIP (18-20)/20 = -10 %
    assert c["sft"]["vs_none"] == pytest.approx(
        {"inception_score": 25.0, "aesthetic": 25.0, "clip_score": -10.0}
    )
    # sft vs generic: IS 0.1/2.4 = 4.1667 %, aesthetic -8/5 = -160 %, CLIP -7/25 = -28 %
    assert c["sft"]["vs_generic"] == pytest.approx(
        {"inception_score": 100 * 0.1 / 2.4, "aesthetic": -160.0, "clip_score": -28.0}
    )
    # rl vs ground_truth: IS 1.4/1.6 = 87.5 %, aesthetic 1/4 = 25 %, CLIP baseline 0 -> undefined
    gt = c["rl"]["vs_ground_truth"]
    assert gt["inception_score"] == pytest.approx(87.5)
    assert gt["aesthetic"] == pytest.approx(25.0)
    assert gt["clip_score"] is None
    # rl vs none: aesthetic (5+4)/4 = +225 %
    assert c["rl"]["vs_none"]["aesthetic"] == pytest.approx(225.0)
    # a method listed as candidate and baseline is compared with the others, never with itself
    both = compare_methods(eval_metrics, ["sft", "rl"], ["sft", "none"])
    assert list(both["sft"]) == ["vs_none"] and list(both["rl"]) == ["vs_sft", "vs_none"]
    assert both["rl"]["vs_sft"]["inception_score"] == pytest.approx(20.0)  # (3 - 2.5) / 2.5


def test_markdown_table(eval_metrics):
    md = gains_markdown(compare_methods(eval_metrics, ["sft"], ["none", "ground_truth"]))
    lines = md.splitlines()
    assert lines[0] == "| candidate | baseline | Inception Score | Aesthetic | CLIP score |"
    assert lines[2] == "| sft | none | +25.0% | +25.0% | -10.0% |"
    # IS (2.5-1.6)/1.6 = 56.25 %, aesthetic (-3-4)/4 = -175 %, CLIP against 0 is n/a
    assert lines[3] == "| sft | ground_truth | +56.2% | -175.0% | n/a |"
    assert len(lines) == 4


def test_missing_methods_skipped_then_error(eval_metrics, capsys):
    partial = {k: v for k, v in eval_metrics.items() if k != "rl"}
    c = compare_methods(partial, ["sft", "rl"], ["none"])
    assert list(c) == ["sft"]
    assert "rl" in capsys.readouterr().err
    with pytest.raises(ValueError, match="compare.candidates"):
        compare_methods({"none": partial["none"]}, ["sft", "rl"], ["none"])


def bar_heights(png: bytes) -> list[int]:
    """Decode a bar chart and return each bar's rank by height (left to right), from the pixels.

    Bars are the runs of columns holding the bar colour #4c72b0; a bar's height is its count of
    bar-coloured pixels in its middle column.
    """
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    blue = (np.abs(img - np.array([76, 114, 176])).sum(-1) < 30)  # [H, W]
    cols = blue.sum(0) > 0
    runs, start = [], None
    for x, on in enumerate([*cols, False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            runs.append((start, x))
            start = None
    heights = [int(blue[:, (a + b) // 2].sum()) for a, b in runs]
    return [sorted(heights).index(h) for h in heights]


def ranks(eval_metrics, metric) -> list[int]:
    values = [eval_metrics[m][metric] for m in eval_metrics]
    return [sorted(values).index(v) for v in values]


def test_write_comparison_files(eval_metrics, tmp_path):
    comparison, pngs = write_comparison(
        eval_metrics, ["sft", "rl"], ["none"], tmp_path / "metrics" / "comparison.json", tmp_path / "plots"
    )
    on_disk = json.loads((tmp_path / "metrics" / "comparison.json").read_text())
    assert on_disk["rl"]["vs_none"]["inception_score"] == pytest.approx(50.0)  # (3-2)/2
    assert on_disk == json.loads(json.dumps(comparison))
    is_rows = json.loads((tmp_path / "plots" / "inception_score.json").read_text())
    assert is_rows == [
        {"method": m, "inception_score": eval_metrics[m]["inception_score"]} for m in eval_metrics
    ]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "aesthetic.json",
        "clip_score.json",
        "inception_score.json",
    ]
    assert set(pngs) == {"inception_score", "aesthetic", "clip_score"}
    for metric, png in pngs.items():
        assert bar_heights(png) == ranks(eval_metrics, metric), metric
    assert not list((tmp_path / "metrics").glob(".*"))  # no temp files left behind


def test_search_images_column_from_generate_metrics(eval_metrics):
    """best_of_n's search cost (metrics/generate.json) is printed beside its row; other methods cost 0."""
    import pandas as pd

    from negopt.compare.gains import metrics_markdown, search_costs
    from negopt.compare.generate import generate_metrics

    manifest = pd.DataFrame({"method": ["none", "none", "best_of_n", "best_of_n"], "prompt_idx": [0, 0, 0, 0],
                             "negative": ["", "", "(blurry:1.3), easynegative", "(blurry:1.3), easynegative"]})
    gen = generate_metrics(manifest, {"best_of_n": {"n": 4, "search_images": 17}})
    assert gen["methods"] == {"none": {"eval_images": 2, "search_images": 0},
                              "best_of_n": {"eval_images": 2, "search_images": 17}}
    # how each method's negatives are written, one count per prompt (not per image); the unloaded embedding named
    assert gen["syntax"]["best_of_n"]["weighted"] == 1.0 and gen["syntax"]["none"]["weighted"] == 0.0
    assert gen["unloaded_embeddings"] == {"best_of_n": {"easynegative": 1}}  # prompts naming it
    costs = search_costs(gen)
    md = metrics_markdown(eval_metrics | {"best_of_n": eval_metrics["sft"]}, costs)
    assert md.splitlines()[-1].endswith("| 20 | 17 |") and "| none | 2 ± 0.1 | -4 | 20 | 20 | 0 |" in md


def test_preference_scores_are_compared_when_every_method_has_them():
    from negopt.compare.gains import compare_methods, compared_metrics, gains_markdown

    base = {"inception_score": 2.0, "aesthetic": 5.0, "clip_score": 20.0}
    both = {"sft": base | {"hpsv2": 20.0, "pickscore": 10.0}, "none": base | {"hpsv2": 25.0, "pickscore": 10.0}}
    assert list(compared_metrics(both)) == ["inception_score", "aesthetic", "clip_score", "hpsv2", "pickscore"]
    gains = compare_methods(both, ["sft"], ["none"])["sft"]["vs_none"]
    assert gains["hpsv2"] == pytest.approx(-20.0) and gains["pickscore"] == 0.0  # (20 - 25) / 25
    assert "HPSv2" in gains_markdown({"sft": {"vs_none": gains}})
    one = {"sft": base | {"hpsv2": 20.0}, "none": base}  # a method without it: not compared
    assert "hpsv2" not in compare_methods(one, ["sft"], ["none"])["sft"]["vs_none"]
