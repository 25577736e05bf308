"""The world's grammar: what a scene can hold and the words that name it.

A scene is ``count`` (1-3) shapes of one kind (circle, square, triangle) and one foreground colour (6)
on a background colour (7). Backgrounds fall into three brightness groups (dark, mid, pale) that drive
the content-dependent defect rates (:mod:`negopt.world.defects`). Colours are sRGB in [0, 1].

Its prompt form (the caption's content part) is ``"<count> <colour> <shape>[s] on a <background>
background"``, e.g. ``"two red circles on a black background"``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: foreground colour name -> RGB in [0, 1]; chosen so every one stands out from every background
FOREGROUND: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.96, 0.55, 0.08),
    "yellow": (0.94, 0.86, 0.12),
    "green": (0.16, 0.67, 0.24),
    "blue": (0.16, 0.35, 0.90),
    "purple": (0.58, 0.20, 0.75),
}

#: background colour name -> RGB in [0, 1]
BACKGROUND: dict[str, tuple[float, float, float]] = {
    "black": (0.04, 0.04, 0.04),
    "navy": (0.08, 0.10, 0.33),
    "maroon": (0.33, 0.06, 0.10),
    "grey": (0.50, 0.50, 0.50),
    "white": (0.96, 0.96, 0.96),
    "cream": (0.96, 0.92, 0.76),
    "pink": (0.98, 0.76, 0.82),
}

#: background -> brightness group (the key of the content-dependent grain / washed-out rates)
BACKGROUND_GROUP: dict[str, str] = {
    "black": "dark", "navy": "dark", "maroon": "dark", "grey": "mid",
    "white": "pale", "cream": "pale", "pink": "pale",
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Content:
    """What a prompt asks for: ``count`` shapes of kind ``shape`` in colour ``fg`` on background ``bg``."""

    shape: str
    count: int
    fg: str
    bg: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.count not in COUNT_WORDS:
            raise ValueError(f"Content: unknown shape {self.shape!r} or count {self.count!r}")
        if self.fg not in FOREGROUND or self.bg not in BACKGROUND:
            raise ValueError(f"Content: unknown colour fg={self.fg!r} bg={self.bg!r}")

    @property
    def bg_group(self) -> str:
        return BACKGROUND_GROUP[self.bg]

    def text(self) -> str:
        """The prompt form, e.g. ``"two red circles on a black background"``."""
        noun = self.shape + ("s" if self.count > 1 else "")
        return f"{COUNT_WORDS[self.count]} {self.fg} {noun} on a {self.bg} background"


def all_contents() -> list[Content]:
    """Every content the grammar allows (3 shapes x 3 counts x 6 x 7 colours = 378), in a fixed order."""
    return [Content(s, c, f, b) for s in SHAPES for c in COUNT_WORDS for f in FOREGROUND for b in BACKGROUND]


def parse_content(text: str) -> Content | None:
    """The content a prompt names, or None if it does not follow the grammar.

    Reads the first ``<count> <fg> <shape>[s] on a <bg> background`` in ``text`` (case-insensitive; other
    words around it, such as "masterpiece, " or A1111 weights on other words, are ignored).
    """
    import re

    counts = "|".join(COUNT_WORDS.values())
    pattern = (rf"\b({counts})\s+({'|'.join(FOREGROUND)})\s+({'|'.join(SHAPES)})s?\s+on\s+a\s+"
               rf"({'|'.join(BACKGROUND)})\s+background\b")
    m = re.search(pattern, text.lower())
    if m is None:
        return None
    count = {w: n for n, w in COUNT_WORDS.items()}[m.group(1)]
    return Content(m.group(3), count, m.group(2), m.group(4))
