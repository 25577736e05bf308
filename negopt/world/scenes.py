"""Scenes: sampling, captions, rendering, and the truth record of every rendered image.

A :class:`Scene` holds everything about one image: its :class:`~negopt.world.grammar.Content`, the layout
of its shapes, its defects and their strengths, which defects its caption names, and the seed of its
grain. :func:`render` turns scenes into uint8 ``[N, 3, H, W]`` images (a pure function of the scenes);
:func:`truth_frame` turns them into a DataFrame, one row per image.

Every scene ``i`` of ``sample_scenes(n, seed)`` draws from its own generator ``default_rng([seed, i])``,
so scene ``i`` is the same whatever ``n`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from negopt.world.defects import DEFECTS, SPECS, WATERMARK_OFFSETS, apply_defects, sample_defects
from negopt.world.grammar import BACKGROUND, COUNT_WORDS, FOREGROUND, SHAPES, Content

#: words users put in prompts and negatives that say nothing about this world's images; they appear in
#: training captions at random, so the models learn that they mean nothing (an honest irrelevant control)
FILLER_WORDS: tuple[str, ...] = (
    "ugly", "bad hands", "extra fingers", "deformed", "bad anatomy", "lowres", "worst quality",
    "low quality", "jpeg artifacts", "cropped", "masterpiece", "best quality", "highly detailed",
    "signature", "text", "disfigured", "mutated", "8k",
)

WEIGHT_LEVELS: tuple[str, ...] = ("0.8", "1.1", "1.2", "1.3", "1.4", "1.5")  # A1111 weights users write

#: shape radius range (px at 32 px) by count: fewer shapes are larger
RADIUS: dict[int, tuple[float, float]] = {1: (5.0, 8.0), 2: (4.5, 6.5), 3: (3.5, 5.5)}
BOUND = 1.25  # a shape of radius r fits in a circle of radius BOUND * r (the triangle's circumradius)


@dataclass(frozen=True)
class WorldConfig:
    """How scenes are sampled and captioned.

    ``named_rate``: the chance that a caption names a defect the image has (defect -> rate). Higher
    binds the word faster; lower keeps more defects in images whose prompt does not name them under
    classifier-free guidance (which pushes away from whatever the unconditional branch has more of). ``filler_rate``: the chance that a caption carries 1-3 :data:`FILLER_WORDS`.
    ``weight_rate``: the chance that each extra word is written with an A1111 weight, ``(word:1.2)``, as
    users write them (so the tokens of that syntax are seen in training, with no effect on the image).
    ``empty_rate``: the share of empty captions (the unconditional branch of classifier-free guidance).
    """

    image_size: int = 32
    named_rate: dict[str, float] = field(
        default_factory=lambda: {"blur": 0.7, "washed": 0.7, "watermark": 0.7, "grain": 0.7})
    filler_rate: float = 0.3
    weight_rate: float = 0.15
    empty_rate: float = 0.0
    supersample: int = 4  # anti-aliasing: shapes are drawn at this many times the size, then averaged


@dataclass(frozen=True)
class Scene:
    """One image's truth. ``shapes``: (cx, cy, r) per shape in pixels at ``image_size``; ``defects``:
    defect -> strength (0.0 = absent); ``named``: (defect, word) pairs the caption names; ``caption``: the
    training caption (content + named defect words + filler, or "" for an empty caption);
    ``watermark_offset``: the stripes' phase (used only if the watermark is present)."""

    content: Content
    shapes: tuple[tuple[float, float, float], ...]
    defects: dict[str, float]
    named: tuple[tuple[str, str], ...]
    caption: str
    grain_seed: int
    image_size: int = 32
    watermark_offset: int = 0

    def present(self) -> tuple[str, ...]:
        return tuple(d for d in DEFECTS if self.defects[d] > 0)


def sample_content(rng: np.random.Generator) -> Content:
    """A uniformly random content (shape, count, foreground, background independent)."""
    return Content(
        SHAPES[rng.integers(len(SHAPES))],
        int(rng.integers(1, len(COUNT_WORDS) + 1)),
        list(FOREGROUND)[rng.integers(len(FOREGROUND))],
        list(BACKGROUND)[rng.integers(len(BACKGROUND))],
    )


