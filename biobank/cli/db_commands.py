"""`biobank db …`: schema migrations."""

from __future__ import annotations

import typer

from biobank.cli import common
from biobank.cli.common import JsonOption, emit_json, emit_record, message, read_pin, state
from biobank.cli.role_commands import workstation_role_command
from biobank.errors import ValidationError
from biobank.redact import hide_secrets

app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)


def _engine(ctx: typer.Context):
    from biobank.db import check_connection, make_engine

    engine = make_engine(state(ctx).settings.database_url)
    check_connection(engine)
    return engine


@app.command()
def upgrade(
    ctx: typer.Context,
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
    admin_pin_stdin: bool = typer.Option(
        False, "--admin-pin-stdin", help="Read the first admin's PIN from stdin."
    ),
) -> None:
    """Migrate the database to the newest schema (creates it when empty). A database without
    users gets its first admin, `admin`: on a server with the PIN asked for here (on SQLite
    only if given), and a recovery code shown once, so no account there is left to claim."""
    from biobank import migrate
    from biobank.bootstrap import FIRST_ADMIN_HINT, bootstrap
    from biobank.db import opening

    embedded = state(ctx).settings.is_embedded
    engine = _engine(ctx)
    try:
        pin = _first_admin_pin(engine, revision, embedded=embedded, from_stdin=admin_pin_stdin)
        with opening(engine.url):  # a read-only file refuses the first change
            before = migrate.current_revision(engine)
            migrate.upgrade(engine, revision)
            after = migrate.current_revision(engine)
            first = None
            if after == migrate.head_revision():
                first = bootstrap(engine, admin_pin=pin, pin_required=not embedded)
    finally:
        engine.dispose()
    if first is not None and first.recovery_code is None:
        message(FIRST_ADMIN_HINT)
    elif first is not None:
        typer.echo(first.recovery_code)
        message(
            "Created the first user, 'admin', with the PIN given. Above is its recovery code, "
            "shown once: keep it on paper, away from the workstations; locked out, "
            "`biobank user recover admin` lets admin back in with it"
        )
    message(f"database schema: {before or 'empty'} -> {after}")


def _first_admin_pin(engine, revision: str, *, embedded: bool, from_stdin: bool) -> str | None:
    """The first admin's PIN, asked for before anything changes, if this upgrade makes them:
    always on a server, on the embedded file when given."""
    from biobank import migrate
    from biobank.bootstrap import has_users

    if revision not in ("head", migrate.head_revision()) or has_users(engine):
        return None
    if from_stdin:
        return read_pin(from_stdin=True)
    if embedded:
        return None
    if not common.can_prompt():
        raise ValidationError(
            "a new server database gets its first admin with a PIN: run `biobank db upgrade` "
            "in a terminal, or give the PIN on stdin with --admin-pin-stdin",
            field="admin_pin",
        )
    return read_pin(from_stdin=False, label="PIN for the first admin, 'admin'")


@app.command()
def downgrade(
    ctx: typer.Context,
    revision: str = typer.Argument(..., help="Target revision; 'base' removes every table."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Migrate the schema back to an older revision (data in removed tables is lost)."""
    from biobank import migrate

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
    from biobank import migrate

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
    from biobank import migrate

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


app.command("workstation-role")(workstation_role_command)
