"""The ``negopt`` command: user commands on top of the DVC stages."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="negopt: learn negative prompts for text-to-image models.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect the model zoo of a profile.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@app.command("params")
def params_check(path: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml against the schema and print the active profile."""
    from negopt.params import ParamsError, load_params

    try:
        p = load_params(path)
    except ParamsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{path}: ok (profile={p.profile})")


if __name__ == "__main__":
    app()
