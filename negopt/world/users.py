"""The world's users: (prompt, negative) pairs written the way real users write them.

Every row is labelled synthetic (``model = world-synthetic``, urls under
``https://example.invalid/negopt-world/``) and conformed to the 13-column ``negopt_full`` schema. A
prompt is a grammar content (:mod:`negopt.world.grammar`), sometimes with quality words around it. Its
negative comes from one of four kinds of user (shares in :data:`PERSONAS`):

- ``observer``: renders ``SEEN`` images of the prompt's content (defects at the content's rates,
  :func:`negopt.world.defects.sample_defects`) and names each defect seen at least once, plus 0-2
  filler words. Prompt-dependent and mostly right, but noisy: a rare defect seen once is named, a
  frequent one missed in ``SEEN`` draws is not. These are the good-but-improvable ground truth.
- ``copier``: pastes one of :data:`GENERIC_LISTS` (boilerplate that names blur and the watermark but
  never grain or washing), whatever the prompt.
- ``superstitious``: only words that do nothing here (:data:`negopt.world.scenes.FILLER_WORDS`).
- ``completist``: names every defect, plus filler; good on average, but a defect named that the
  content rarely has costs its exclusive partner (:mod:`negopt.world.defects`).

Then the text is dressed as real negatives are: A1111 weights ``(word:1.3)``, emphasis ``((word))``,
repeats, shuffled order; 3% of rows repost an earlier pair under a new id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from negopt.data.schema import conform
from negopt.world.defects import DEFECTS, SPECS, defect_rates, sample_defects
from negopt.world.grammar import Content
from negopt.world.scenes import FILLER_WORDS, WEIGHT_LEVELS, sample_content

WORLD_MODEL = "world-synthetic"
WORLD_URL = "https://example.invalid/negopt-world/{id}.png"
PERSONAS: dict[str, float] = {"observer": 0.5, "copier": 0.25, "superstitious": 0.15, "completist": 0.10}
SEEN = 3  # images an observer looked at before writing a negative
PROMPT_PREFIXES: tuple[str, ...] = ("masterpiece", "best quality", "highly detailed", "8k")
GENERIC_LISTS: tuple[tuple[str, ...], ...] = (
    ("worst quality", "low quality", "blurry", "watermark", "jpeg artifacts", "ugly"),
    ("lowres", "bad anatomy", "bad hands", "text", "watermark", "signature", "cropped", "worst quality"),
    ("ugly", "deformed", "disfigured", "blurry", "bad anatomy", "extra fingers", "mutated"),
    ("(worst quality:1.4)", "(low quality:1.4)", "blurry", "watermark", "signature"),
)
REPOST_RATE = 0.03


def observer_terms(content: Content, rng: np.random.Generator, seen: int = SEEN) -> list[str]:
    """The defect words an observer writes: every defect present in at least one of ``seen`` images of
    ``content``, each in a word drawn by its caption shares."""
    seen_defects = {d for _ in range(seen) for d, s in sample_defects(content, rng).items() if s > 0}
    return [SPECS[d].pick(rng.random()) for d in DEFECTS if d in seen_defects]


def _filler(rng: np.random.Generator, low: int, high: int) -> list[str]:
    k = int(rng.integers(low, high + 1))
    return [str(w) for w in rng.choice(FILLER_WORDS, size=k, replace=False)]


def _dress(terms: list[str], rng: np.random.Generator) -> str:
    """Shuffle half the time; give each term an A1111 weight (20%), double parentheses (10%) or a repeat
    (5%); join with ", "."""
    terms = list(terms)
    if rng.random() < 0.5:
        rng.shuffle(terms)
    out = []
    for t in terms:
        u = rng.random()
        if u < 0.2 and not t.startswith("("):
            out.append(f"({t}:{rng.choice(WEIGHT_LEVELS)})")
        elif u < 0.3 and not t.startswith("("):
            out.append(f"(({t}))")
        elif u < 0.35:
            out += [t, t]
        else:
            out.append(t)
    return ", ".join(out)


def user_negative(content: Content, persona: str, rng: np.random.Generator) -> str:
    """One negative prompt for ``content`` written by a user of kind ``persona`` (see the module doc)."""
    if persona == "observer":
        terms = observer_terms(content, rng) + _filler(rng, 0, 2)
    elif persona == "copier":
        terms = list(GENERIC_LISTS[rng.integers(len(GENERIC_LISTS))])
    elif persona == "superstitious":
        terms = _filler(rng, 2, 5)
    elif persona == "completist":
        terms = [SPECS[d].pick(rng.random()) for d in DEFECTS] + _filler(rng, 1, 3)
    else:
        raise ValueError(f"unknown persona {persona!r}; expected one of {list(PERSONAS)}")
    return _dress(terms, rng) if terms else str(rng.choice(FILLER_WORDS))


def user_prompt(content: Content, rng: np.random.Generator) -> str:
    """The content's prompt form, with 1-2 quality words before it 30% of the time."""
    text = content.text()
    if rng.random() < 0.3:
        prefix = [str(w) for w in rng.choice(PROMPT_PREFIXES, size=int(rng.integers(1, 3)), replace=False)]
        text = ", ".join([*prefix, text])
    return text


def rate_negative(content: Content, min_rate: float = 0.25) -> str:
    """A reference negative from the world's own rates: the canonical word of every defect whose rate for
    ``content`` is at least ``min_rate`` (most likely first), "" if none. A yardstick that knows the
    rates, not an optimum: what a negative costs depends on the trained model."""
    rates = defect_rates(content)
    chosen = sorted((d for d in DEFECTS if rates[d] >= min_rate), key=lambda d: -rates[d])
    return ", ".join(SPECS[d].word for d in chosen)


def generate_world_pairs(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` (prompt, negative) pairs of the world's users in the 13-column schema, plus nothing else;
    the same (rows, seed) gives the same frame."""
    if rows < 1:
        raise ValueError(f"data.world.rows must be >= 1, got {rows}")
    rng = np.random.default_rng([seed, 20_231_207])
    personas, shares = list(PERSONAS), np.array(list(PERSONAS.values()))
    start = datetime(2023, 3, 7, 6, 21, 31, tzinfo=UTC)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    records: list[dict] = []
    for i in range(rows):
        if records and rng.random() < REPOST_RATE:
            prev = records[int(rng.integers(len(records)))]
            prompt, negative = prev["prompt"], prev["negative_prompt"]
        else:
            content = sample_content(rng)
            persona = personas[int(rng.choice(len(personas), p=shares))]
            prompt, negative = user_prompt(content, rng), user_negative(content, persona, rng)
        rid = "wld" + "".join(rng.choice(alphabet, size=22))
        records.append({
            "id": rid,
            "created_at": (start - timedelta(seconds=41 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "prompt": prompt,
            "negative_prompt": negative,
            "url": WORLD_URL.format(id=rid),
            "model": WORLD_MODEL,
            "sampler": "ddim",
            "likes": min(251, 1 + int(rng.exponential(4.0))),
            "height": 32,
            "width": 32,
            "steps": 15,
            "cursor": 139_000_000 - 250 * (i // 250),
            "cfg_scale": float(rng.choice([5.0, 6.0, 7.0, 8.0])),
        })
    return conform(pd.DataFrame.from_records(records))
