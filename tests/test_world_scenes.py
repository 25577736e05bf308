"""The world's renderer, defects and captions, checked against hand-computed pixels and rates."""

import numpy as np
import pytest

from negopt.world.defects import (
    DEFECTS,
    SPECS,
    apply_defects,
    defect_rates,
    sample_defects,
    watermark_pattern,
)
from negopt.world.grammar import BACKGROUND, FOREGROUND, Content, all_contents, parse_content
from negopt.world.scenes import (
    BOUND,
    Scene,
    WorldConfig,
    render,
    render_clean,
    sample_scenes,
    truth_frame,
)

NO_DEFECTS = {d: 0.0 for d in DEFECTS}


def crafted(shape="square", defects=None, fg="red", bg="white", shapes=((10.0, 10.0, 5.0),)) -> Scene:
    content = Content(shape, len(shapes), fg, bg)
    return Scene(content, shapes, dict(NO_DEFECTS, **(defects or {})), (), content.text(), grain_seed=0)


def u8(rgb) -> np.ndarray:
    return np.round(np.asarray(rgb) * 255).astype(np.uint8)


def test_crafted_square_pixels():
    # square of half-side 0.85 * 5 = 4.25 around (10, 10): covers x in [5.75, 14.25]; pixel i spans [i, i+1)
    img = render([crafted()])[0]
    red, white = u8(FOREGROUND["red"]), u8(BACKGROUND["white"])
    assert (img[:, 6:14, 6:14] == red[:, None, None]).all()  # fully covered
    assert (img[:, 10, 4] == white).all() and (img[:, 10, 15] == white).all()  # outside
    # pixels 5 and 14 are a quarter covered (1 of 4 sub-samples per axis: 5.875 / 14.125 inside)
    quarter = u8(np.asarray(BACKGROUND["white"]) + 0.25 * (np.asarray(FOREGROUND["red"]) - np.asarray(BACKGROUND["white"])))
    assert (img[:, 10, 5] == quarter).all() and (img[:, 10, 14] == quarter).all()
    assert (img[:, 30, 2] == white).all()


def test_crafted_circle_and_triangle_shapes():
    circle = render_clean(crafted("circle"))
    assert circle[0, 10, 10] == pytest.approx(FOREGROUND["red"][0])
    assert circle[0, 10, 16] == pytest.approx(BACKGROUND["white"][0])  # 6 px right: beyond r = 5
    tri = render_clean(crafted("triangle", shapes=((16.0, 16.0, 6.0),)))
    cover = (tri[1] - BACKGROUND["white"][1]) / (FOREGROUND["red"][1] - BACKGROUND["white"][1])
    # upward triangle, circumradius 7.5: apex row narrow, base row wide, nothing above the apex
    assert cover[9].sum() < cover[18].sum() and cover[:8].sum() == 0


def test_washed_out_is_a_blend_to_grey():
    img = render_clean(crafted())
    out = apply_defects(img, dict(NO_DEFECTS, washed=0.6), np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.4 * img + 0.6 * 0.5, atol=1e-6)


def test_watermark_stripes_tile_the_image():
    img = np.full((3, 32, 32), 0.5, dtype=np.float32)
    out = apply_defects(img, dict(NO_DEFECTS, watermark=0.3), np.random.default_rng(0))
    np.testing.assert_allclose(out, np.broadcast_to(0.35 + 0.3 * watermark_pattern(32), (3, 32, 32)), atol=1e-6)
    pattern = watermark_pattern(8)
    assert pattern[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # diagonal stripes, 4 px wide
    assert pattern[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 1]


def test_blur_softens_edges_and_grain_has_its_sigma():
    img = render_clean(crafted())
    blurred = apply_defects(img, dict(NO_DEFECTS, blur=1.5), np.random.default_rng(0))
    assert np.abs(np.diff(blurred[1], axis=1)).max() < 0.5 * np.abs(np.diff(img[1], axis=1)).max()
    flat = np.full((3, 32, 32), 0.5, dtype=np.float32)
    grainy = apply_defects(flat, dict(NO_DEFECTS, grain=0.1), np.random.default_rng(0))
    assert grainy.std() == pytest.approx(0.1, rel=0.05)
    assert (grainy[:, ::2, ::2] == grainy[:, 1::2, 1::2]).all()  # one value per 2x2 block


def test_defect_rates_match_draws_and_depend_on_content():
    content = Content("square", 3, "red", "black")  # many shapes, dark: blur and grain both frequent
    rng = np.random.default_rng(0)
    draws = [sample_defects(content, rng) for _ in range(20000)]
    rates = defect_rates(content)
    for d in DEFECTS:
        freq = np.mean([x[d] > 0 for x in draws])
        assert freq == pytest.approx(rates[d], abs=4 * np.sqrt(rates[d] * (1 - rates[d]) / 20000))
        strengths = [x[d] for x in draws if x[d] > 0]
        assert SPECS[d].low <= min(strengths) and max(strengths) <= SPECS[d].high
    dark, pale = defect_rates(Content("circle", 1, "red", "navy")), defect_rates(Content("circle", 1, "red", "cream"))
    assert dark["grain"] > 2 * pale["grain"] and pale["washed"] > 2 * dark["washed"]
    # blur and grain exclude each other: together far less often than independence would give
    both = np.mean([x["blur"] > 0 and x["grain"] > 0 for x in draws])
    assert both < 0.5 * rates["blur"] * rates["grain"]


def test_scenes_are_deterministic_per_index():
    a, b = sample_scenes(5, seed=3), sample_scenes(9, seed=3)
    assert a == b[:5]
    np.testing.assert_array_equal(render(a), render(b[:5]))
    assert sample_scenes(5, seed=4) != a


def test_layout_inside_and_apart():
    for s in sample_scenes(300, seed=1):
        for i, (x, y, r) in enumerate(s.shapes):
            b = BOUND * r
            assert 1 <= x - b and x + b <= 31 and 1 <= y - b and y + b <= 31
            for x2, y2, r2 in s.shapes[i + 1:]:
                assert np.hypot(x - x2, y - y2) >= b + BOUND * r2 + 1 - 1e-9


def test_captions_name_content_and_only_present_defects():
    scenes = sample_scenes(400, seed=2, config=WorldConfig(empty_rate=0.1))
    empty = [s for s in scenes if s.caption == ""]
    assert 20 <= len(empty) <= 70
    for s in scenes:
        if s.caption:
            assert parse_content(s.caption) == s.content
        for d, word in s.named:
            assert s.defects[d] > 0 and word in s.caption and word in SPECS[d].words
    frame = truth_frame(scenes)
    assert len(frame) == 400 and set(DEFECTS) <= set(frame.columns)
    named = frame["named"].str.contains("watermark").sum() / (frame["watermark"] > 0).sum()
    assert 0.55 < named < 0.85  # WorldConfig.named_rate: a present defect is named 70% of the time


def test_parse_content_round_trips_every_content():
    for c in all_contents():
        assert parse_content("masterpiece, " + c.text() + ", (blurry:1.2)") == c
    assert parse_content("a photo of a cat") is None
    with pytest.raises(ValueError):
        Content("hexagon", 1, "red", "white")
