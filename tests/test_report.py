"""report: the HTML holds the metric table, the gains, the charts and the image grid, all inlined."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from negopt.compare.gains import compare_methods
from negopt.compare.report import render_report, write_report

METHODS = ["none", "generic", "sft"]
NEGATIVES = {"none": "", "generic": "ugly, blurry", "sft": "<b>bad</b> & worse"}


def row(is_, aes, clip):
    return {
        "inception_score": is_,
        "inception_score_std": 0.05,
        "aesthetic": aes,
        "clip_score": clip,
        "n_images": 6,
    }


@pytest.fixture
def setup(tmp_path):
    """3 prompts x 2 seeds x 3 methods of 8x8 PNGs, each a flat colour unique to its cell."""
    rows = []
    for m_i, method in enumerate(METHODS):
        for p in range(3):
            for seed in (11, 7):
                file = f"{method}/{p}_{seed}.png"
                (tmp_path / method).mkdir(exist_ok=True)
                colour = np.full((8, 8, 3), (40 * m_i, 50 * p, seed), dtype=np.uint8)
                Image.fromarray(colour).save(tmp_path / file)
                rows.append(
                    dict(
                        method=method,
                        prompt_idx=p,
                        prompt=f"prompt {p} <x>",
                        negative=NEGATIVES[method],
                        seed=seed,
                        file=file,
                    )
                )
    manifest = pd.DataFrame(rows)
    eval_metrics = {"none": row(2.0, 4.0, 20.0), "generic": row(2.2, 4.4, 21.0), "sft": row(2.5, 5.0, 19.0)}
    comparison = compare_methods(eval_metrics, ["sft"], ["none", "generic"])
    charts = {"inception_score": (tmp_path / "none/0_7.png").read_bytes()}
    page = render_report(eval_metrics, comparison, manifest, tmp_path, charts, grid_prompts=2)
    return page, tmp_path


def test_tables(setup):
    page, _ = setup
    assert page.startswith("<!DOCTYPE html>")
    metrics = re.search(r"<table class='metrics'>.*?</table>", page).group(0)
    assert metrics.count("<tr>") == 1 + 3  # header + one row per method
    assert "<td>sft</td><td class='num'>2.5 &plusmn; 0.05</td>" in metrics
    gains = re.search(r"<table class='gains'>.*?</table>", page).group(0)
    # sft vs none: IS +25 %, aesthetic +25 %, CLIP (19-20)/20 = -5 %
    assert "<td>sft</td><td>none</td><td class='num pos'>+25.0%</td><td class='num pos'>+25.0%</td>" in gains
    assert "<td class='num neg'>-5.0%</td>" in gains


def test_grid_rows_columns_and_inlined_images(setup):
    page, images_dir = setup
    grid = re.search(r"<table class='grid'>.*?</table>", page).group(0)
    assert grid.count("<tr>") == 1 + 2  # header + grid_prompts rows
    assert "<th>none</th><th>generic</th><th>sft</th>" in grid
    srcs = re.findall(r"<img src='([^']*)'", grid)
    assert len(srcs) == 2 * 3
    # Row p, column m shows the prompt's smallest seed (7), inlined byte for byte.
    expected = [(images_dir / f"{m}/{p}_7.png").read_bytes() for p in range(2) for m in METHODS]
    assert [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in srcs] == expected
    # Negatives under images, HTML-escaped; the empty one is labelled.
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; worse" in grid and "<b>bad</b>" not in grid
    assert "<i>(empty)</i>" in grid
    assert "prompt 0 &lt;x&gt;" in grid and "prompt 2" not in grid


def test_self_contained(setup):
    page, _ = setup
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) == 2 * 3 + 1  # grid + one chart
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in page


def test_large_images_inlined_as_jpeg_thumbnails(tmp_path):
    from negopt.compare.report import thumbnail_uri

    big = tmp_path / "big.png"
    Image.fromarray(np.full((512, 512, 3), 200, dtype=np.uint8)).save(big)
    uri = thumbnail_uri(big)
    assert uri.startswith("data:image/jpeg;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.size == (256, 256)


def test_renders_in_headless_chromium(setup, tmp_path):
    # .ci/run installs Debian's chromium, so in CI a missing browser is a failure of ours, not a skip
    if shutil.which("chromium") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but chromium is not installed: .ci/run should apt-get install chromium")
        pytest.skip("chromium not installed (apt-get install chromium); CI runs this test")
    page, _ = setup
    html_path = tmp_path / "report" / "index.html"
    write_report(html_path, page)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp()}",
            f"--screenshot={shot}",
            "--window-size=1000,1200",
            html_path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1200, 1000)
    # A blank page is one colour; the rendered tables and images are not.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_profile_note_and_marked_intervals(setup):
    """The first lines name the profile (tiny: machinery, not image quality); a gain whose interval
    excludes 0 is bold with a *, one whose interval straddles 0 is not."""
    _, images_dir = setup
    eval_metrics = {"none": row(2.0, 4.0, 20.0), "sft": row(2.5, 5.0, 19.0)}
    comparison = compare_methods(eval_metrics, ["sft"], ["none"])
    ci = {"estimate": 25.0, "diff_low": 0.1, "diff_high": 0.9}
    comparison["sft"]["vs_none"]["ci"] = {
        "inception_score": ci | {"low": 5.0, "high": 40.0, "excludes_zero": True},
        "aesthetic": ci | {"low": -3.0, "high": 50.0, "excludes_zero": False},
        "clip_score": ci | {"low": None, "high": None, "excludes_zero": False},
    }
    manifest = pd.DataFrame(columns=["method", "prompt_idx", "prompt", "negative", "seed", "file"])
    page = render_report(eval_metrics, comparison, manifest, images_dir, {}, profile="tiny")
    body = page.split("<body>", 1)[1]
    assert body.index("tiny</b> profile") < body.index("<h2>") and "not image quality" in body
    gains = re.search(r"<table class='gains'>.*?</table>", page).group(0)
    assert "<td class='num pos sig'>+25.0% <span class='ci'>[+5.0%, +40.0%]*</span></td>" in gains
    assert "<td class='num pos'>+25.0% <span class='ci'>[-3.0%, +50.0%]</span></td>" in gains
    assert "[n/a]" in gains
    paper = render_report(eval_metrics, comparison, manifest, images_dir, {}, profile="paper")
    assert "paper</b> profile" in paper and "not image quality" not in paper


def test_rl_truth_section_sets_the_learned_gain_beside_the_oracles():
    from negopt.compare.report import rl_truth_section

    m = {"n_test": 40, "reward_test_sft": 0.1, "reward_test_rl": 0.5, "reward_test_gain": 0.4, "reward_test_gain_se": 0.1,
         "oracle_test_sft": 0.6, "oracle_test_rl": 0.55, "oracle_test_gain": -0.05, "oracle_test_gain_se": 0.025,
         "oracle_rate_blur_sft": 0.25, "oracle_rate_blur_rl": 0.5, "oracle_true_quality_sft": 0.6}
    page = rl_truth_section(m)
    text = re.sub(r"<[^>]+>", " ", page)
    assert re.search(r"learned reward\s+0\.1000\s+0\.5000\s+\+0\.4000 ± 0\.1000\s+\+4\.0", text.replace("&plusmn;", "±"))
    assert re.search(r"true quality \(oracle\)\s+0\.6000\s+0\.5500\s+-0\.0500 ± 0\.0250\s+-2\.0",
                     text.replace("&plusmn;", "±"))
    assert re.search(r"blur\s+0\.250\s+0\.500", text) and "40 test prompts" in text
    assert rl_truth_section({"reward_test_gain": 0.4}) == "" and rl_truth_section(None) == ""
