"""Stage `compare`: relative gains (metrics/comparison.json), bar-chart data for `dvc plots`, and the
self-contained HTML report (report/index.html)."""

from __future__ import annotations

from pathlib import Path

from negopt.compare.gains import (
    gains_markdown,
    metrics_markdown,
    oracle_gains_markdown,
    oracle_markdown,
    save_pngs,
    search_costs,
    write_comparison,
)
from negopt.compare.manifest import GENERATE_METRICS, read_manifest
from negopt.compare.report import render_report, write_report
from negopt.compare.scores import read_scores
from negopt.core.errors import require_input, run_stage
from negopt.core.io import read_json
from negopt.core.runtime import start_stage


def main() -> None:
    params = start_stage(uses_torch=False)
    paths, cfg = params.paths, params.compare
    eval_metrics = read_json(require_input(Path(paths.metrics) / "eval.json", "evaluate"))
    costs = search_costs(read_json(require_input(Path(paths.metrics) / GENERATE_METRICS, "generate")))
    comparison, pngs = write_comparison(
        eval_metrics,
        list(cfg.candidates),
        list(cfg.baselines),
        Path(paths.metrics) / "comparison.json",
        Path(paths.plots) / "comparison",
        read_scores(paths.scores),
        (cfg.bootstrap_resamples, cfg.bootstrap_seed, cfg.confidence),
    )
    save_pngs(pngs, Path(paths.report) / "plots")
    page = render_report(
        eval_metrics, comparison, read_manifest(paths.images), paths.images, pngs, cfg.grid_prompts,
        profile=params.profile, confidence=cfg.confidence, costs=costs,
        rl_metrics=read_json(require_input(Path(paths.metrics) / "rl.json", "rl")),
    )
    write_report(Path(paths.report) / "index.html", page)
    print(metrics_markdown(eval_metrics, costs))
    print()
    print(gains_markdown(comparison))
    print(f"(gain [{cfg.confidence:.0%} paired bootstrap interval over prompts]; * = the interval excludes 0)")
    oracle = oracle_markdown(eval_metrics)
    if oracle:
        print("\nThe oracle (the truth read back from each image):\n" + oracle)
        print("\n" + oracle_gains_markdown(comparison))
        print("(difference candidate - baseline [paired bootstrap interval]; * = it excludes 0)")
    print(f"\ncompare: report -> {Path(paths.report) / 'index.html'}")


if __name__ == "__main__":
    run_stage(main)
