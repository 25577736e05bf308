"""The default `dvc repro` of two revisions, before vs after in one run, each in a fresh clone.

For ``--rounds`` rounds, alternating, each revision is cloned afresh into a temp folder (no DVC cache, no
outputs, no checkpoints: what a new user runs) and ``dvc repro`` runs there with this environment's packages
and the clone's own code (``PYTHONPATH`` = the clone, so the editable install of this checkout is not what
runs). Per run: wall seconds, peak RSS (the DVC process and its reaped stages, ``os.wait4``), and each stage's
seconds from the write times of its outputs (``dvc.yaml`` order; the first stage from the clock's start).
Prints and appends to ``bench/RESULTS.md`` the medians per revision and the after / before ratio of the
medians, and whether the two revisions' ``metrics/*.json`` hold the same values (every leaf but the timings,
from the first round of each). Run it on an idle machine: a second job on 2 cores more than doubles these
times (the values do not depend on the load).

    python bench/bench_repro.py --before e827697 --after HEAD [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import append  # noqa: E402


def stage_outputs(clone: Path) -> dict[str, list[Path]]:
    """Every stage's declared outputs and metrics (``${paths.*}`` resolved from the clone's params.yaml)."""
    params = yaml.safe_load((clone / "params.yaml").read_text())

    def resolve(entry) -> Path:
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        for key, value in params["paths"].items():
            name = name.replace(f"${{paths.{key}}}", value)
        return clone / name

    stages = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]
    return {name: [resolve(e) for key in ("outs", "metrics") for e in spec.get(key, [])] for name, spec in stages.items()}


def newest_mtime(path: Path) -> float:
    if path.is_file():
        return path.stat().st_mtime
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return max(times) if times else 0.0


TIMINGS = ("seconds", "overhead_share")  # metric names that measure the machine, not the run


def leaves(obj, prefix: str = "") -> dict[str, object]:
    """``{dotted path: value}`` of a JSON document. A selection check is one row: a list ``[step, share, ratio,
    gain, se]`` before 2026-12-07 and a mapping since, so both are read as the mapping."""
    if isinstance(obj, list) and len(obj) in (3, 5) and prefix.split(".")[-1].startswith(("history[", "checks[")):
        obj = dict(zip(("step", "share", "ratio", "gain", "se"), [*obj, None, None][:5], strict=True))
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in leaves(value, f"{prefix}.{key}" if prefix else key).items()}
    if isinstance(obj, list):
        return {k: v for i, value in enumerate(obj) for k, v in leaves(value, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def metric_values(clone: Path) -> dict[str, object]:
    """Every metric leaf of a finished run (``<file>:<path>``), timings left out."""
    out: dict[str, object] = {}
    for f in sorted((clone / "metrics").glob("*.json")):
        values = leaves(json.loads(f.read_text()))
        out |= {f"{f.name}:{k}": v for k, v in values.items() if not any(t in k for t in TIMINGS)}
    return out


def run_once(rev: str, workdir: Path) -> dict[str, float]:
    clone = workdir / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    # this interpreter's bin first: dvc and the stages' `python` are this environment's, activated or not
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PYTHONPATH=str(clone), DVC_NO_ANALYTICS="1", PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    start = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"bench_repro: dvc repro failed at {rev}:\n{proc.stderr.read().decode()[-3000:]}")
    out = {"wall": wall, "rss": usage.ru_maxrss / 2**20}
    previous = start
    for stage, paths in stage_outputs(clone).items():
        done = max((newest_mtime(p) for p in paths if p.exists()), default=previous)
        out[stage] = max(done - previous, 0.0)
        previous = max(done, previous)
    out["metrics"] = metric_values(clone)
    return out


def groups(keys: list[str]) -> str:
    """``a.b.x, a.b.y, c`` -> ``a.b.* (2), c``: a new section is named once, not leaf by leaf."""
    counts: dict[str, int] = {}
    for key in keys:
        head = key.rsplit(".", 1)[0] + ".*" if "." in key.split(":", 1)[-1] else key
        counts[head] = counts.get(head, 0) + 1
    return ", ".join(k if n == 1 and not k.endswith("*") else f"{k} ({n})" for k, n in counts.items())


def metrics_note(before: dict[str, object], after: dict[str, object]) -> str:
    """How the two revisions' metric values compare, naming every leaf that differs and every group of leaves
    (the key up to its last dot) that exists in one revision only."""
    same = [k for k in before if k in after and before[k] == after[k]]
    differ = [f"{k}: {before[k]!r} -> {after[k]!r}" for k in before if k in after and before[k] != after[k]]
    gone, new = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    parts = [f"Metrics (first round of each, timings left out): {len(same)} of {len(before)} values identical"]
    parts += [f"differ: {'; '.join(differ)}"] if differ else []
    parts += [f"only before: {groups(gone)}"] if gone else []
    parts += [f"only after: {groups(new)}"] if new else []
    return "; ".join(parts) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the baseline")
    ap.add_argument("--after", default="HEAD", help="git revision to compare (default HEAD)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    revs = {name: subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.strip() for name, rev in (("before", args.before), ("after", args.after))}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="negopt-repro-") as tmp:
        for r in range(args.rounds):
            for name in ("before", "after"):
                res = run_once(revs[name], Path(tmp))
                runs[name].append(res)
                print(f"bench_repro: round {r + 1} {name} ({revs[name]}): {res['wall']:.1f} s, peak RSS {res['rss']:.2f} GB",
                      flush=True)
    keys = [k for k in runs["before"][0] if k != "metrics"]
    med = {name: {k: statistics.median(run[k] for run in runs[name]) for k in keys} for name in runs}
    rows = [[k if k not in ("wall", "rss") else {"wall": "**`dvc repro`, wall s**", "rss": "peak RSS GB"}[k],
             f"{med['before'][k]:.1f}" if k != "rss" else f"{med['before'][k]:.2f}",
             f"{med['after'][k]:.1f}" if k != "rss" else f"{med['after'][k]:.2f}",
             f"{med['after'][k] / med['before'][k]:.2f}x" if med["before"][k] > 0 else "-"] for k in keys]
    note = (f"Medians of {args.rounds} fresh clones per revision, alternating; before = {revs['before']}, after = "
            f"{revs['after']}; stage seconds from the write times of each stage's outputs (so each includes its start-up). "
            "Every run: " + "; ".join(f"{n} " + ", ".join(f"{run['wall']:.1f} s" for run in runs[n]) for n in runs) + ". "
            + metrics_note(runs["before"][0]["metrics"], runs["after"][0]["metrics"]))
    print(append("tiny `dvc repro`, fresh clones, before vs after (`bench/bench_repro.py`)",
                 ["stage", f"before ({revs['before']}) s", f"after ({revs['after']}) s", "after / before"], rows, note))


if __name__ == "__main__":
    main()
