"""`biobank db …`: schema migrations."""

from __future__ import annotations

import typer

from biobank import migrate
from biobank.bootstrap import FIRST_ADMIN_HINT, bootstrap
from biobank.cli.common import JsonOption, emit_json, emit_record, message, state
from biobank.db import check_connection, make_engine
from biobank.redact import hide_secrets

app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)


def _engine(ctx: typer.Context):
    engine = make_engine(state(ctx).settings.database_url)
    check_connection(engine)
    return engine


@app.command()
def upgrade(
    ctx: typer.Context,
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
) -> None:
    """Migrate the database to the newest schema (creates it when empty)."""
    engine = _engine(ctx)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
        if after == migrate.head_revision() and bootstrap(engine) is not None:
            message(FIRST_ADMIN_HINT)
    finally:
        engine.dispose()
    message(f"database schema: {before or 'empty'} -> {after}")


@app.command()
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(..., help="Target revision; 'base' removes every table."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Migrate the schema back to an older revision (data in removed tables is lost)."""
    if not yes:
        typer.confirm(
            f"Downgrade to {revision}? Data in tables or columns it removes is lost.", abort=True
        )
    engine = _engine(ctx)
    try:
        migrate.downgrade(engine, revision)
        message(f"database schema: now {migrate.current_revision(engine) or 'empty'}")
    finally:
        engine.dispose()


@app.command()
def current(ctx: typer.Context, json: JsonOption = False) -> None:
    """Show the schema revision of the database and the one this version needs."""
    engine = _engine(ctx)
    try:
        revision, head = migrate.schema_state(engine)
    finally:
        engine.dispose()
    data = {
        "database_url": hide_secrets(str(engine.url)),
        "current": revision,
        "head": head,
        "up_to_date": revision == head,
    }
    if json:
        emit_json(data)
    else:
        emit_record(list(data.items()))


@app.command()
def check(ctx: typer.Context, json: JsonOption = False) -> None:
    """Check that the database is at the newest revision and agrees with the models."""
    engine = _engine(ctx)
    try:
        revision, head = migrate.schema_state(engine)
        differences = migrate.schema_differences(engine) if revision == head else []
    finally:
        engine.dispose()
    ok = revision == head and not differences
    if json:
        emit_json({"current": revision, "head": head, "differences": differences, "ok": ok})
    elif ok:
        message(f"ok: schema at {head}, models and migrations agree")
    if revision != head:
        message(f"error: the database is at {revision or 'empty'}, expected {head}")
    for difference in differences:
        message(f"drift: {difference}")
    if not ok:
        raise typer.Exit(1)
