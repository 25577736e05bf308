"""The four defects: how often each occurs for a given content, and how each is rendered.

=========  ==========================================  =====================  ======================
defect     rendering (image x in [0, 1], [3, H, W])    strength range         rate depends on
=========  ==========================================  =====================  ======================
blur       Gaussian filter, sigma = strength (px)       1.0 - 1.8              count: 1 / 2 / 3 shapes
washed     x <- (1 - f) x + f * 0.5                     f 0.5 - 0.7            background: pale > dark
watermark  tiled stripes, x <- (1 - a) x + a * s        a 0.2 - 0.35           shape: square > triangle
grain      x <- clip(x + N(0, sigma^2) per 2x2 block)   sigma 0.08 - 0.18      background: dark > pale
=========  ==========================================  =====================  ======================

They are applied in that order (blur, washed, watermark, grain) so a watermark stays sharp on a blurred
image and grain lies on top of everything. The watermark is tiled over the whole image, as stock-photo
watermarks are: diagonal stripes ``WATERMARK_STRIPE`` px wide, alternately white (``s = 1``) and black
(``s = 0``), so it shows on every background. Both are sized for the 2x-downsampling VAE and the
diffusion model on its 16 x 16 latent: grain is drawn per 2 x 2 pixel block (one latent pixel; per-pixel
noise cannot pass a latent with fewer numbers than pixels and comes back as mottling) and the stripes
have an 8 px period (4 latent px). The stripes' phase (``offset``, 0-7 px along x + y) is drawn per image:
a convolutional UNet knows where it is only through its padding, so a pattern at a fixed place or phase
(a corner mark, stripes of one phase) is slow to learn, while a random-phase pattern is a texture, as
grain is, which it learns in minutes.

Rates depend on content so that the best negative depends on the prompt (a dark background is often
grainy, a pale one often washed out). Two pairs of defects exclude each other (blur / grain and
washed / watermark): when both are drawn, only one is kept (with probability ``1 - KEEP_BOTH``). A
model that learns the data then links "not grainy" to "blurry", so naming a defect that is not there
costs something: the negative pushes towards its partner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from negopt.world.grammar import Content

DEFECTS: tuple[str, ...] = ("blur", "washed", "watermark", "grain")  # also the rendering order
WATERMARK_STRIPE = 4  # px, width of each stripe (period 2 * WATERMARK_STRIPE)
GRAIN_BLOCK = 2  # px, side of the square blocks that share one grain value
EXCLUSIVE_PAIRS: tuple[tuple[str, str], ...] = (("blur", "grain"), ("washed", "watermark"))
KEEP_BOTH = 0.25  # chance that both defects of an exclusive pair stay when both are drawn


@dataclass(frozen=True)
class DefectSpec:
    """A defect's strength range and the words that name it (``words``: word -> share in captions)."""

    low: float
    high: float
    words: dict[str, float]

    def pick(self, u: float) -> str:
        """The word at quantile ``u`` in [0, 1) of the shares (a uniform ``u`` draws words by share)."""
        edges = np.cumsum(list(self.words.values()))
        return list(self.words)[min(int(np.searchsorted(edges, u * edges[-1], side="right")), len(edges) - 1)]

    @property
    def word(self) -> str:
        """The canonical word (the most common one): the ground-truth negative for this defect."""
        return max(self.words, key=self.words.get)


SPECS: dict[str, DefectSpec] = {
    "blur": DefectSpec(1.0, 1.8, {"blurry": 0.8, "blur": 0.2}),
    "washed": DefectSpec(0.5, 0.7, {"washed out": 0.7, "faded": 0.3}),
    "watermark": DefectSpec(0.2, 0.35, {"watermark": 1.0}),
    "grain": DefectSpec(0.08, 0.18, {"grainy": 0.6, "noisy": 0.4}),
}

#: the draw probability of each defect for each value of the content attribute that drives it
DRAW_RATES: dict[str, tuple[str, dict]] = {
    "blur": ("count", {1: 0.10, 2: 0.30, 3: 0.70}),
    "washed": ("bg_group", {"dark": 0.05, "mid": 0.30, "pale": 0.80}),
    "watermark": ("shape", {"circle": 0.25, "square": 0.70, "triangle": 0.10}),
    "grain": ("bg_group", {"dark": 0.70, "mid": 0.30, "pale": 0.05}),
}


