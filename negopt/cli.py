"""The ``negopt`` command: user commands on top of the DVC stages."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="negopt: learn negative prompts for text-to-image models.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect, fetch or replicate the model zoo of a profile.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@app.command("params")
def params_check(path: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml against the schema and print the active profile."""
    from negopt.core.params import ParamsError, load_params

    try:
        p = load_params(path)
    except ParamsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{path}: ok (profile={p.profile})")


def _load_profile(path: Path, profile: str | None):
    """(params, profile name) for a ``models`` command; a bad params file or profile name exits 2."""
    from negopt.core.params import PROFILES, ParamsError, load_params

    try:
        p = load_params(path)
    except ParamsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    name = profile or p.profile
    if name not in PROFILES:
        typer.echo(f"--profile: unknown profile {name!r}; use {', '.join(PROFILES)}", err=True)
        raise typer.Exit(2)
    return p, name


def _print_status(p, name: str) -> None:
    """The availability table of a profile; exit 1 when anything is missing."""
    from negopt.models.check import format_table
    from negopt.models.find import check_profile

    statuses = check_profile(p, name)
    typer.echo(format_table(statuses, name))
    if not all(s.available for s in statuses):
        raise typer.Exit(1)


@models_app.command("check")
def models_check(
    profile: str = typer.Option(None, "--profile", help="tiny, world or paper (default: params.yaml's profile)"),
    path: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Print each component of a profile, its source, availability and parameter count (offline only)."""
    _print_status(*_load_profile(path, profile))


@models_app.command("fetch")
def models_fetch(
    profile: str = typer.Option("paper", "--profile", help="the profile whose missing components to download"),
    path: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    """Download every missing component of a profile (hub models into the HF cache, URL files verified)."""
    from negopt.models.fetch import fetch_profile

    p, profile = _load_profile(path, profile)
    try:
        fetched = fetch_profile(getattr(p.models, profile), log=lambda m: typer.echo(m, err=True))
    except Exception as err:  # offline, HTTP errors, a file that does not verify: say which, then the table
        typer.echo(f"fetch failed: {type(err).__name__}: {err}", err=True)
    else:
        typer.echo(f"fetched: {', '.join(fetched) or 'nothing (all present)'}", err=True)
    _print_status(p, profile)


@models_app.command("replica")
def models_replica(
    out: Path = typer.Option(..., "--out", help="folder for the replica (hub/ = an HF_HUB_CACHE, paper/ = URL files)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random weights"),
    force: bool = typer.Option(False, "--force", help="rebuild even if the stamp matches"),
) -> None:
    """Build the paper profile at full size with random weights, offline (for testing the paper path)."""
    from negopt.models.replica import build_replica, disk_usage

    build_replica(out, seed=seed, force=force, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"replica ready: {out} ({disk_usage(out) / 1e9:.2f} GB). Use it with:")
    typer.echo(f"  export HF_HUB_CACHE={out.resolve() / 'hub'} HF_HUB_OFFLINE=1")
    typer.echo(f"  mkdir -p models/paper && cp {out.resolve() / 'paper'}/* models/paper/")


@app.command("suggest")
def suggest_cmd(
    prompt: str = typer.Argument(None, help="the text-to-image prompt (or use --file)"),
    file: Path = typer.Option(None, "--file", help="a prompt file: .txt one per line, or .csv / .jsonl / .parquet with a prompt column"),
    model: Path = typer.Option(None, "--model", help="model folder (default: newest of paths.rl, paths.sft)"),
    num: int = typer.Option(1, "--num", min=1, help="negatives per prompt (beams, or samples if decode.do_sample)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed (used when decode.do_sample is true)"),
    path: Path = typer.Option(Path("params.yaml"), "--params", help="params file (model paths, decode)"),
) -> None:
    """Print negative prompts, one per line, in prompt order (``--num`` lines per prompt)."""
    from negopt.core.errors import UserError
    from negopt.suggest import NoModelError, newest_model, read_params, read_prompts, suggest

    try:
        if (prompt is None) == (file is None):
            raise UserError("give one PROMPT argument or --file prompts.txt, not both or neither")
        prompts = [prompt] if prompt is not None else read_prompts(file)
        p = read_params(path)
        candidates = [Path(p.paths.rl), Path(p.paths.sft)] if p else [Path("models/rl"), Path("models/sft")]
        chosen = model if model is not None else newest_model(candidates)
        if not (chosen / "config.json").is_file():
            raise NoModelError(f"--model {chosen}: not a trained model folder (no config.json)")
        typer.echo(f"model: {chosen}", err=True)
        negatives = suggest(prompts, chosen, num=num, params=p, seed=seed)
    except UserError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    for negative in negatives:
        typer.echo(negative.replace("\n", " "))  # one output line per negative, in order


@app.command("recipe")
def recipe_cmd(
    recipe: Path = typer.Argument(..., help="a recipe file, e.g. recipes/real-pairs.yaml"),
    name: str = typer.Option(None, "--name", help="the experiment's name"),
    queue: bool = typer.Option(False, "--queue", help="queue the experiment instead of running it"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the dvc command instead of running it"),
    path: Path = typer.Option(Path("params.yaml"), "--params", help="the params file the recipe overlays"),
) -> None:
    """Run a recipe's settings as one DVC experiment (``dvc exp run -S ...``), after validating them."""
    import shlex
    import subprocess

    from negopt.core.errors import ParamsError
    from negopt.recipes import exp_run_command, load_recipe

    try:
        cmd = exp_run_command(load_recipe(recipe, path), name=name, queue=queue)
    except ParamsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(" ".join(shlex.quote(c) for c in cmd), err=True)
    if not dry_run:
        raise typer.Exit(subprocess.run(cmd, check=False).returncode)


@app.command("frontier")
def frontier_cmd(
    out: Path = typer.Option(Path("frontier"), "--out", help="folder for frontier.csv, frontier.md, frontier.png"),
    exp_json: Path = typer.Option(None, "--exp-json", help="saved `dvc exp show --json` output (default: run it)"),
    raw: bool = typer.Option(False, "--raw", help="raw term values (<term>_raw_test_rl) instead of z units"),
    workspace: bool = typer.Option(False, "--workspace", help="also list the workspace's uncommitted results"),
) -> None:
    """Per-term test means of each experiment of a reward.weights.* sweep; marks the Pareto-optimal weightings."""
    import json
    import subprocess

    from negopt.compare.frontier import experiments, frontier_markdown, frontier_png, frontier_table
    from negopt.core.io import write_bytes, write_text

    if exp_json is None:
        proc = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            typer.echo(f"frontier: `dvc exp show --json` failed:\n{proc.stderr[-2000:]}", err=True)
            raise typer.Exit(1)
        text = proc.stdout
    else:
        text = exp_json.read_text()
    try:
        table, terms = frontier_table(experiments(json.loads(text), raw=raw, include_workspace=workspace))
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    md = frontier_markdown(table, terms)
    write_text(out / "frontier.csv", table.to_csv(index=False))
    write_text(out / "frontier.md", md + "\n")
    write_bytes(out / "frontier.png", frontier_png(table, terms))
    typer.echo(md)
    typer.echo(f"({'raw values' if raw else 'z units'}; * = Pareto-optimal) -> {out}/frontier.{{csv,md,png}}")


if __name__ == "__main__":
    app()
