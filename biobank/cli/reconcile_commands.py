"""`biobank reconcile`: compare a box/rack scanner export with the inventory."""

from __future__ import annotations

from pathlib import Path

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, work


def reconcile_command(
    ctx: typer.Context,
    box: str = typer.Argument(..., help="Barcode of the scanned box."),
    scan_file: Path = typer.Argument(..., help="The scanner's CSV export."),
    commit: bool = typer.Option(
        False, "--commit", help="Apply the moves and mark missing tubes (else nothing changes)."
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why (kept in the history and audit trail)."
    ),
    json: JsonOption = False,
) -> None:
    """Compare a box/rack scanner export with the inventory, position by position.

    Each position is match, moved, unexpected, missing, unread or empty.
    Nothing changes without --commit. With it, tubes found elsewhere are
    moved here and tubes not found are marked missing, in one transaction;
    unexpected and unread positions change nothing.

    Exit code: 0 when every position agrees (match or empty), 1 when there
    are differences (with --commit too: they were found, and applied).
    """
    from biobank.services import reconcile

    text = reconcile.read_scan_file(scan_file)
    with work(ctx, readonly=not commit) as (session, actor):
        report = reconcile.reconcile_box(
            session,
            actor=actor,
            box=box,
            scan=text,
            source=scan_file.name,
            commit=commit,
            reason=reason,
        )
    if json:
        emit_json(report)
    else:
        emit_table(
            ["position", "status", "expected", "printed", "found", "note"],
            [(x.position, x.status, x.expected, x.printed, x.found, x.note) for x in report.lines],
        )
        typer.echo("")
        typer.echo("  ".join(f"{status} {count}" for status, count in report.counts.items()))
    planned = (
        f"{len(report.moves)} moved, {len(report.missing)} marked missing, "
        f"{len(report.released)} held positions released"
    )
    if commit:
        message(f"{report.box} reconciled: {planned}")
    elif report.moves or report.missing or report.released:
        message(f"dry run, nothing changed; --commit would apply: {planned}")
    if not report.in_agreement:
        raise typer.Exit(1)
