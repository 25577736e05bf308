"""The project's own synthetic sample: (prompt, negative) pairs generated from templates.

Everything here is written by this project and labelled synthetic (``model = synthetic-sample``,
urls under ``https://example.invalid/negopt-synthetic/``). The negative depends on the prompt's
category, so a seq2seq model has something to learn (portraits -> anatomy terms, photos ->
"painting, cartoon", anime -> "realistic, 3d", landscapes -> "people, text", ...), and the rows carry
the noise a scraped set has: generic quality boilerplate, SD weighting syntax, label noise, exact
and near duplicates, HTML bits, whitespace and Unicode junk, empty / too short / too long fields.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd

from negopt.data.schema import conform

SYNTHETIC_MODEL = "synthetic-sample"
SYNTHETIC_URL = "https://example.invalid/negopt-synthetic/{id}.png"

# category -> (weight, subjects, settings, core negatives (always present), extra negatives)
CATEGORIES: dict[str, tuple[float, list[str], list[str], list[str], list[str]]] = {
    "portrait": (
        0.2,
        ["portrait of a young woman", "close-up portrait of an old fisherman", "headshot of a smiling man",
         "portrait of a girl with freckles", "portrait of a knight in armor", "portrait of a jazz singer",
         "portrait of a tired doctor", "portrait of a grandmother knitting"],
        ["soft window light", "studio lighting", "golden hour", "dramatic rim light", "neutral background"],
        ["bad anatomy", "extra fingers"],
        ["deformed hands", "extra limbs", "mutated hands", "disfigured face", "poorly drawn face",
         "cross-eyed", "missing fingers", "fused fingers", "long neck", "asymmetric eyes"],
    ),
    "photo": (
        0.16,
        ["photo of a red vintage car on a wet street", "product photo of a steel wristwatch",
         "street photo of a busy market", "photo of a bicycle leaning on a brick wall",
         "photo of a lighthouse in a storm", "photo of a coffee cup on a wooden table"],
        ["35mm film", "DSLR, f/1.8, bokeh", "photorealistic", "sharp focus", "natural light"],
        ["painting", "cartoon"],
        ["drawing", "illustration", "anime", "sketch", "cgi", "render", "digital art", "watercolor"],
    ),
    "anime": (
        0.16,
        ["anime girl with silver hair", "1girl, school uniform, cherry blossoms", "anime boy with a sword",
         "chibi fox spirit", "magical girl transformation", "anime mecha pilot in a cockpit"],
        ["cel shading", "vibrant colors", "studio anime style", "detailed eyes", "clean lineart"],
        ["realistic", "3d"],
        ["photorealistic", "photo", "real life", "western cartoon", "uncanny", "lowpoly", "doll"],
    ),
    "landscape": (
        0.16,
        ["mountain lake at sunrise", "misty forest valley", "desert dunes under the milky way",
         "waterfall in a tropical jungle", "snowy pine forest", "rolling hills with wildflowers"],
        ["wide angle", "epic scale", "volumetric fog", "long exposure", "matte painting"],
        ["people", "text"],
        ["person", "watermark", "buildings", "signature", "humans", "power lines", "cars", "logo"],
    ),
    "architecture": (
        0.1,
        ["modern glass house on a cliff", "gothic cathedral interior", "brutalist concrete library",
         "japanese tea house in a garden", "art deco hotel lobby"],
        ["architectural photography", "symmetrical", "wide shot", "interior design magazine"],
        ["distorted lines", "warped perspective"],
        ["crooked walls", "tilted horizon", "people", "clutter", "fisheye", "melting"],
    ),
    "animal": (
        0.1,
        ["a fluffy orange cat", "a majestic lion on a rock", "a red fox in the snow", "an owl on a branch",
         "a golden retriever puppy", "a horse galloping on a beach"],
        ["wildlife photography", "national geographic", "detailed fur", "shallow depth of field"],
        ["extra legs", "deformed paws"],
        ["two heads", "extra tails", "mutated", "human", "missing legs", "fused body"],
    ),
    "food": (
        0.06,
        ["a bowl of ramen", "a slice of chocolate cake", "fresh sushi platter", "a stack of pancakes",
         "a rustic pizza"],
        ["food photography", "overhead shot", "steam rising", "michelin star plating"],
        ["unappetizing", "plastic"],
        ["burnt", "messy", "moldy", "dirty plate", "raw", "rotten"],
    ),
    "scifi": (
        0.06,
        ["cyberpunk city at night", "spaceship over an alien planet", "android in a neon alley",
         "futuristic train station", "space station interior"],
        ["concept art", "octane render", "neon glow", "cinematic", "trending on artstation"],
        ["medieval", "flat lighting"],
        ["rustic", "dull colors", "simple background", "low detail", "old-fashioned"],
    ),
}

QUALITY_PREFIXES = ["masterpiece", "best quality", "(masterpiece:1.2)", "(best quality:1.3)", "highly detailed",
                    "ultra detailed", "8k", "((masterpiece))"]
GENERIC_NEGATIVES = ["worst quality", "low quality", "lowres", "blurry", "jpeg artifacts", "watermark",
                     "signature", "ugly", "normal quality", "out of focus", "duplicate", "cropped",
                     "(worst quality:1.4)", "(low quality:1.4)", "((blurry))", "(bad quality:1.2)"]
SAMPLERS = ["k_euler_ancestral", "k_euler", "plms", "ddim", "k_dpm_2_ancestral", "k_lms", "k_heun", "k_dpm_2"]
SIZES = [512, 512, 512, 640, 768, 768, 1024]


def _negative(rng: random.Random, cat: str) -> str:
    _, _, _, core, extra = CATEGORIES[cat]
    terms = list(core) + rng.sample(extra, rng.randint(0, min(4, len(extra))))
    if rng.random() < 0.6:
        terms += rng.sample(GENERIC_NEGATIVES, rng.randint(1, 6))
    if rng.random() < 0.05:  # the long tail: pasted boilerplate lists
        terms += [rng.choice(GENERIC_NEGATIVES + extra) for _ in range(rng.randint(20, 120))]
    if rng.random() < 0.5:
        rng.shuffle(terms)
    return ", ".join(terms)


def _prompt(rng: random.Random, cat: str) -> str:
    _, subjects, settings, _, _ = CATEGORIES[cat]
    parts = [rng.choice(subjects)] + rng.sample(settings, rng.randint(0, len(settings)))
    if rng.random() < 0.5:
        parts = rng.sample(QUALITY_PREFIXES, rng.randint(1, 3)) + parts
    return ", ".join(parts)


def _dirty(rng: random.Random, text: str) -> str:
    """Scraped-text noise that cleaning must undo (or keep: weighting syntax is left alone)."""
    r = rng.random()
    if r < 0.03:
        return f"<b>{text}</b>" if rng.random() < 0.5 else text.replace(", ", ",<br>", 1).replace(" and ", " &amp; ")
    if r < 0.06:
        return "  " + text.replace(", ", " ,\t ", 2) + " \n"
    if r < 0.08:  # full-width letters / no-break spaces: NFKC turns them back into ASCII
        return text.replace("a", "\uff41", 2).replace(" ", "\u00a0", 1)
    return text


def _near_duplicate(rng: random.Random, text: str | None) -> str | None:
    if not text:
        return text
    return rng.choice([text.upper(), text.replace(", ", " , "), text + ",", "  " + text.lower() + " "])


def generate_sample(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` synthetic pairs in the 13-column schema; the same (rows, seed) gives the same frame."""
    if rows < 1:
        raise ValueError(f"data.sample.rows must be >= 1, got {rows}")
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    weights = [CATEGORIES[c][0] for c in cats]
    start = datetime(2023, 3, 7, 6, 21, 31, tzinfo=UTC)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    records: list[dict] = []
    for i in range(rows):
        r = rng.random()
        if records and r < 0.03:  # exact duplicate pair, reposted under a new id
            prompt, negative = records[rng.randrange(len(records))]["pair"]
        elif records and r < 0.05:  # near duplicate: case / spacing / trailing comma only
            p, n = records[rng.randrange(len(records))]["pair"]
            prompt, negative = _near_duplicate(rng, p), _near_duplicate(rng, n)
        else:
            cat = rng.choices(cats, weights)[0]
            prompt = _prompt(rng, cat)
            # 3% label noise: the negative of another category
            negative = _negative(rng, rng.choice(cats) if rng.random() < 0.03 else cat)
            prompt, negative = _dirty(rng, prompt), _dirty(rng, negative)
            bad = rng.random()
            if bad < 0.01:
                negative = rng.choice(["", "   ", None])
            elif bad < 0.015:
                prompt = rng.choice(["", None])
            elif bad < 0.025:
                negative = rng.choice(["-", "no", "x"])
        rid = "syn" + "".join(rng.choice(alphabet) for _ in range(22))
        size_w, size_h = rng.choice(SIZES), rng.choice(SIZES)
        records.append({
            "pair": (prompt, negative),
            "id": rid,
            "created_at": (start - timedelta(seconds=37 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "prompt": prompt,
            "negative_prompt": negative,
            "url": SYNTHETIC_URL.format(id=rid),
            "model": SYNTHETIC_MODEL,
            "sampler": rng.choice(SAMPLERS),
            "likes": min(251, 1 + int(rng.expovariate(0.25))),
            "height": size_h,
            "width": size_w,
            "steps": 50 if rng.random() < 0.7 else rng.choice([20, 25, 30, 40, 75, 100, 150]),
            "cursor": 139_000_000 - 250 * (i // 250),
            "cfg_scale": rng.choice([7.0, 7.5, 8.0, 10.0, 12.0, 15.0]),
        })
    df = pd.DataFrame.from_records(records).drop(columns="pair")
    return conform(df)