def sample_layout(count: int, size: int, rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    """``count`` non-overlapping shapes (cx, cy, r) inside the image.

    Radii come from :data:`RADIUS` (scaled to ``size``); a shape's bounding circle (``BOUND * r``) stays
    1 px inside the border and 1 px from every other. After 200 failed placements the radii shrink by
    10% and placement starts over.
    """
    scale = size / 32
    lo, hi = RADIUS[count]
    radii = rng.uniform(lo, hi, size=count) * scale
    while True:
        placed: list[tuple[float, float, float]] = []
        for _ in range(200):
            r = radii[len(placed)]
            b = BOUND * r
            cx, cy = rng.uniform(b + 1, size - b - 1, size=2)
            if all(np.hypot(cx - x, cy - y) >= b + BOUND * s + 1 for x, y, s in placed):
                placed.append((float(cx), float(cy), float(r)))
                if len(placed) == count:
                    return tuple(placed)
        radii = radii * 0.9


def _caption(content: Content, named: tuple[tuple[str, str], ...], rng: np.random.Generator,
             config: WorldConfig) -> str:
    extras = [w for _, w in named]
    if rng.random() < config.filler_rate:
        extras += [str(w) for w in rng.choice(FILLER_WORDS, size=int(rng.integers(1, 4)), replace=False)]
    rng.shuffle(extras)
    weights = rng.random(len(extras)) < config.weight_rate
    levels = rng.choice(WEIGHT_LEVELS, size=len(extras))
    extras = [f"({w}:{v})" if wt else w for w, wt, v in zip(extras, weights, levels, strict=True)]
    return ", ".join([content.text(), *extras])


def sample_scene(content: Content, rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> Scene:
    """One scene of ``content``: layout, defects at the content's rates, caption words, grain seed."""
    shapes = sample_layout(content.count, config.image_size, rng)
    defects = sample_defects(content, rng)
    named = []
    for d in DEFECTS:
        u, pick = rng.random(), rng.random()
        if defects[d] > 0 and u < config.named_rate[d]:
            named.append((d, SPECS[d].pick(pick)))
    caption = _caption(content, tuple(named), rng, config)
    if rng.random() < config.empty_rate:
        caption, named = "", []
    return Scene(content, shapes, defects, tuple(named), caption, int(rng.integers(2**31)), config.image_size,
                 int(rng.integers(WATERMARK_OFFSETS)))


def sample_scenes(n: int, seed: int, config: WorldConfig = WorldConfig(),
                  contents: list[Content] | None = None) -> list[Scene]:
    """``n`` scenes; scene ``i`` from ``default_rng([seed, i])``, its content random or ``contents[i]``."""
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        content = sample_content(rng) if contents is None else contents[i]
        scenes.append(sample_scene(content, rng, config))
    return scenes


def shape_mask(shape: str, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape at pixel-centre coordinates ``xs``, ``ys``.

    circle: radius r; square: half-side 0.85 r; triangle: equilateral, pointing up, circumradius 1.25 r
    (areas ~3.1 r^2, 2.9 r^2, 2.0 r^2: the three kinds look about equally large).
    """
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "square":
        h = 0.85 * r
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    if shape == "triangle":
        big = BOUND * r
        top, base = cy - big, cy + big / 2
        half = (ys - top) / (base - top) * big * np.sqrt(3) / 2  # half-width at height ys
        return (ys >= top) & (ys <= base) & (np.abs(xs - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def render_clean(scene: Scene, supersample: int = 4) -> np.ndarray:
    """The scene without defects, float32 ``[3, H, W]`` in [0, 1], anti-aliased by ``supersample``^2
    samples per pixel (a pixel is ``bg + coverage * (fg - bg)``)."""
    size, k = scene.image_size, supersample
    coords = (np.arange(size * k) + 0.5) / k
    xs, ys = np.meshgrid(coords, coords)
    mask = np.zeros((size * k, size * k), dtype=bool)
    for cx, cy, r in scene.shapes:
        mask |= shape_mask(scene.content.shape, cx, cy, r, xs, ys)
    cover = mask.reshape(size, k, size, k).mean(axis=(1, 3)).astype(np.float32)
    bg = np.asarray(BACKGROUND[scene.content.bg], dtype=np.float32)[:, None, None]
    fg = np.asarray(FOREGROUND[scene.content.fg], dtype=np.float32)[:, None, None]
    return bg + cover[None] * (fg - bg)


def render(scenes: list[Scene], supersample: int = 4) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` images of ``scenes`` with their defects (grain from each ``grain_seed``)."""
    out = [apply_defects(render_clean(s, supersample), s.defects, np.random.default_rng(s.grain_seed),
                         s.watermark_offset) for s in scenes]
    return np.round(np.stack(out) * 255).astype(np.uint8)


def render_tensor(scenes: list[Scene], supersample: int = 4):
    """:func:`render` as a torch uint8 tensor ``[N, 3, H, W]``."""
    import torch

    return torch.from_numpy(render(scenes, supersample))


def truth_frame(scenes: list[Scene]) -> pd.DataFrame:
    """One row per scene: shape, count, fg, bg, each defect's strength (0 = absent), the stripes' phase,
    the defects the caption names (comma-joined), the caption, and ``prompt`` (the content part alone)."""
    return pd.DataFrame({
        "shape": [s.content.shape for s in scenes],
        "count": [s.content.count for s in scenes],
        "fg": [s.content.fg for s in scenes],
        "bg": [s.content.bg for s in scenes],
        **{d: [s.defects[d] for s in scenes] for d in DEFECTS},
        "watermark_offset": [s.watermark_offset for s in scenes],
        "named": [",".join(d for d, _ in s.named) for s in scenes],
        "caption": [s.caption for s in scenes],
        "prompt": [s.content.text() for s in scenes],
    })
