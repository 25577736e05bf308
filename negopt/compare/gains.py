"""Relative gains of the learned negatives over the baselines, in the form of the paper's table.

The paper reports "+24.8% Inception Score, +18.6% aesthetics" against baselines; here every
candidate (sft, rl) is compared with every baseline (none, generic, ground_truth, retrieval) on each metric as
``100 * (candidate - baseline) / |baseline|``. The absolute value in the denominator keeps the sign
meaningful for metrics that can be negative (a random aesthetic head can score below zero).

Each gain also carries a paired bootstrap interval over prompts (``negopt.compare.intervals``), from the
per-image scores and Inception posteriors that ``evaluate`` stores (``paths.scores``): comparison.json's
``ci`` entry of each pair, ``{metric: {estimate, low, high, diff_low, diff_high, excludes_zero}}``.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from negopt.compare.intervals import gain_interval, resample_counts, resampled_inception_score, resampled_mean
from negopt.core.errors import ParamsError
from negopt.core.io import write_bytes, write_json

# The metrics the paper compares, with the labels the table and plots use.
METRICS: dict[str, str] = {
    "inception_score": "Inception Score",
    "aesthetic": "Aesthetic",
    "clip_score": "CLIP score",
}
# Human-preference scores (negopt/images/preference.py), compared when every method in eval.json has them.
PREFERENCE: dict[str, str] = {"hpsv2": "HPSv2", "pickscore": "PickScore"}
# The world profile's oracle (negopt/world/oracle.py::oracle_scores): the truth read back from each image, as the
# share of images with each defect and of images whose content agrees with the prompt.
ORACLE: dict[str, str] = {
    "true_quality": "True quality", "rate_blur": "Blur", "rate_grain": "Grain", "rate_washed": "Washed out",
    "rate_watermark": "Watermark", "align_fg": "Foreground", "align_bg": "Background", "align_shape": "Shape",
    "align_count": "Count",
}
MEAN_METRICS = ("aesthetic", "clip_score", *PREFERENCE, *ORACLE)  # per-image means; the IS is a set statistic


def carried(labels: dict[str, str], eval_metrics: dict[str, dict[str, float]]) -> dict[str, str]:
    """The metrics of ``labels`` that every method of ``eval_metrics`` carries."""
    rows = list(eval_metrics.values())
    return {k: v for k, v in labels.items() if rows and all(k in r for r in rows)}


def compared_metrics(eval_metrics: dict[str, dict[str, float]]) -> dict[str, str]:
    """``METRICS`` plus each preference score and oracle value that every method of ``eval_metrics`` carries."""
    return METRICS | carried(PREFERENCE, eval_metrics) | carried(ORACLE, eval_metrics)


def relative_gain(candidate: float, baseline: float) -> float | None:
    """Percent change of ``candidate`` over ``baseline``; None where the baseline is 0 (undefined)."""
    if baseline == 0 or not (math.isfinite(candidate) and math.isfinite(baseline)):
        return None
    return 100.0 * (candidate - baseline) / abs(baseline)


def compare_methods(
    eval_metrics: dict[str, dict[str, float]],
    candidates: list[str],
    baselines: list[str],
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{candidate: {"vs_<baseline>": {metric: gain %}}}`` for every pair present in ``eval_metrics``.

    A method missing from eval.json (e.g. ``rl`` left out of ``generate.methods``) is skipped with a
    note on stderr, so a partial experiment still compares what it has; no pair at all is an error.
    """
    missing = [m for m in dict.fromkeys(candidates + baselines) if m not in eval_metrics]
    if missing:
        print(f"compare: skipping {missing}: not in eval.json (check generate.methods)", file=sys.stderr)
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    metrics = compared_metrics({m: eval_metrics[m] for m in dict.fromkeys(candidates + baselines) if m in eval_metrics})
    for cand in candidates:
        if cand not in eval_metrics:
            continue
        for base in baselines:
            if base not in eval_metrics or base == cand:
                continue
            gains = {
                metric: relative_gain(float(eval_metrics[cand][metric]), float(eval_metrics[base][metric]))
                for metric in metrics
            }
            out.setdefault(cand, {})[f"vs_{base}"] = gains
    if not out:
        raise ParamsError(
            f"compare: no candidate/baseline pair found in eval.json (methods there: {sorted(eval_metrics)}); "
            "set compare.candidates and compare.baselines to methods listed in generate.methods"
        )
    return out


