"""`biobank config …`: where settings come from and what they are."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_record, state
from biobank.redact import redacted
from biobank.settings import config_path

app = typer.Typer(help="Show settings and where they come from.", no_args_is_help=True)


@app.command()
def show(ctx: typer.Context, json: JsonOption = False) -> None:
    """The effective settings (environment over config file over defaults), secrets hidden."""
    settings = state(ctx).settings
    data = redacted(settings.model_dump(mode="json"))
    path = config_path()
    data["config_file"] = str(path)
    data["config_file_exists"] = path.exists()
    if json:
        emit_json(data)
        return
    pairs = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    pairs += [(f"scanner.{k}", v) for k, v in data["scanner"].items()]
    pairs += [(f"printers.{name}", p) for name, p in data["printers"].items()]
    emit_record(pairs)


@app.command()
def path() -> None:
    """Print the path of the settings file."""
    typer.echo(str(config_path()))