def draw_rates(content: Content) -> dict[str, float]:
    """Each defect's probability of being drawn for ``content``, before the exclusive pairs thin them."""
    return {d: table[getattr(content, attr)] for d, (attr, table) in DRAW_RATES.items()}


def defect_rates(content: Content) -> dict[str, float]:
    """Each defect's probability of being *present* in an image of ``content``.

    For a pair (a, b) drawn with probabilities p_a, p_b:
    ``P(a) = p_a * (1 - p_b * (1 - KEEP_BOTH) / 2)`` (both drawn, then a dropped half the time it is not
    kept together with b).
    """
    p = draw_rates(content)
    out = {}
    for a, b in EXCLUSIVE_PAIRS:
        out[a] = p[a] * (1 - p[b] * (1 - KEEP_BOTH) / 2)
        out[b] = p[b] * (1 - p[a] * (1 - KEEP_BOTH) / 2)
    return {d: out[d] for d in DEFECTS}


def sample_defects(content: Content, rng: np.random.Generator) -> dict[str, float]:
    """Draw the defects of one image of ``content``: defect -> strength (0.0 = absent).

    Consumes a fixed number of draws from ``rng`` whatever comes out, so later draws do not shift.
    """
    p = draw_rates(content)
    u = rng.random(len(DEFECTS))
    present = {d: bool(u[i] < p[d]) for i, d in enumerate(DEFECTS)}
    keep, drop_first = rng.random(len(EXCLUSIVE_PAIRS)), rng.random(len(EXCLUSIVE_PAIRS))
    for i, (a, b) in enumerate(EXCLUSIVE_PAIRS):
        if present[a] and present[b] and keep[i] >= KEEP_BOTH:
            present[a if drop_first[i] < 0.5 else b] = False
    t = rng.random(len(DEFECTS))
    return {d: float(SPECS[d].low + t[i] * (SPECS[d].high - SPECS[d].low)) if present[d] else 0.0
            for i, d in enumerate(DEFECTS)}


WATERMARK_OFFSETS = 2 * WATERMARK_STRIPE  # distinct phases of the stripes


def watermark_pattern(size: int, offset: int = 0, stripe: int = WATERMARK_STRIPE) -> np.ndarray:
    """The watermark's stripe values ``s`` on a ``size`` x ``size`` image, 0.0 / 1.0: ``((x + y + offset) //
    stripe) % 2`` is 0 on white stripes (``s = 1``), 1 on black ones (diagonal stripes ``stripe`` px wide)."""
    y, x = np.mgrid[0:size, 0:size]
    return (((x + y + offset) // stripe) % 2 == 0).astype(np.float32)


def apply_defects(image: np.ndarray, defects: dict[str, float], rng: np.random.Generator,
                  watermark_offset: int = 0) -> np.ndarray:
    """``image`` float32 ``[3, H, W]`` in [0, 1] with ``defects`` (defect -> strength, 0 = absent) applied in
    :data:`DEFECTS` order; ``rng`` draws the grain; the stripes have phase ``watermark_offset``. Returns a
    new float32 array in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    x = image.astype(np.float32, copy=True)
    if defects.get("blur", 0.0) > 0:
        x = gaussian_filter(x, sigma=(0, defects["blur"], defects["blur"]), mode="nearest").astype(np.float32)
    if defects.get("washed", 0.0) > 0:
        f = defects["washed"]
        x = (1 - f) * x + f * 0.5
    if defects.get("watermark", 0.0) > 0:
        a = defects["watermark"]
        x = (1 - a) * x + a * watermark_pattern(x.shape[-1], watermark_offset)[None, : x.shape[-2]]
    if defects.get("grain", 0.0) > 0:
        c, h, w = x.shape
        b = GRAIN_BLOCK
        noise = rng.normal(0.0, defects["grain"], size=(c, -(-h // b), -(-w // b))).astype(np.float32)
        x = x + noise.repeat(b, axis=1).repeat(b, axis=2)[:, :h, :w]
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def severity(defect: str, strength: float) -> float:
    """A defect's severity in [0, 1]: 0 when absent, ``0.4 + 0.6 * (strength - low) / (high - low)`` when
    present (the mildest present defect already counts 0.4)."""
    if strength <= 0:
        return 0.0
    spec = SPECS[defect]
    return float(0.4 + 0.6 * np.clip((strength - spec.low) / (spec.high - spec.low), 0.0, 1.0))
