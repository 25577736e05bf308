"""Explicit-content keywords for the optional NSFW filter (``data.clean.nsfw_filter``).

A prompt is flagged when it contains one of the explicit terms below, case-insensitively, with no
ASCII letter or digit glued to either side. So
``(nsfw:1.2)``, ``nude_female`` and ``sex,`` match while ``sexy``, ``unisex`` and ``Essex`` do not.
Suggestive-but-common words (sexy, breasts, bikini, ...) are deliberately not listed.
"""

from __future__ import annotations

import pandas as pd

#: Whole words; an entry ending in ``*`` also matches any further letters (porn -> pornographic).
NSFW_TERMS: tuple[str, ...] = (
    "nsfw", "nude", "nudes", "nudity", "naked", "nipple", "nipples", "sex", "porn*", "topless",
    "lingerie", "erotic*", "bottomless", "uncensored", "hentai", "pussy", "penis", "vagina",
    "genital", "genitals", "pubic", "areola", "areolae", "anus", "cum", "semen", "bukkake",
    "masturbat*",
)


def _alternation(terms: tuple[str, ...]) -> str:
    return "|".join(t[:-1] + "[a-z]*" if t.endswith("*") else t for t in terms)


# No look-behind: pandas' pyarrow strings use RE2, which lacks it; a consumed non-alphanumeric (or
# the string edge) on each side is equivalent for a yes/no match.
NSFW_PATTERN = rf"(?i)(?:^|[^a-z0-9])(?:{_alternation(NSFW_TERMS)})(?:[^a-z0-9]|$)"


def nsfw_mask(texts: pd.Series) -> pd.Series:
    """True where a text contains an explicit term (nulls are False)."""
    return texts.str.contains(NSFW_PATTERN, regex=True, na=False).astype(bool)
