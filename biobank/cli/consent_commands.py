"""`biobank consent …`: statements, documents, signatures, status, withdrawal and the pull list."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_table,
    message,
    parse_date,
    work,
)
from biobank.domain.vocabulary import WithdrawalDisposition
from biobank.errors import ConsentDenied, ValidationError
from biobank.terminal_text import shown

if TYPE_CHECKING:
    from biobank.services.withdrawals import ImpactReport

app = typer.Typer(help="Consent: statements, signed documents, withdrawals and the pull list.")
statement_app = typer.Typer(help="The statements consent documents ask (FUTURE_RESEARCH, …).")
document_app = typer.Typer(help="Versioned consent documents.")
app.add_typer(statement_app, name="statement")
app.add_typer(document_app, name="document")

AsOf = typer.Option(None, "--as-of", help="YYYY-MM-DD (default: today).")


@app.command("statements")
def statements(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the consent statements."""
    from biobank.services import consent

    with work(ctx, readonly=True) as (session, actor):
        rows = consent.list_statements(session, actor=actor)
    if json:
        emit_json(rows)
    else:
        emit_table(["code", "text"], [(s.code, s.text) for s in rows])


@statement_app.command("add")
def statement_add(ctx: typer.Context, code: str, text: str, json: JsonOption = False) -> None:
    """Add a consent statement."""
    from biobank.services import consent

    with work(ctx) as (session, actor):
        added = consent.add_statement(session, actor=actor, code=code, text=text)
    if json:
        emit_json(added)
    else:
        message(f"added consent statement {added.code}")


@app.command("documents")
def documents(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the consent documents and the statements each asks."""
    from biobank.services import consent

    with work(ctx, readonly=True) as (session, actor):
        rows = consent.list_documents(session, actor=actor)
    if json:
        emit_json(rows)
    else:
        emit_table(
            ["code", "version", "effective", "title", "statements"],
            [(d.code, d.version, d.effective_on, d.title, ", ".join(d.statements)) for d in rows],
        )


@document_app.command("add")
def document_add(
    ctx: typer.Context,
    code: str,
    version: str,
    title: str = typer.Option(..., "--title"),
    effective: str = typer.Option(..., "--effective", help="YYYY-MM-DD it took effect."),
    statement: list[str] = typer.Option(
        ..., "--statement", help="A statement it asks (repeatable, in order)."
    ),
    json: JsonOption = False,
) -> None:
    """Add a version of a consent document."""
    from biobank.services import consent

    with work(ctx) as (session, actor):
        added = consent.add_document(
            session,
            actor=actor,
            code=code,
            version=version,
            title=title,
            effective_on=parse_date(effective, "effective"),
            statements=statement,
        )
    if json:
        emit_json(added)
    else:
        message(f"added consent document {added.code} {added.version}")


@app.command()
def sign(
    ctx: typer.Context,
    participant: str,
    document: str = typer.Option(..., "--document"),
    version: str = typer.Option(..., "--version"),
    signed: str = typer.Option(..., "--date", help="YYYY-MM-DD it was signed."),
    yes: list[str] = typer.Option([], "--yes", help="A statement answered yes (repeatable)."),
    no: list[str] = typer.Option([], "--no", help="A statement answered no (repeatable)."),
    json: JsonOption = False,
) -> None:
    """Record a signed consent document: every statement it asks answered --yes or --no."""
    from biobank.services import consent

    both = {s.strip().upper() for s in yes} & {s.strip().upper() for s in no}
    if both:
        raise ValidationError(
            f"{', '.join(sorted(both))} answered both yes and no",
            field="answers",
            value=sorted(both)[0],
        )
    answers = {s: True for s in yes} | {s: False for s in no}
    with work(ctx) as (session, actor):
        read = consent.record_consent(
            session,
            actor=actor,
            participant=participant,
            document=document,
            version=version,
            signed_on=parse_date(signed, "date"),
            answers=answers,
        )
    if json:
        emit_json(read)
    else:
        message(f"recorded {read.document} {read.version} signed on {read.signed_on}")


@app.command()
def status(
    ctx: typer.Context, participant: str, as_of: str | None = AsOf, json: JsonOption = False
) -> None:
    """Each statement's state as of a date, with the signatures and withdrawals behind it."""
    from biobank.services import consent

    with work(ctx, readonly=True) as (session, actor):
        read = consent.consent_status(
            session, actor=actor, participant=participant, as_of=parse_date(as_of, "as-of")
        )
    if json:
        emit_json(read)
        return
    emit_table(
        ["statement", "state", "since"],
        [(s.code, s.state.value.replace("_", " "), s.since) for s in read.statements],
    )
    typer.echo("")
    emit_table(
        ["signed", "document", "version", "answers"],
        [
            (
                s.signed_on,
                s.document,
                s.version,
                ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in s.answers.items()),
            )
            for s in read.signatures
        ],
    )
    if read.withdrawals:
        typer.echo("")
        emit_table(
            ["withdrawn", "statement", "disposition", "requested by", "reason"],
            [
                (w.withdrawn_on, w.statement or "ALL", w.disposition.value, w.requested_by,
                 w.reason)
                for w in read.withdrawals
            ],
        )  # fmt: skip
    if read.withdrawn_entirely:
        message(f"{read.participant_code} has withdrawn consent as of {read.as_of}")


