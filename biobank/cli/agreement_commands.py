"""`biobank agreement …`: the data use agreements a limited data set must name."""

from __future__ import annotations

import typer

from biobank.cli.common import JsonOption, emit_json, emit_table, message, parse_date, work

app = typer.Typer(help="Data use agreements (limited data sets name one).", no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    reference: str = typer.Argument(..., help="The agreement's reference, e.g. DUA-2026-004."),
    pi: str = typer.Option(..., "--pi", help="The PI it binds (a username)."),
    study: str = typer.Option(..., "--study", help="The study whose data it covers."),
    uses: list[str] = typer.Option(..., "--use", help="A use it allows (repeatable)."),
    starts: str = typer.Option(..., "--from", help="First day in force (YYYY-MM-DD)."),
    expires: str = typer.Option(..., "--expires", help="Last day in force (YYYY-MM-DD)."),
    json: JsonOption = False,
) -> None:
    """Register a signed agreement (admins)."""
    from biobank.services import agreements

    with work(ctx) as (session, actor):
        row = agreements.register_agreement(
            session, actor=actor, reference=reference, pi=pi, study=study, uses=uses,
            starts_on=parse_date(starts, "from"), expires_on=parse_date(expires, "expires"),
        )  # fmt: skip
    if json:
        emit_json(row)
        return
    message(
        f"agreement {row.reference}: {row.pi}, study {row.study}, {row.starts_on}–{row.expires_on}"
    )


@app.command()
def revoke(
    ctx: typer.Context,
    reference: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why it ends early."),
    json: JsonOption = False,
) -> None:
    """End an agreement before it expires (admins)."""
    from biobank.services import agreements

    with work(ctx) as (session, actor):
        row = agreements.revoke_agreement(session, actor=actor, reference=reference, reason=reason)
    if json:
        emit_json(row)
        return
    message(f"agreement {row.reference} revoked")


@app.command("list")
def list_agreements(ctx: typer.Context, json: JsonOption = False) -> None:
    """The agreements (a PI sees their own)."""
    from biobank.services import agreements

    with work(ctx, readonly=True) as (session, actor):
        rows = agreements.list_agreements(session, actor=actor)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["REFERENCE", "PI", "STUDY", "USES", "FROM", "EXPIRES", "REVOKED"],
        [
            [r.reference, r.pi, r.study, ", ".join(r.uses), r.starts_on, r.expires_on,
             f"{r.revoked_at:%Y-%m-%d}" if r.revoked_at else ""]
            for r in rows
        ],
    )  # fmt: skip