def method_grid(scores: pd.DataFrame, probs: dict[str, np.ndarray], method: str) -> dict[str, np.ndarray]:
    """One method's per-image values as prompt x seed grids: ``{metric: [P, S]}``, ``inception_probs [P, S, C]``.

    ``scores`` rows (method, prompt_idx, seed, aesthetic, clip_score) follow ``probs[method]``'s row order
    within a method, as ``evaluate`` writes them.
    """
    rows = scores[scores["method"] == method].reset_index(drop=True)
    order = np.lexsort((rows["seed"].to_numpy(), rows["prompt_idx"].to_numpy()))
    num_prompts = rows["prompt_idx"].nunique()
    if len(rows) % num_prompts or rows.groupby("prompt_idx").size().nunique() != 1:
        raise ValueError(f"compare: method {method!r} has unequal seed counts per prompt; re-run generate")
    shape = (num_prompts, len(rows) // num_prompts)
    grid = {m: rows[m].to_numpy(np.float64)[order].reshape(shape) for m in MEAN_METRICS if m in rows}
    grid["inception_probs"] = np.asarray(probs[method], dtype=np.float64)[order].reshape(*shape, -1)
    grid["keys"] = rows[["prompt_idx", "seed"]].to_numpy()[order]
    return grid


def add_intervals(
    comparison: dict,
    scores: pd.DataFrame,
    probs: dict[str, np.ndarray],
    resamples: int,
    seed: int,
    confidence: float,
) -> dict:
    """Add to every (candidate, baseline) pair of ``comparison`` its ``ci``: one paired resample of prompt
    indices ``W [R, P]`` (``compare.bootstrap_resamples``, ``compare.bootstrap_seed``) shared by all methods."""
    methods = list(dict.fromkeys([c for c in comparison] + [k.removeprefix("vs_") for b in comparison.values()
                                                             for k in b]))
    grids = {m: method_grid(scores, probs, m) for m in methods}
    first = grids[methods[0]]["keys"]
    for m in methods:
        if not np.array_equal(grids[m]["keys"], first):
            raise ValueError(f"compare: {m!r} and {methods[0]!r} were not rendered on the same prompts and seeds; "
                             "a paired interval needs both: re-run generate")
    counts = resample_counts(len(np.unique(first[:, 0])), resamples, seed)
    full = np.ones((1, counts.shape[1]))
    stats = {}
    for m in methods:
        g = grids[m]
        stats[m] = {"inception_score": (resampled_inception_score(g["inception_probs"], counts),
                                        float(resampled_inception_score(g["inception_probs"], full)[0]))}
        stats[m] |= {metric: (resampled_mean(g[metric], counts), float(resampled_mean(g[metric], full)[0]))
                     for metric in MEAN_METRICS if metric in g}
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            base = key.removeprefix("vs_")
            gains["ci"] = {
                metric: gain_interval(stats[cand][metric][0], stats[base][metric][0], stats[cand][metric][1],
                                      stats[base][metric][1], confidence)
                for metric in gains if metric in stats[cand] and metric in stats[base]
            }
    return comparison


def format_gain(gain: float | None) -> str:
    """``+24.8%``; gains under 0.05 % keep two significant digits so tiny-profile effects stay visible."""
    if gain is None:
        return "n/a"
    return f"{gain:+.1f}%" if gain == 0 or abs(gain) >= 0.05 else f"{gain:+.2g}%"


def format_value(x: float) -> str:
    """Six significant digits: enough for an IS just above 1 (a random Inception) and IS ~ 25 (a real one)."""
    return f"{x:.6g}"


def format_interval(ci: dict | None) -> str:
    """``[-1.2%, +9.8%]``, with ``*`` when the interval excludes 0; empty without an interval."""
    if not ci:
        return ""
    if ci["low"] is None:
        return " [n/a]"
    return f" [{format_gain(ci['low'])}, {format_gain(ci['high'])}]" + ("*" if ci["excludes_zero"] else "")


def gain_cell(gains: dict, metric: str) -> str:
    """The gain with its interval, as the markdown table and the report print it."""
    return format_gain(gains[metric]) + format_interval(gains.get("ci", {}).get(metric))


def gains_markdown(comparison: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """The comparison as a markdown table: one row per (candidate, baseline), one column per metric;
    with intervals, each cell is ``gain [low, high]`` and ``*`` marks an interval that excludes 0."""
    first = next((g for by_base in comparison.values() for g in by_base.values()), {})
    metrics = {m: label for m, label in (METRICS | PREFERENCE).items() if m in first}  # the pairs' own metrics
    header = "| candidate | baseline | " + " | ".join(metrics.values()) + " |"
    rule = "|---|---|" + "---:|" * len(metrics)
    rows = [header, rule]
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            cells = " | ".join(gain_cell(gains, m) for m in metrics)
            rows.append(f"| {cand} | {key.removeprefix('vs_')} | {cells} |")
    return "\n".join(rows)


def format_diff(ci: dict) -> str:
    """An oracle cell of the gains: the difference ``c - b`` with its interval, ``*`` when it excludes 0."""
    return (f"{ci['diff']:+.3f} [{ci['diff_low']:+.3f}, {ci['diff_high']:+.3f}]"
            + ("*" if ci["diff_excludes_zero"] else ""))


def oracle_markdown(eval_metrics: dict[str, dict[str, float]]) -> str:
    """The oracle's values per method (the world profile; empty when eval.json has none)."""
    labels = carried(ORACLE, eval_metrics)
    if not labels:
        return ""
    rows = ["| method | " + " | ".join(labels.values()) + " |", "|---|" + "---:|" * len(labels)]
    rows += [f"| {method} | " + " | ".join(f"{m[k]:.3f}" for k in labels) + " |" for method, m in eval_metrics.items()]
    return "\n".join(rows)


def oracle_gains_markdown(comparison: dict[str, dict[str, dict]]) -> str:
    """Each pair's oracle differences (candidate - baseline) with their paired bootstrap intervals."""
    first = next((g for by_base in comparison.values() for g in by_base.values()), {})
    labels = {k: v for k, v in ORACLE.items() if k in first.get("ci", {})}
    if not labels:
        return ""
    rows = ["| candidate | baseline | " + " | ".join(labels.values()) + " |", "|---|---|" + "---:|" * len(labels)]
    for cand, by_base in comparison.items():
        for key, gains in by_base.items():
            rows.append(f"| {cand} | {key.removeprefix('vs_')} | "
                        + " | ".join(format_diff(gains["ci"][k]) for k in labels) + " |")
    return "\n".join(rows)


def search_costs(generate_metrics: dict | None) -> dict[str, int]:
    """``{method: images rendered before its evaluation images}`` from metrics/generate.json (best_of_n's
    calibration + selection renders; 0 for methods without a test-time search)."""
    methods = (generate_metrics or {}).get("methods", {})
    return {m: int(v.get("search_images", 0)) for m, v in methods.items()}


def metrics_markdown(eval_metrics: dict[str, dict[str, float]], costs: dict[str, int] | None = None) -> str:
    """Absolute metric values per method as a markdown table; ``costs``: a ``search images`` column."""
    costs = costs or {}
    rows = [
        "| method | " + " | ".join(METRICS.values()) + " | images | search images |",
        "|---|" + "---:|" * (len(METRICS) + 2),
    ]
    for method, m in eval_metrics.items():
        is_cell = f"{format_value(m['inception_score'])} ± {format_value(m.get('inception_score_std', 0.0))}"
        cells = f"{is_cell} | {format_value(m['aesthetic'])} | {format_value(m['clip_score'])}"
        rows.append(f"| {method} | {cells} | {int(m['n_images'])} | {costs.get(method, 0)} |")
    return "\n".join(rows)


def plot_rows(eval_metrics: dict[str, dict[str, float]], metric: str) -> list[dict[str, float | str]]:
    """Rows of one bar chart (x = metric value, y = method), the format ``dvc plots`` reads."""
    return [{"method": method, metric: float(m[metric])} for method, m in eval_metrics.items()]


def bar_chart_png(eval_metrics: dict[str, dict[str, float]], metric: str) -> bytes:
    """A bar chart of one metric across methods, as PNG bytes (matplotlib, headless Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(eval_metrics)
    values = [float(eval_metrics[m][metric]) for m in methods]
    errors = (
        [float(eval_metrics[m].get("inception_score_std", 0.0)) for m in methods]
        if metric == "inception_score"
        else None
    )
    # Methods differ by a few percent: start the axis near the data so the differences are visible,
    # and grow every bar up from that floor (also for negative scores such as a random aesthetic head).
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 1.0
    floor = lo - pad
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar(methods, [v - floor for v in values], bottom=floor, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_title(METRICS[metric])
    ax.set_ylabel(METRICS[metric])
    ax.set_ylim(floor, hi + pad)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_comparison(
    eval_metrics: dict[str, dict[str, float]],
    candidates: list[str],
    baselines: list[str],
    comparison_path: str | Path,
    plots_dir: str | Path,
    scores: tuple[pd.DataFrame, dict[str, np.ndarray]] | None = None,
    bootstrap: tuple[int, int, float] = (1000, 0, 0.95),
) -> tuple[dict, dict[str, bytes]]:
    """Write comparison.json and one plot JSON per metric; return the comparison and the PNG charts.

    ``scores``: (per-image frame, posteriors per method) from ``evaluate``, for the intervals;
    ``bootstrap``: (resamples, seed, confidence).
    """
    comparison = compare_methods(eval_metrics, candidates, baselines)
    if scores is not None:
        add_intervals(comparison, scores[0], scores[1], *bootstrap)
    write_json(comparison_path, comparison)
    pngs: dict[str, bytes] = {}
    for metric in METRICS:
        write_json(Path(plots_dir) / f"{metric}.json", plot_rows(eval_metrics, metric))
        pngs[metric] = bar_chart_png(eval_metrics, metric)
    return comparison, pngs


def save_pngs(pngs: dict[str, bytes], out_dir: str | Path) -> None:
    for metric, data in pngs.items():
        write_bytes(Path(out_dir) / f"{metric}.png", data)
