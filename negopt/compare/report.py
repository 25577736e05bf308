"""A self-contained HTML report: metric tables, bar charts and an image grid per method.

Every image is inlined as a base64 data URI, so ``report/index.html`` opens on its own (mailed,
archived as a DVC output, or served from anywhere) without the images folder next to it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from negopt.compare.gains import METRICS, format_gain, format_interval, format_value
from negopt.core.io import write_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pos { color: #1a7f37; } td.neg { color: #b42318; }
td.sig { font-weight: bold; } .ci { font-size: 0.85em; color: #555; }
p.profile { padding: 0.5em 1em; background: #f4f4f4; border-left: 4px solid #888; }
.charts img { margin: 0 1em 1em 0; border: 1px solid #eee; }
table.grid td { vertical-align: top; width: 160px; }
table.grid img { width: 128px; height: 128px; image-rendering: pixelated; display: block; }
.neg-prompt { font-size: 0.8em; color: #555; max-width: 150px; overflow-wrap: anywhere; }
.prompt { font-size: 0.85em; max-width: 220px; overflow-wrap: anywhere; }
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_uri(path: Path, max_side: int = 256) -> str:
    """The image as a data URI: small images byte for byte, large ones (512 px SD) as a 256 px JPEG,
    so a grid of 40 paper-profile images stays ~1 MB instead of ~15 MB."""
    data = path.read_bytes()
    from PIL import Image

    with Image.open(path) as im:
        if max(im.size) <= max_side:
            return data_uri(data)
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def metrics_table(eval_metrics: dict[str, dict[str, float]], costs: dict[str, int] | None = None) -> str:
    """Metric values per method, the images each was scored on, and the images its test-time search cost."""
    costs = costs or {}
    head = "".join(f"<th>{html.escape(label)}</th>" for label in METRICS.values())
    rows = []
    for method, m in eval_metrics.items():
        is_cell = (
            f"{format_value(m['inception_score'])} &plusmn; {format_value(m.get('inception_score_std', 0.0))}"
        )
        rows.append(
            f"<tr><td>{html.escape(method)}</td><td class='num'>{is_cell}</td>"
            f"<td class='num'>{format_value(m['aesthetic'])}</td><td class='num'>{format_value(m['clip_score'])}</td>"
            f"<td class='num'>{int(m['n_images'])}</td><td class='num'>{costs.get(method, 0)}</td></tr>"
        )
    return (f"<table class='metrics'><tr><th>method</th>{head}<th>images</th><th>search images</th></tr>"
            f"{''.join(rows)}</table>")


def gains_table(comparison: dict[str, dict[str, dict[str, float | None]]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in METRICS.values())
    rows = []
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            cells = []
            for metric in METRICS:
                g = gains[metric]
                cls = "num" if g is None or g == 0 else ("num pos" if g > 0 else "num neg")
                ci = gains.get("ci", {}).get(metric)
                if ci and ci["excludes_zero"]:
                    cls += " sig"
                span = f" <span class='ci'>{html.escape(format_interval(ci).strip())}</span>" if ci else ""
                cells.append(f"<td class='{cls}'>{format_gain(g)}{span}</td>")
            base = html.escape(key.removeprefix("vs_"))
            rows.append(f"<tr><td>{html.escape(cand)}</td><td>{base}</td>{''.join(cells)}</tr>")
    return f"<table class='gains'><tr><th>candidate</th><th>baseline</th>{head}</tr>{''.join(rows)}</table>"


def image_grid(manifest: pd.DataFrame, images_dir: str | Path, grid_prompts: int) -> str:
    """Rows = the first ``grid_prompts`` prompts, columns = methods; each cell the prompt's first seed."""
    images_dir = Path(images_dir)
    methods = list(dict.fromkeys(manifest["method"]))
    prompt_ids = sorted(manifest["prompt_idx"].unique())[:grid_prompts]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = []
    for pid in prompt_ids:
        sub = manifest[manifest["prompt_idx"] == pid]
        seed = int(sub["seed"].min())
        prompt = str(sub["prompt"].iloc[0])
        # <bdi>: a right-to-left override in the data stays inside its text, not the seed label or the next cell
        cells = [f"<td class='prompt'><bdi>{html.escape(prompt)}</bdi><br><small>seed {seed}</small></td>"]
        for method in methods:
            hit = sub[(sub["method"] == method) & (sub["seed"] == seed)]
            if hit.empty or not (images_dir / hit["file"].iloc[0]).exists():
                cells.append("<td>missing</td>")
                continue
            row = hit.iloc[0]
            src = thumbnail_uri(images_dir / row["file"])
            negative = f"<bdi>{html.escape(str(row['negative']))}</bdi>" if str(row["negative"]) else "<i>(empty)</i>"
            alt = html.escape(f"{method}: {prompt}", quote=True)
            cells.append(f"<td><img src='{src}' alt='{alt}'><div class='neg-prompt'>{negative}</div></td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class='grid'><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"


def profile_note(profile: str | None) -> str:
    """The report's first lines: which profile produced it, and on ``tiny`` what its numbers mean."""
    if profile is None:
        return ""
    note = f"Produced by the <b>{html.escape(profile)}</b> profile."
    if profile == "tiny":
        note += (" Its models are small and randomly initialised: the numbers below describe the machinery"
                 " (that every stage runs and the statistics are computed), not image quality.")
    return f"<p class='profile'>{note}</p>"


def render_report(
    eval_metrics: dict[str, dict[str, float]],
    comparison: dict[str, dict[str, dict[str, float | None]]],
    manifest: pd.DataFrame,
    images_dir: str | Path,
    chart_pngs: dict[str, bytes],
    grid_prompts: int = 8,
    title: str = "negopt: negative prompts compared",
    profile: str | None = None,
    confidence: float = 0.95,
    costs: dict[str, int] | None = None,
) -> str:
    """The report page as one HTML string with every image inlined; its first lines name the ``profile``."""
    charts = "".join(
        f"<img src='{data_uri(png)}' alt='{html.escape(METRICS.get(metric, metric))} by method'>"
        for metric, png in chart_pngs.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{profile_note(profile)}
<h2>Metrics per method</h2>
<p><i>search images</i>: images a method rendered before its evaluation images (best_of_n: the reward
calibration and n candidates per prompt on a selection seed); RL's training renders are in metrics/rl.json.</p>
{metrics_table(eval_metrics, costs)}
<h2>Relative gain of the learned negatives</h2>
<p>100 &times; (candidate &minus; baseline) / |baseline|, as in the paper's +24.8% IS / +18.6% aesthetics.
In brackets: the {confidence:.0%} paired bootstrap interval over prompts (all methods resampled on the same
prompt indices; the Inception Score re-computed per resample from the stored class posteriors, one split).
<b>Bold</b> with <code>*</code>: the interval excludes 0, a gain distinguishable from zero on these prompts.</p>
{gains_table(comparison)}
<h2>Charts</h2>
<div class="charts">{charts}</div>
<h2>Images</h2>
<p>Same prompt and seed in each row; the negative prompt is under each image.</p>
{image_grid(manifest, images_dir, grid_prompts)}
</body></html>
"""


def write_report(out_path: str | Path, page: str) -> None:
    write_text(out_path, page)
