"""`biobank audit …`: read and verify the audit trail."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, work
from biobank.services import audit

app = typer.Typer(help="Read and verify the tamper-evident audit trail.", no_args_is_help=True)


@app.command()
def verify(ctx: typer.Context, json: JsonOption = False) -> None:
    """Walk the hash chain and name the first entry that was altered, removed or reordered."""
    with work(ctx, readonly=True) as (session, actor):
        report = audit.verify_chain(session, actor=actor)
    if json:
        emit_json({"ok": True, "entries": report.entries, "last_hash": report.last_hash})
    else:
        message(f"ok: {report.entries} audit entries, chain intact")


@app.command()
def log(
    ctx: typer.Context,
    entity: str | None = typer.Option(None, "--entity", help="e.g. user, participant, visit."),
    entity_id: str | None = typer.Option(None, "--id", help="The record's id."),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000),
    json: JsonOption = False,
) -> None:
    """Show audit entries, newest first."""
    with work(ctx, readonly=True) as (session, actor):
        entries = audit.audit_log(
            session, actor=actor, entity=entity, entity_id=entity_id, limit=limit
        )
    if json:
        emit_json(entries)
        return
    emit_table(
        ["id", "time (UTC)", "actor", "workstation", "action", "entity", "reason"],
        [
            (
                e.id,
                e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.workstation,
                e.action,
                f"{e.entity}:{e.entity_id}",
                e.reason,
            )
            for e in entries
        ],
    )
    if not entries:
        message("no audit entries match")
