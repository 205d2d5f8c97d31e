"""Withdrawing consent, and what a withdrawal touches.

A withdrawal flags the participant's specimens (never deletes them), each flag a custody event;
`destroy` and `return` also put them on the pull list (`biobank.services.pulls`). What it
would touch (specimens, those already sent out, exports that included them) is shown before it
is confirmed.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.lifecycle import IN_STORAGE
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import ParticipantStatus, SpecimenStatus, WithdrawalDisposition
from biobank.errors import ValidationError, parse_choice
from biobank.models import (
    ConsentAnswer,
    ConsentStatement,
    ConsentWithdrawal,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    ParticipantConsent,
    Specimen,
)
from biobank.services import audit
from biobank.services.consent import WithdrawalRead, get_statement_row, withdrawal_read
from biobank.services.events import record_event
from biobank.services.participants import get_participant_row
from biobank.services.specimen_read import SpecimenRead, specimens_where

# Gone from the inventory: nothing left to flag.
_GONE = (SpecimenStatus.disposed,)
# Dispositions that take the tubes out of the freezer.
PULLED_DISPOSITIONS = (WithdrawalDisposition.destroy, WithdrawalDisposition.return_to_participant)


class ImpactSpecimen(BaseModel):
    accession_id: str
    parent_accession_id: str | None
    depth: int
    kind: str
    specimen_type: str
    quantity: float
    unit: str
    status: str
    location: str | None


class ImpactExport(BaseModel):
    run_code: str
    created_at: datetime
    mode: str
    specimens: int


class ImpactReport(BaseModel):
    """What a withdrawal touches: every specimen (with its descendants), those already sent
    out, and every export that included any of them."""

    participant_code: str
    statement: str | None
    specimens: list[ImpactSpecimen]
    distributed: list[str]
    in_storage: int
    exports: list[ImpactExport]


def withdrawal_impact(
    session: Session, *, actor: Actor, participant: str, statement: str | None = None
) -> ImpactReport:
    """What withdrawing (all, or one statement) would touch; read before confirming."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    code = get_statement_row(session, statement).code if statement else None
    return _impact(session, person, code)


def _impact(session: Session, person: Participant, statement: str | None) -> ImpactReport:
    table = Specimen.__table__
    specimens = specimens_where(session, table.c.participant_id == person.id)
    children: dict[str | None, list[SpecimenRead]] = defaultdict(list)
    ids = {s.accession_id for s in specimens}
    for s in specimens:
        parent = s.parent_accession_id if s.parent_accession_id in ids else None
        children[parent].append(s)
    ordered: list[ImpactSpecimen] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            ordered.append(
                ImpactSpecimen(
                    accession_id=s.accession_id,
                    parent_accession_id=s.parent_accession_id,
                    depth=depth,
                    kind=s.kind,
                    specimen_type=s.specimen_type,
                    quantity=s.quantity,
                    unit=s.unit,
                    status=s.status,
                    location=s.location,
                )
            )
            walk(s.accession_id, depth + 1)

    walk(None, 0)
    exports = session.execute(
        sa.select(
            col(ExportRun.run_code),
            col(ExportRun.created_at),
            col(ExportRun.mode),
            sa.func.count(col(ExportRunSpecimen.specimen_id)),
        )
        .join(ExportRunSpecimen, col(ExportRunSpecimen.export_run_id) == ExportRun.id)
        .join(Specimen, col(Specimen.id) == ExportRunSpecimen.specimen_id)
        .where(col(Specimen.participant_id) == person.id)
        .group_by(
            col(ExportRun.id),
            col(ExportRun.run_code),
            col(ExportRun.created_at),
            col(ExportRun.mode),
        )
        .order_by(col(ExportRun.created_at))
    ).all()
    return ImpactReport(
        participant_code=person.code,
        statement=statement,
        specimens=ordered,
        distributed=[s.accession_id for s in specimens if s.status == "distributed"],
        in_storage=sum(1 for s in specimens if s.status in IN_STORAGE),
        exports=[
            ImpactExport(run_code=run, created_at=at, mode=mode.value, specimens=count)
            for run, at, mode, count in exports
        ],
    )


def review_withdrawal(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    withdrawn_on: date,
    requested_by: str,
    disposition: WithdrawalDisposition | str,
    statement: str | None = None,
    reason: str | None = None,
) -> ImpactReport:
    """What `withdraw` with these details would touch, shown before it is confirmed; refused
    now for whatever `withdraw` would refuse, so nobody confirms a withdrawal that fails.
    (`reason` is taken, and not needed, so that one form's details serve both.)"""
    person, _, statement_row = _checked_withdrawal(
        session, actor=actor, participant=participant, withdrawn_on=withdrawn_on,
        requested_by=requested_by, disposition=disposition, statement=statement,
    )  # fmt: skip
    return _impact(session, person, statement_row.code if statement_row else None)


