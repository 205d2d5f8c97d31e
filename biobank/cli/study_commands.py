"""`biobank study …`, `biobank participant …` and `biobank visit …`."""

from __future__ import annotations

import typer

from biobank.cli.common import (
    JsonOption,
    emit_json,
    emit_record,
    emit_table,
    message,
    parse_date,
    work,
)
from biobank.domain.vocabulary import Sex

study_app = typer.Typer(help="Studies (protocols) and their specimen ID prefixes.")
participant_app = typer.Typer(help="Pseudonymous participants; PHI only for admins.")
visit_app = typer.Typer(help="Participant visits (baseline, month 6, flare…).")


@study_app.command("add")
def study_add(
    ctx: typer.Context,
    code: str,
    title: str = typer.Option(..., "--title", help="Full title of the study."),
    prefix: str | None = typer.Option(None, "--prefix", help="Specimen ID prefix."),
    json: JsonOption = False,
) -> None:
    """Add a study."""
    from biobank.services import studies

    with work(ctx) as (session, actor):
        study = studies.add_study(session, actor=actor, code=code, title=title, id_prefix=prefix)
    if json:
        emit_json(study)
    else:
        message(f"added study {study.code} (specimen prefix {study.id_prefix})")


@study_app.command("list")
def study_list(ctx: typer.Context, json: JsonOption = False) -> None:
    """List studies."""
    from biobank.services import studies

    with work(ctx, readonly=True) as (session, actor):
        rows = studies.list_studies(session, actor=actor)
    if json:
        emit_json(rows)
    else:
        emit_table(["code", "prefix", "title"], [(s.code, s.id_prefix, s.title) for s in rows])


@participant_app.command("add")
def participant_add(
    ctx: typer.Context,
    study: str = typer.Option(..., "--study", help="Study code."),
    code: str | None = typer.Option(None, "--code", help="Pseudonymous code (default: random)."),
    sex: Sex = typer.Option(Sex.unknown, "--sex"),
    birth_year: int | None = typer.Option(None, "--birth-year"),
    enrolled: str | None = typer.Option(None, "--enrolled", help="Enrolment date, YYYY-MM-DD."),
    mrn: str | None = typer.Option(None, "--mrn", help="PHI (admins only)."),
    family_name: str | None = typer.Option(None, "--family-name", help="PHI (admins only)."),
    given_name: str | None = typer.Option(None, "--given-name", help="PHI (admins only)."),
    dob: str | None = typer.Option(None, "--dob", help="Date of birth, PHI (admins only)."),
    json: JsonOption = False,
) -> None:
    """Register a participant."""
    from biobank.services import participants

    with work(ctx) as (session, actor):
        participant = participants.add_participant(
            session,
            actor=actor,
            study=study,
            code=code,
            sex=sex,
            birth_year=birth_year,
            enrolled_on=parse_date(enrolled, "enrolled"),
            mrn=mrn,
            family_name=family_name,
            given_name=given_name,
            date_of_birth=parse_date(dob, "dob"),
        )
    if json:
        emit_json(participant)
    else:
        typer.echo(participant.code)


@participant_app.command("show")
def participant_show(
    ctx: typer.Context,
    code: str | None = typer.Argument(None, help="Participant code (or --study and --record)."),
    study: str | None = typer.Option(None, "--study", help="Study of the --record ID."),
    record: str | None = typer.Option(None, "--record", help="REDCap record ID, as written."),
    identity: bool = typer.Option(False, "--identity", help="Include PHI (admins only)."),
    json: JsonOption = False,
) -> None:
    """Show a participant, their visits and their IDs in other systems (REDCap records)."""
    from biobank.services import participants

    with work(ctx, readonly=True) as (session, actor):
        p = participants.show_participant(
            session, actor=actor, code=code, study=study, record=record, with_identity=identity
        )
    if json:
        emit_json(p)
        return
    pairs = [
        ("code", p.code),
        ("study", p.study_code),
        ("sex", p.sex.value),
        ("birth year", p.birth_year),
        ("enrolled", p.enrolled_on),
        ("status", p.status.value),
    ]
    if p.identity is not None:
        pairs += [
            ("MRN", p.identity.mrn),
            ("name", f"{p.identity.given_name or ''} {p.identity.family_name or ''}".strip()),
            ("date of birth", p.identity.date_of_birth),
        ]
    pairs += [(_system_name(x.system, x.namespace), x.value) for x in p.external_ids]
    pairs += [(f"visit {v.label}", v.visit_date) for v in p.visits]
    emit_record(pairs)


def _system_name(system: str, namespace: str) -> str:
    """How `participant show` names an external ID: "REDCap record", with its project if any."""
    name = "REDCap record" if system == "redcap" else f"{system} ID"
    return f"{name} ({namespace})" if namespace else name


@participant_app.command("list")
def participant_list(
    ctx: typer.Context,
    study: str | None = typer.Option(None, "--study"),
    status: str | None = typer.Option(None, "--status"),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    offset: int = typer.Option(0, "--offset", min=0),
    json: JsonOption = False,
) -> None:
    """List participants, a page at a time."""
    from biobank.services import participants

    with work(ctx, readonly=True) as (session, actor):
        rows = participants.list_participants(
            session, actor=actor, study=study, status=status, limit=limit, offset=offset
        )
    if json:
        emit_json(rows)
        return
    emit_table(
        ["code", "study", "sex", "birth year", "enrolled", "status"],
        [
            (p.code, p.study_code, p.sex.value, p.birth_year, p.enrolled_on, p.status.value)
            for p in rows
        ],
    )


@visit_app.command("add")
def visit_add(
    ctx: typer.Context,
    participant: str,
    label: str,
    visit_date: str = typer.Option(..., "--date", help="Visit date, YYYY-MM-DD."),
    json: JsonOption = False,
) -> None:
    """Add a visit to a participant."""
    from biobank.services import participants

    with work(ctx) as (session, actor):
        visit = participants.add_visit(
            session,
            actor=actor,
            participant=participant,
            label=label,
            visit_date=parse_date(visit_date, "date"),
        )
    if json:
        emit_json(visit)
    else:
        message(f"added visit {visit.label} for {visit.participant_code}")


@visit_app.command("merge")
def visit_merge(
    ctx: typer.Context,
    participant: str,
    keep: str = typer.Argument(..., help="The visit kept."),
    merge: str = typer.Argument(..., help="The visit merged into it, then deleted."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit trail)."),
    json: JsonOption = False,
) -> None:
    """Make two visits of a participant one (admins only)."""
    from biobank.services import participants

    with work(ctx) as (session, actor):
        merged = participants.merge_visits(
            session, actor=actor, participant=participant, keep=keep, merge=merge, reason=reason
        )
    if json:
        emit_json(merged)
    else:
        message(
            f"merged visit {merged.merged.label} into {merged.kept.label} of "
            f"{merged.kept.participant_code}: {merged.specimens} specimens, "
            f"{merged.phenotype_values} phenotype values ({merged.dropped_values} equal dropped), "
            f"{merged.reserved_accessions} kit accessions moved"
        )
