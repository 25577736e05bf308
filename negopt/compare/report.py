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

from negopt.compare.gains import (
    METRICS,
    ORACLE,
    carried,
    format_diff,
    format_gain,
    format_interval,
    format_value,
)
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


def oracle_section(eval_metrics: dict[str, dict[str, float]], comparison: dict) -> str:
    """The world profile's oracle: its values per method and each pair's differences with their intervals
    (empty when eval.json has no oracle values)."""
    labels = carried(ORACLE, eval_metrics)
    if not labels:
        return ""
    head = "".join(f"<th>{html.escape(v)}</th>" for v in labels.values())
    values = "".join(f"<tr><td>{html.escape(method)}</td>" + "".join(f"<td class='num'>{m[k]:.3f}</td>" for k in labels)
                     + "</tr>" for method, m in eval_metrics.items())
    diffs = []
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            cells = []
            for k in labels:
                ci = gains.get("ci", {}).get(k)
                if not ci:
                    cells.append("<td class='num'>n/a</td>")
                    continue
                good = ci["diff"] > 0 if not k.startswith("rate_") else ci["diff"] < 0  # fewer defects is better
                cls = "num" + ("" if ci["diff"] == 0 else (" pos" if good else " neg"))
                cls += " sig" if ci["diff_excludes_zero"] else ""
                cells.append(f"<td class='{cls}'>{html.escape(format_diff(ci))}</td>")
            diffs.append(f"<tr><td>{html.escape(cand)}</td><td>{html.escape(key.removeprefix('vs_'))}</td>"
                         f"{''.join(cells)}</tr>")
    return f"""<h2>The oracle: what is true about the images</h2>
<p>Read back from every image by detectors calibrated on the world's renders (metrics/models.json has their AUC)
and a content checker, against the scene its prompt names: the true quality, the share of images with each
defect (lower is better) and the share whose content agrees with the prompt.</p>
<table class='metrics'><tr><th>method</th>{head}</tr>{values}</table>
<p>Differences candidate &minus; baseline, in brackets the paired bootstrap interval over prompts; green is
better (more quality or agreement, fewer defects); <code>*</code>: the interval excludes 0.</p>
<table class='gains'><tr><th>candidate</th><th>baseline</th>{head}</tr>{''.join(diffs)}</table>"""


def rl_truth_section(rl_metrics: dict | None) -> str:
    """RL against SFT on the test prompts, in the learned reward and in the oracle's true quality (the world
    profile; empty elsewhere): a learned-reward gain the oracle does not share is the reward being gamed."""
    if not rl_metrics or "oracle_test_gain" not in rl_metrics:
        return ""
    m = rl_metrics

    def row(name: str, key: str) -> str:
        z = m[f"{key}_test_gain"] / m[f"{key}_test_gain_se"] if m[f"{key}_test_gain_se"] > 0 else float("nan")
        return (f"<tr><td>{name}</td><td class='num'>{m[f'{key}_test_sft']:.4f}</td>"
                f"<td class='num'>{m[f'{key}_test_rl']:.4f}</td><td class='num'>{m[f'{key}_test_gain']:+.4f} &plusmn; "
                f"{m[f'{key}_test_gain_se']:.4f}</td><td class='num'>{z:+.1f}</td></tr>")

    defects = [k.removeprefix("oracle_rate_").removesuffix("_rl") for k in m if k.startswith("oracle_rate_") and
               k.endswith("_rl")]
    rates = "".join(f"<tr><td>{html.escape(d)}</td><td class='num'>{m[f'oracle_rate_{d}_sft']:.3f}</td>"
                    f"<td class='num'>{m[f'oracle_rate_{d}_rl']:.3f}</td></tr>" for d in defects)
    return f"""<h2>Does RL raise the truth, or only its reward?</h2>
<p>RL against SFT on {int(m['n_test'])} test prompts, the same prompts and diffusion seeds for both (paired; &plusmn; one
standard error over prompts). The learned reward is what RL optimised (the world's aesthetic MLP, CLIP and
classifier, in calibrated units); the true quality is the oracle's. Per RL step: dvclive's
<code>train/val_reward_gain</code> beside <code>train/val_oracle_gain</code>.</p>
<table class='metrics'><tr><th>measure</th><th>SFT</th><th>RL</th><th>RL &minus; SFT</th><th>z</th></tr>
{row("learned reward", "reward")}{row("true quality (oracle)", "oracle")}</table>
<table class='metrics'><tr><th>defect rate</th><th>SFT</th><th>RL</th></tr>{rates}</table>"""


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
    elif profile == "world":
        note += (" Its models were trained by negopt on a procedural world whose truth is known: the learned"
                 " scores below are the world's CLIP, aesthetic MLP and scene classifier, and the oracle says"
                 " what is true about each image.")
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
    rl_metrics: dict | None = None,
) -> str:
    """The report page as one HTML string with every image inlined; its first lines name the ``profile``;
    ``rl_metrics`` (metrics/rl.json): RL's gain in the learned reward and in the oracle, where it has both."""
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
{oracle_section(eval_metrics, comparison)}
{rl_truth_section(rl_metrics)}
<h2>Charts</h2>
<div class="charts">{charts}</div>
<h2>Images</h2>
<p>Same prompt and seed in each row; the negative prompt is under each image.</p>
{image_grid(manifest, images_dir, grid_prompts)}
</body></html>
"""


def write_report(out_path: str | Path, page: str) -> None:
    write_text(out_path, page)