def _checked_withdrawal(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    withdrawn_on: date,
    requested_by: str,
    disposition: WithdrawalDisposition | str,
    statement: str | None,
) -> tuple[Participant, WithdrawalDisposition, ConsentStatement | None]:
    """Everything a withdrawal is refused for, before anything is written."""
    require(actor, Permission.manage_consent)
    person = get_participant_row(session, participant)
    disposition = parse_choice(WithdrawalDisposition, disposition, field="disposition")
    statement_row = get_statement_row(session, statement) if statement else None
    if statement_row is not None and disposition in PULLED_DISPOSITIONS:
        raise ValidationError(
            f"{disposition.value} applies to a withdrawal of everything; a withdrawal of "
            f"{statement_row.code} alone keeps the specimens (keep_no_use)",
            field="disposition",
            value=disposition.value,
        )
    if withdrawn_on > date.today():
        raise ValidationError(
            "the withdrawal date is in the future", field="withdrawn_on", value=withdrawn_on
        )
    if not requested_by or not requested_by.strip():
        raise ValidationError("say who requested the withdrawal", field="requested_by")
    _check_not_superseded(session, person, statement_row, withdrawn_on)
    return person, disposition, statement_row


def withdraw(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    withdrawn_on: date,
    requested_by: str,
    disposition: WithdrawalDisposition | str,
    statement: str | None = None,
    reason: str | None = None,
) -> tuple[WithdrawalRead, ImpactReport]:
    """Record a withdrawal and flag the participant's specimens (each flag a custody event).

    `destroy` and `return` take tubes out of the freezer, so they withdraw everything: a
    tube still consented for other uses is not destroyed for one statement.
    """
    person, disposition, statement_row = _checked_withdrawal(
        session, actor=actor, participant=participant, withdrawn_on=withdrawn_on,
        requested_by=requested_by, disposition=disposition, statement=statement,
    )  # fmt: skip
    assert person.id is not None
    row = ConsentWithdrawal(
        participant_id=person.id,
        statement_id=statement_row.id if statement_row else None,
        withdrawn_on=withdrawn_on,
        requested_by=requested_by.strip()[:200],
        disposition=disposition,
        reason=reason.strip() if reason and reason.strip() else None,
        recorded_by_id=actor.user_id,
    )
    session.add(row)
    flush(session)
    code = statement_row.code if statement_row else None
    audit.record(
        session,
        actor=actor,
        action="consent.withdraw",
        entity="consent_withdrawal",
        entity_id=row.id,
        after={"participant": person.code, "statement": code} | audit.snapshot(row),
        reason=row.reason,
    )
    flagged = _flag_specimens(session, actor=actor, person=person, withdrawal=row, statement=code)
    if statement_row is None and person.status != ParticipantStatus.withdrawn:
        with audit.audited(session, person, actor=actor, action="participant.status",
                           entity="participant"):  # fmt: skip
            person.status = ParticipantStatus.withdrawn
    return withdrawal_read(row, person.code, code, flagged), _impact(session, person, code)


def _check_not_superseded(
    session: Session,
    person: Participant,
    statement: ConsentStatement | None,
    withdrawn_on: date,
) -> None:
    """A withdrawal dated before a signature that answers what it withdraws would never be in
    force (the later signature decides), so it is refused rather than recorded as a flag
    that contradicts the rule."""
    query = (
        select(sa.func.max(ParticipantConsent.signed_on))
        .join(ConsentAnswer, col(ConsentAnswer.participant_consent_id) == ParticipantConsent.id)
        .where(ParticipantConsent.participant_id == person.id)
    )
    if statement is not None:
        query = query.where(ConsentAnswer.statement_id == statement.id)
    latest = session.exec(query).one()
    if latest is not None and latest > withdrawn_on:
        raise ValidationError(
            f"{person.code} signed again on {latest}, after {withdrawn_on}; a withdrawal dated "
            f"before that signature is not in force: date it on or after {latest}",
            field="withdrawn_on",
            value=withdrawn_on,
        )


def _flag_specimens(
    session: Session,
    *,
    actor: Actor,
    person: Participant,
    withdrawal: ConsentWithdrawal,
    statement: str | None,
) -> int:
    """Mark every specimen still held or sent out. A withdrawal of everything takes over every
    earlier flag (its disposition is the one that stands); one of a single statement only
    marks what is not marked yet."""
    query = select(Specimen).where(
        Specimen.participant_id == person.id, col(Specimen.status).not_in(_GONE)
    )
    if statement is not None:
        query = query.where(col(Specimen.consent_withdrawal_id).is_(None))
    flagged = 0
    for specimen in session.exec(query.order_by(col(Specimen.id))).all():
        with audit.audited(session, specimen, actor=actor, action="specimen.consent_withdrawn",
                           entity="specimen", reason=withdrawal.reason):  # fmt: skip
            specimen.consent_withdrawal_id = withdrawal.id
            record_event(
                session,
                actor=actor,
                specimen=specimen,
                event_type="consent_withdrawn",
                status_before=specimen.status.value,
                reason=withdrawal.reason,
                details={
                    "statement": statement or "ALL",
                    "disposition": withdrawal.disposition.value,
                    "withdrawn_on": withdrawal.withdrawn_on.isoformat(),
                },
            )
        flagged += 1
    return flagged
