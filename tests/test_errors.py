"""A user's mistake prints one message and exits 2 without a traceback; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from negopt.core.errors import MissingInputError, ParamsError, UserError, require_input, run_stage


def test_run_stage_turns_a_user_error_into_one_line_and_exit_2(capsys):
    def main():
        raise MissingInputError("data/clean/train.parquet not found: run `dvc repro clean` first")

    with pytest.raises(SystemExit) as ex:
        run_stage(main)
    assert ex.value.code == 2
    assert capsys.readouterr().err == "error: data/clean/train.parquet not found: run `dvc repro clean` first\n"


def test_run_stage_lets_a_bug_raise():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_stage(main)


def _python(args: list[str], root, cwd) -> subprocess.CompletedProcess:
    """This interpreter on ``args`` in ``cwd``, with only the project importable and nothing on PATH."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": ""})


def test_one_type_per_condition_and_fixes_name_dvc(tmp_path):
    with pytest.raises(MissingInputError, match=r"run `dvc repro scrape` first"):
        require_input(tmp_path / "pairs.parquet", "scrape")
    assert issubclass(ParamsError, UserError) and issubclass(ParamsError, ValueError)
    assert issubclass(MissingInputError, UserError) and issubclass(MissingInputError, FileNotFoundError)
    from negopt.data.sources import SourceError
    from negopt.models.find import MissingWeightsError

    assert issubclass(SourceError, UserError) and issubclass(MissingWeightsError, UserError)


def test_a_file_without_negative_prompt_stops_scrape_with_one_message(root, tmp_path):
    (tmp_path / "pairs.csv").write_text("prompt,negative\na cat,ugly\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["source"] = "file:pairs.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _python([str(root / "stages" / "scrape.py")], root, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: data.source=file:pairs.csv: missing required column(s) negative_prompt")
    assert not (tmp_path / "data" / "raw" / "pairs.parquet").exists()


def test_scrape_clean_and_compare_run_without_importing_torch(root, tmp_path):
    """They ask ``start_stage(uses_torch=False)``, so nothing seeds torch for them: that is only safe while
    neither imports it (which costs 2-4 s, more than either stage's work on the default sample)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["sample"]["rows"] = 2000  # the smallest it allows
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    probe = ("import atexit, runpy, sys; "
             "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
             "runpy.run_path(sys.argv[1], run_name='__main__')")
    for stage in ("scrape", "clean"):
        proc = _python(["-c", probe, str(root / "stages" / f"{stage}.py")], root, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith("torch imported: False"), (stage, proc.stdout)
    assert (tmp_path / "data" / "clean" / "train.parquet").exists()
    assert "rows_out" in (tmp_path / "metrics" / "data.json").read_text()
    # compare too: here only its imports are checked (its inputs need the whole pipeline; the e2e test runs it)
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
             "print('torch imported:', 'torch' in sys.modules)")
    proc = _python(["-c", probe, str(root / "stages" / "compare.py")], root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch imported: False"


def test_seed_everything_seeds_torch_unless_the_stage_does_not_use_it():
    import torch

    from negopt.core.runtime import seed_everything

    seed_everything(5)
    first = torch.rand(3)
    seed_everything(5)
    assert torch.equal(torch.rand(3), first)
    torch.manual_seed(99)
    untouched = torch.rand(3)
    torch.manual_seed(99)
    seed_everything(5, uses_torch=False)
    assert torch.equal(torch.rand(3), untouched)
