"""`biobank audit …`: read and verify the audit trail."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, state, work
from biobank.cli.consistency_commands import check

app = typer.Typer(help="Read and verify the tamper-evident audit trail.", no_args_is_help=True)
FULL_HELP = (
    "Walk the whole chain, not only what came after the last verified checkpoint (run it "
    "regularly: only it sees an entry edited before that checkpoint)."
)


@app.command()
def verify(
    ctx: typer.Context,
    full: bool = typer.Option(False, "--full", help=FULL_HELP),
    json: JsonOption = False,
) -> None:
    """Walk the hash chain after the last verified checkpoint (appended by `backup` and `audit
    checkpoint`; all of it with --full) and name the first entry that was altered, removed or
    reordered; then hold it to the keyed checkpoints kept outside the database (`audit
    checkpoint`), which name a truncation or a rewriting the chain alone cannot show."""
    from biobank.services import audit, audit_anchor

    settings = state(ctx).settings
    key = audit_anchor.load_key(settings.audit_key_file, create=False)
    with work(ctx, readonly=True) as (session, actor):
        report = audit.verify_chain(session, actor=actor, incremental=not full)
        anchors = audit_anchor.check_checkpoints(
            session, actor=actor, key=key, path=settings.audit_checkpoints_file
        )
    if json:
        emit_json({"ok": True, "entries": report.entries, "last_hash": report.last_hash,
                   "checked": report.checked, "since": report.since,
                   "anchors": anchors})  # fmt: skip
        return
    last = anchors.last_checkpoint
    anchored = (
        f"held to {anchors.checkpoints} checkpoint(s), the last of {last.at:%Y-%m-%d %H:%M} "
        f"(entry {last.entry}); {anchors.unanchored} entries since, not yet anchored"
        if last
        else "no checkpoint yet: `biobank audit checkpoint` anchors it outside the database"
    )
    walked = (
        f"{report.checked} walked after the verified checkpoint at entry {report.since}"
        if report.since is not None
        else "all walked"
    )
    message(f"ok: {report.entries} audit entries ({walked}), chain intact; {anchored}")


@app.command()
def checkpoint(ctx: typer.Context, json: JsonOption = False) -> None:
    """Verify the chain after the last verified checkpoint and append a new one to it (where
    the next `audit verify` starts); then append its head, keyed with the audit key (made on
    first use, readable by its owner only), to the checkpoints file; the line is printed for
    the admins' records too. Run it regularly (after each backup, say)."""
    from biobank.services import audit, audit_anchor

    settings = state(ctx).settings
    key = audit_anchor.load_key(settings.audit_key_file, create=True)
    with work(ctx, readonly=True) as (session, actor):
        report = audit.verify_chain(session, actor=actor, incremental=True)
    with work(ctx) as (session, actor):
        audit.record_verified(session, actor=actor, report=report)
    with work(ctx, readonly=True) as (session, actor):
        made = audit_anchor.add_checkpoint(
            session, actor=actor, key=key, path=settings.audit_checkpoints_file
        )
    if json:
        emit_json(made)
    else:
        typer.echo(made.model_dump_json())
        message(f"checkpoint at entry {made.entry} written to {settings.audit_checkpoints_file}")


app.command("reconcile")(check)


@app.command()
def log(
    ctx: typer.Context,
    entity: str | None = typer.Option(None, "--entity", help="e.g. user, participant, visit."),
    entity_id: str | None = typer.Option(None, "--id", help="The record's id."),
    limit: int = typer.Option(50, "--limit", min=1, max=100_000),
    json: JsonOption = False,
) -> None:
    """Show audit entries, newest first, one line each (a reason's line breaks and control
    characters shown escaped, as \\n or \\x1b)."""
    from biobank.services import audit

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