@app.command()
def check(
    ctx: typer.Context,
    participant: str,
    use: list[str] = typer.Option(..., "--use", help="An intended use (repeatable)."),
    as_of: str | None = AsOf,
    json: JsonOption = False,
) -> None:
    """Whether consent allows every use (exit 0), or not (exit 6)."""
    from biobank.services import consent

    day = parse_date(as_of, "as-of")
    with work(ctx, readonly=True) as (session, actor):
        decision = consent.check_uses(
            session, actor=actor, participant=participant, uses=use, as_of=day
        )
    if json:
        emit_json(
            {
                "allowed": decision.allowed,
                "uses": {
                    u: {"state": s.state.value, "since": s.since}
                    for u, s in decision.statuses.items()
                },
            }
        )
    else:
        emit_table(
            ["use", "state", "since"],
            [(u, s.state.value.replace("_", " "), s.since) for u, s in decision.statuses.items()],
        )
    if not decision.allowed:
        raise ConsentDenied(
            f"consent of {participant.upper()} as of {day or 'today'} does not allow it "
            f"({decision.reason()})",
            field="uses",
            value=",".join(decision.denied),
        )


def _impact_lines(report: ImpactReport) -> list[str]:
    """The impact report as a person reads it: the specimen tree, what left, what was exported."""
    scope = report.statement or "everything"
    lines = [
        f"withdrawal of {scope} by {report.participant_code}: {len(report.specimens)} specimens "
        f"({report.in_storage} in storage)"
    ]
    width = max((2 * s.depth + len(s.accession_id) for s in report.specimens), default=0)
    for s in report.specimens:
        tube = ("  " * s.depth + s.accession_id).ljust(width)
        amount = f"{s.specimen_type} {s.quantity:g} {s.unit}"
        lines.append(f"  {tube}  {s.kind:<10}  {amount:<16}  {s.status:<11}  {s.location or ''}")
    if report.distributed:
        lines.append(f"already distributed: {', '.join(report.distributed)}")
    for run in report.exports:
        lines.append(
            f"included in export {run.run_code} ({run.created_at:%Y-%m-%d}, {run.mode}, "
            f"{run.specimens} specimens)"
        )
    return [line.rstrip() for line in lines]


@app.command()
def impact(
    ctx: typer.Context,
    participant: str,
    statement: str | None = typer.Option(None, "--statement", help="Only this statement."),
    json: JsonOption = False,
) -> None:
    """What a withdrawal would touch: specimens and their descendants, distributions, exports."""
    from biobank.services import withdrawals

    with work(ctx, readonly=True) as (session, actor):
        report = withdrawals.withdrawal_impact(
            session, actor=actor, participant=participant, statement=statement
        )
    if json:
        emit_json(report)
        return
    for line in _impact_lines(report):
        typer.echo(shown(line))


def _can_ask() -> bool:
    return sys.stdin.isatty()


@app.command()
def withdraw(
    ctx: typer.Context,
    participant: str,
    statement: str | None = typer.Option(None, "--statement", help="Only this statement."),
    withdrawn: str = typer.Option(..., "--date", help="YYYY-MM-DD of the withdrawal."),
    requested_by: str = typer.Option(..., "--requested-by", help="Who asked for it."),
    disposition: WithdrawalDisposition = typer.Option(
        ..., "--disposition", help="What happens to the specimens."
    ),
    reason: str | None = typer.Option(None, "--reason"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json: JsonOption = False,
) -> None:
    """Record a withdrawal after showing what it touches; specimens are flagged, never deleted."""
    from biobank.services import withdrawals

    withdrawn_on = parse_date(withdrawn, "date")
    details = {
        "participant": participant, "withdrawn_on": withdrawn_on, "requested_by": requested_by,
        "disposition": disposition, "statement": statement, "reason": reason,
    }  # fmt: skip
    with work(ctx, readonly=True) as (session, actor):  # refused before being asked to confirm
        report = withdrawals.review_withdrawal(session, actor=actor, **details)
    for line in _impact_lines(report):
        message(line)
    if not yes:
        if not _can_ask():
            raise ValidationError(
                "a withdrawal is confirmed at a terminal; pass --yes to confirm it here",
                field="yes",
            )
        typer.confirm(f"Record this withdrawal ({disposition.value})?", abort=True)
    with work(ctx) as (session, actor):
        done, _ = withdrawals.withdraw(session, actor=actor, **details)
    if json:
        emit_json(done)
        return
    message(
        f"recorded the withdrawal of {done.statement or 'everything'} by {done.participant_code} "
        f"on {done.withdrawn_on}; {done.flagged} specimens flagged"
    )
    if disposition in withdrawals.PULLED_DISPOSITIONS:
        message(f"the tubes to take out: biobank consent pull-list -p {done.participant_code}")


@app.command("pull-list")
def pull_list(
    ctx: typer.Context,
    participant: str | None = typer.Option(None, "--participant", "-p"),
    json: JsonOption = False,
) -> None:
    """The tubes to take out for destruction or return, in freezer order."""
    from biobank.services import pulls

    with work(ctx, readonly=True) as (session, actor):
        rows = pulls.pull_list(session, actor=actor, participant=participant)
    if json:
        emit_json(rows)
        return
    emit_table(
        ["tube", "participant", "type", "box", "position", "disposition", "withdrawn"],
        [
            (p.accession_id, p.participant_code, p.specimen_type, p.box_barcode, p.position,
             p.disposition.value, p.withdrawn_on)
            for p in rows
        ],
    )  # fmt: skip


@app.command()
def pull(
    ctx: typer.Context,
    specimens: list[str] = typer.Argument(..., help="Accession IDs of the tubes taken out."),
    json: JsonOption = False,
) -> None:
    """Take tubes of the pull list out (all or none): each disposed, its position freed."""
    from biobank.services import pulls

    with work(ctx) as (session, actor):
        pulled = [pulls.pull(session, actor=actor, accession=s) for s in specimens]
    if json:
        emit_json(pulled)
        return
    for read in pulled:
        typer.echo(read.accession_id)
    message(f"pulled {len(pulled)} tubes")
