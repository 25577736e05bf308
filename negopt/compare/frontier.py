"""The reward-weight frontier: per-term test means of each experiment of a ``reward.weights.*`` sweep, and which
weightings are Pareto-optimal.

The paper claims that raising one weight optimises its metric "without hurting the others much", from one
point. A sweep measures the curve: queue experiments over ``reward.weights.<term>`` (``dvc exp run --queue rl
-C checkpoints -S 'reward.weights.aesthetic=0.5,1,3' ...``), run them (``dvc exp run --run-all``), then
``negopt frontier`` reads ``dvc exp show --json`` and, per experiment with an ``rl.json``, takes the weights
(``reward.weights``) and the per-term test means of the RL model
(``<term>_test_rl`` from ``negopt.rl.heldout``: z units of the calibration, which depends on the SFT model
and ``base.seed`` only, so experiments that share them share units; ``--raw`` reads ``<term>_raw_test_rl``).

An experiment is **Pareto-optimal** when no other experiment is at least as good on every term and strictly
better on one (every term is maximised).

On the world profile each ``rl.json`` also holds the oracle's true quality of the RL model's images
(``oracle_true_quality_rl``): it joins the axes as ``true_quality``, so the table says whether the weightings the
learned terms favour are the ones the truth favours. ``rl.kl_coef`` is read beside the weights, so a sweep over it
(``-S 'rl.kl_coef=0.1,0.3,1'``) is a frontier too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd

RL_METRICS = "metrics/rl.json"
ORACLE_AXIS = "true_quality"  # the world oracle's mean true quality of the RL model's test images
SETTINGS = ("kl_coef",)  # rl.* settings read beside the weights (they label each point too)


def _nodes(entries: list[dict]) -> Iterator[dict]:
    """Every commit and experiment record of ``dvc exp show --json`` (baselines, then their experiments)."""
    for entry in entries or []:
        yield entry
        for exp in entry.get("experiments") or []:
            yield from _nodes(exp.get("revs") or [])


def experiments(entries: list[dict], metrics_file: str = RL_METRICS, raw: bool = False,
                include_workspace: bool = False) -> pd.DataFrame:
    """One row per experiment (or baseline commit) with an ``rl.json``: ``name``, ``rev``, ``w_<term>`` for
    each weight, the :data:`SETTINGS` of ``rl`` that params.yaml holds, ``<term>`` for its test mean and, where the
    run had the world's oracle, :data:`ORACLE_AXIS`; records without the metrics file (queued, failed) are left
    out.

    The workspace row is left out by default: it repeats the checked-out commit or holds an unfinished run.
    """
    rows, seen = [], set()
    for node in _nodes(entries):
        rev = node.get("rev")
        if rev in seen or (rev == "workspace" and not include_workspace):
            continue
        data = node.get("data") or {}
        metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        weights = (params.get("reward") or {}).get("weights")
        if not metrics or not weights:
            continue
        seen.add(rev)
        suffix = "_raw_test_rl" if raw else "_test_rl"
        short = str(rev) if rev == "workspace" else str(rev)[:7]
        row = {"name": node.get("name") or short, "rev": short}
        row |= {f"w_{t}": float(w) for t, w in weights.items()}
        row |= {k: float(v) for k, v in (params.get("rl") or {}).items() if k in SETTINGS}
        row |= {t: float(metrics[f"{t}{suffix}"]) for t in weights if f"{t}{suffix}" in metrics}
        if f"oracle_{ORACLE_AXIS}_rl" in metrics:
            row[ORACLE_AXIS] = float(metrics[f"oracle_{ORACLE_AXIS}_rl"])
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """points ``[E, T]`` (higher is better on every column) -> ``[E]`` True where no other point dominates."""
    p = np.asarray(points, dtype=np.float64)
    # dominated[i] if some j has p[j] >= p[i] on every term and > on at least one
    ge = (p[None, :, :] >= p[:, None, :]).all(axis=2)  # [i, j]: j at least as good as i everywhere
    gt = (p[None, :, :] > p[:, None, :]).any(axis=2)
    return ~(ge & gt).any(axis=1)


def frontier_table(exps: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The experiments with a ``pareto`` column, and the axes: the term columns and :data:`ORACLE_AXIS`, each kept
    where every experiment has it."""
    if exps.empty:
        raise ValueError(f"frontier: no experiment with {RL_METRICS} and reward.weights params in `dvc exp show`; "
                         "run the sweep first (dvc exp run --queue -S 'reward.weights.<term>=a,b', "
                         "then dvc exp run --run-all)")
    terms = [c.removeprefix("w_") for c in exps.columns if c.startswith("w_")]
    terms = [t for t in [*terms, ORACLE_AXIS] if t in exps.columns and exps[t].notna().all()]
    out = exps.copy()
    out["pareto"] = pareto_mask(out[terms].to_numpy())
    return out, terms


def _settings(table: pd.DataFrame) -> list[str]:
    """The columns that say how each point was made: the weights, then :data:`SETTINGS` present."""
    return [c for c in table.columns if c.startswith("w_")] + [c for c in SETTINGS if c in table.columns]


def frontier_markdown(table: pd.DataFrame, terms: list[str]) -> str:
    """``| experiment | w_<t>... [kl_coef] | <t> test... | pareto |``, Pareto-optimal rows marked ``*``."""
    weights = _settings(table)
    head = "| experiment | " + " | ".join(weights) + " | " + " | ".join(f"{t} (test)" for t in terms) + " | pareto |"
    rows = [head, "|---|" + "---:|" * (len(weights) + len(terms)) + "---|"]
    for _, r in table.iterrows():
        cells = [f"{r[w]:g}" for w in weights] + [f"{r[t]:+.4f}" for t in terms]
        rows.append(f"| {r['name']} | " + " | ".join(cells) + f" | {'*' if r['pareto'] else ''} |")
    return "\n".join(rows)


def frontier_png(table: pd.DataFrame, terms: list[str]) -> bytes:
    """One scatter per pair of terms (test means), Pareto-optimal experiments filled and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(a, b) for i, a in enumerate(terms) for b in terms[i + 1:]] or [(terms[0], terms[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.6), dpi=100, squeeze=False)
    weights = _settings(table)
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        for _, r in table.iterrows():
            ax.scatter(r[a], r[b], s=40, color="#4c72b0" if r["pareto"] else "white", edgecolors="#4c72b0")
            label = "/".join(f"{r[w]:g}" for w in weights)
            ax.annotate(label, (r[a], r[b]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{a} (test)")
        ax.set_ylabel(f"{b} (test)")
    fig.suptitle("reward-weight frontier (filled: Pareto-optimal; labels: " + "/".join(w.removeprefix("w_") for w in weights) + ")",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
