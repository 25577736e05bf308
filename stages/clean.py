"""Stage clean: ``<paths.raw>/pairs.parquet`` -> ``<paths.clean>/{train,val,test}.parquet``.

Normalises text, drops bad rows by reason (never crashes on one), splits grouped by normalised
prompt, and writes ``<paths.metrics>/data.json`` (rows in/out, dropped by reason, split sizes,
negative-length statistics, and how prompts and negatives are written: A1111 weights and emphasis, texts past
CLIP's 75-token window, textual-inversion names).
"""

from __future__ import annotations

from pathlib import Path

from negopt.core.errors import MissingInputError, require_input, run_stage
from negopt.core.io import write_json
from negopt.core.runtime import start_stage
from negopt.data.clean import run_clean


def main() -> None:
    params = start_stage(uses_torch=False)
    paths = params.paths
    raw = require_input(Path(paths.raw) / "pairs.parquet", "scrape")
    report = run_clean(raw, paths.clean, params.data.clean, params.data.split)
    if report["rows_train"] == 0:
        raise MissingInputError(f"clean: no training rows left ({report['dropped']}); loosen data.clean bounds")
    write_json(Path(paths.metrics) / "data.json", report)
    print(f"clean: {report['rows_in']} rows in, {report['rows_out']} out "
          f"(train {report['rows_train']}, val {report['rows_val']}, test {report['rows_test']}); "
          f"dropped {report['dropped']}")


if __name__ == "__main__":
    run_stage(main)
