"""`biobank backup` and `biobank restore`: the whole database to a file and back (admins)."""

from __future__ import annotations

from pathlib import Path

import typer

from biobank.cli.common import JsonOption, emit_json, message, state


def backup_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Where the copy goes (a new file, or one to replace)."),
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
    json: JsonOption = False,
) -> None:
    """Copy the whole database to FILE (SQLite's online backup, or pg_dump's custom format)."""
    from biobank.services import backups

    engine, actor = state(ctx).database().engine, state(ctx).actor()
    made = backups.backup(engine, actor=actor, path=file, replace=force)
    if json:
        emit_json(made.model_dump(mode="json"))
        return
    message(
        f"backed up the {made.engine} database to {made.path} ({made.bytes:,} bytes, "
        f"{made.audit_entries:,} audit entries verified, SHA-256 {made.sha256[:16]}…)"
    )


def restore_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A backup file."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json: JsonOption = False,
) -> None:
    """Replace the whole database with the backup in FILE, once it is checked (schema version,
    integrity, audit chain)."""
    from biobank.services import backups

    engine, actor = state(ctx).database().engine, state(ctx).actor()
    if not yes and not typer.confirm(
        f"Replace everything in the database with {file}?", default=False, err=True
    ):
        message("nothing restored")
        raise typer.Exit(1)
    restored = backups.restore(engine, actor=actor, path=file)
    _mark_restore(ctx, engine, actor)
    if json:
        emit_json(restored.model_dump(mode="json"))
        return
    message(
        f"restored the {restored.engine} database from {restored.path}; "
        f"{restored.audit_entries:,} audit entries verified"
    )


def _mark_restore(ctx: typer.Context, engine, actor) -> None:
    """An older chain was put back on purpose: a keyed mark says so to `audit verify`, which
    would otherwise read the checkpoints after the backup as a truncation."""
    from biobank.db import uow
    from biobank.services import audit_anchor

    settings = state(ctx).settings
    key = audit_anchor.load_key(settings.audit_key_file, create=False)
    if key is None:
        return
    with uow(engine, readonly=True) as session:
        audit_anchor.add_checkpoint(
            session, actor=actor, key=key, path=settings.audit_checkpoints_file, kind="restore"
        )
