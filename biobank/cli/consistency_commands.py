"""`biobank audit reconcile`: every specimen row against its history, every box against its
tubes (`services.consistency`)."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, message, work
from biobank.errors import AuditChainBroken
from biobank.terminal_text import shown

app = typer.Typer(help="Check the inventory against its history.", no_args_is_help=True)


@app.command()
def check(ctx: typer.Context, json: JsonOption = False) -> None:
    """Compare every specimen with its custody events and audit trail, and every box's free
    positions with its tubes: a change made behind biobank's back (SQL in psql) is named,
    one line per disagreement, while `audit verify` still passes.

    Exit code: 0 when everything agrees, 9 when something does not (as for a broken chain).
    """
    from biobank.services import consistency

    with work(ctx, readonly=True) as (session, actor):
        report = consistency.check_consistency(session, actor=actor)
    if json:
        emit_json(report)
    else:
        for p in report.problems:
            typer.echo(shown(f"{p.entity}  {p.kind}: stored {p.stored}; expected {p.expected}"))
    checked = f"{report.specimens} specimens and {report.boxes} boxes"
    if report.ok:
        message(f"ok: {checked} agree with their history")
        return
    listed = len(report.problems)
    more = f" (the first {listed} listed)" if listed < report.problem_count else ""
    message(f"{report.problem_count} disagreements in {checked}{more}")
    raise typer.Exit(AuditChainBroken.exit_code)
