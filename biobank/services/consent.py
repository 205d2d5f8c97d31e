"""Consent: statements, versioned documents, signed answers and withdrawals.

Whether a use is allowed is decided by `biobank.domain.consent` from these rows as of a date; every
capability that uses specimens or data (exports, distribution, accession, the workstation's
consent badge) asks `consent_decisions`, `require_consent` or `refuse_if_withdrawn` here.
A withdrawal flags the participant's specimens (never deletes them); `destroy` and `return`
put them on a pull list that technicians work through, each removal a custody event.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.db import flush
from biobank.domain.consent import Decision, StatementState, statement_status, withdrawn_entirely
from biobank.domain.lifecycle import IN_STORAGE
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AlreadyExists, NotFound, ValidationError, parse_choice
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentDocumentStatement,
    ConsentStatement,
    ConsentWithdrawal,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    ParticipantConsent,
    ParticipantStatus,
    Specimen,
    SpecimenStatus,
    StorageUnit,
    User,
    WithdrawalDisposition,
)
from biobank.services import audit
from biobank.services.consent_checks import consent_acts, consent_decisions
from biobank.services.custody import dispose
from biobank.services.events import record_event
from biobank.services.participants import get_participant_row
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimens_where

STATEMENT_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
# Gone from the inventory: nothing left to flag or pull.
_GONE = (SpecimenStatus.disposed,)
_PULLED = (SpecimenStatus.disposed, SpecimenStatus.distributed)
# Dispositions that take the tubes out of the freezer.
PULLED_DISPOSITIONS = (WithdrawalDisposition.destroy, WithdrawalDisposition.return_to_participant)


class StatementRead(BaseModel):
    code: str
    text: str


class DocumentRead(BaseModel):
    code: str
    version: str
    title: str
    effective_on: date
    statements: list[str]


class SignatureRead(BaseModel):
    document: str
    version: str
    signed_on: date
    answers: dict[str, bool]
    recorded_by: str | None


class WithdrawalRead(BaseModel):
    id: int
    participant_code: str
    statement: str | None
    withdrawn_on: date
    requested_by: str
    disposition: WithdrawalDisposition
    reason: str | None
    flagged: int = 0


class StatementStatusRead(BaseModel):
    code: str
    text: str
    state: StatementState
    since: date | None

    @property
    def allowed(self) -> bool:
        return self.state is StatementState.granted


class ConsentStatusRead(BaseModel):
    participant_code: str
    as_of: date
    withdrawn_entirely: bool
    full_withdrawal: WithdrawalRead | None = None  # the one in force, when withdrawn entirely
    statements: list[StatementStatusRead]
    signatures: list[SignatureRead]
    withdrawals: list[WithdrawalRead]


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


class PullItem(BaseModel):
    accession_id: str
    participant_code: str
    specimen_type: str
    status: str
    box_barcode: str | None
    position: str | None
    location: str | None
    disposition: WithdrawalDisposition
    withdrawn_on: date


# --- Statements and documents --------------------------------------------------------------


def _statement(session: Session, code: str, *, field: str = "statement") -> ConsentStatement:
    row = session.exec(
        select(ConsentStatement).where(ConsentStatement.code == code.strip().upper())
    ).first()
    if row is None:
        known = ", ".join(session.exec(select(ConsentStatement.code)).all()) or "none"
        raise NotFound(f"no consent statement {code!r} (known: {known})", field=field, value=code)
    return row


def add_statement(session: Session, *, actor: Actor, code: str, text: str) -> StatementRead:
    """A new consent statement (what a document may ask, such as `GENETIC`); its code is
    what uses, exports and withdrawals name."""
    require(actor, Permission.manage_consent)
    code = code.strip().upper()
    if not STATEMENT_CODE.match(code):
        raise ValidationError(
            "a statement code is 2-64 of A-Z, 0-9 and '_', starting with a letter",
            field="code",
            value=code,
        )
    if not text.strip():
        raise ValidationError("a statement needs its text", field="text", value=text)
    if session.exec(select(ConsentStatement.id).where(ConsentStatement.code == code)).first():
        raise AlreadyExists(f"consent statement {code} exists", field="code", value=code)
    row = ConsentStatement(code=code, text=text.strip())
    session.add(row)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="consent_statement.add",
        entity="consent_statement",
        entity_id=row.id,
        after=audit.snapshot(row),
    )
    return StatementRead(code=row.code, text=row.text)


def list_statements(session: Session, *, actor: Actor) -> list[StatementRead]:
    """Every consent statement, in the order added: the uses a check or an export may name."""
    require(actor, Permission.view_inventory)
    rows = session.exec(select(ConsentStatement).order_by(ConsentStatement.id)).all()
    return [StatementRead(code=r.code, text=r.text) for r in rows]


def document_version(text: str) -> str:
    """Versions are compared as written, but "v2.1" and "2.1" name one version."""
    text = text.strip()
    return text[1:] if len(text) > 1 and text[0] in "vV" and text[1].isdigit() else text


def _document(session: Session, code: str, version: str) -> ConsentDocument:
    row = session.exec(
        select(ConsentDocument).where(
            ConsentDocument.code == code.strip().upper(),
            ConsentDocument.version == document_version(version),
        )
    ).first()
    if row is None:
        raise NotFound(
            f"no consent document {code} version {version}", field="document", value=code
        )
    return row


def _document_statements(session: Session, document_id: int) -> list[str]:
    return list(
        session.exec(
            select(ConsentStatement.code)
            .join(
                ConsentDocumentStatement,
                ConsentDocumentStatement.statement_id == ConsentStatement.id,
            )
            .where(ConsentDocumentStatement.document_id == document_id)
            .order_by(ConsentDocumentStatement.position)
        ).all()
    )


def _document_read(session: Session, row: ConsentDocument) -> DocumentRead:
    return DocumentRead(
        code=row.code,
        version=row.version,
        title=row.title,
        effective_on=row.effective_on,
        statements=_document_statements(session, row.id),
    )


def add_document(
    session: Session,
    *,
    actor: Actor,
    code: str,
    version: str,
    title: str,
    effective_on: date,
    statements: Iterable[str],
) -> DocumentRead:
    """A version of a consent form and the statements it asks, in order."""
    require(actor, Permission.manage_consent)
    code, version = code.strip().upper(), document_version(version)
    if not STATEMENT_CODE.match(code.replace("-", "_")):
        raise ValidationError(
            "a document code is 2-64 of A-Z, 0-9, '_' and '-'", field="code", value=code
        )
    if not version or len(version) > 32:
        raise ValidationError("a version is 1-32 characters", field="version", value=version)
    asked = [_statement(session, s, field="statements") for s in statements]
    if not asked:
        raise ValidationError("a consent document asks at least one statement", field="statements")
    if len({s.id for s in asked}) != len(asked):
        raise ValidationError("a statement is listed twice", field="statements")
    exists = select(ConsentDocument.id).where(
        ConsentDocument.code == code, ConsentDocument.version == version
    )
    if session.exec(exists).first():
        raise AlreadyExists(
            f"consent document {code} version {version} exists", field="version", value=version
        )
    row = ConsentDocument(
        code=code, version=version, title=title.strip() or code, effective_on=effective_on
    )
    session.add(row)
    flush(session)
    for position, statement in enumerate(asked):
        session.add(
            ConsentDocumentStatement(
                document_id=row.id, statement_id=statement.id, position=position
            )
        )
    read = _document_read(session, row)
    audit.record(
        session,
        actor=actor,
        action="consent_document.add",
        entity="consent_document",
        entity_id=row.id,
        after=read.model_dump(mode="json"),
    )
    return read


def list_documents(session: Session, *, actor: Actor) -> list[DocumentRead]:
    """Every consent document and version with the statements it asks, to choose the one
    a participant signed."""
    require(actor, Permission.view_inventory)
    rows = session.exec(
        select(ConsentDocument).order_by(ConsentDocument.code, ConsentDocument.effective_on)
    ).all()
    return [_document_read(session, r) for r in rows]


# --- Signatures -------------------------------------------------------------------------------


def record_consent(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    document: str,
    version: str,
    signed_on: date,
    answers: Mapping[str, bool],
) -> SignatureRead:
    """A signed document with an answer to each statement it asks (no more, no fewer)."""
    require(actor, Permission.manage_consent)
    person = get_participant_row(session, participant)
    form = _document(session, document, version)
    if signed_on > date.today():
        raise ValidationError(
            "the signature date is in the future", field="signed_on", value=signed_on
        )
    if signed_on < form.effective_on:
        raise ValidationError(
            f"{form.code} {form.version} took effect on {form.effective_on}; "
            f"it cannot have been signed on {signed_on}",
            field="signed_on",
            value=signed_on,
        )
    if person.birth_year is not None and signed_on.year < person.birth_year:
        raise ValidationError(
            "the signature date is before birth", field="signed_on", value=signed_on
        )
    asked = _document_statements(session, form.id)
    given = {code.strip().upper(): bool(answer) for code, answer in answers.items()}
    missing = [s for s in asked if s not in given]
    extra = [s for s in given if s not in asked]
    if missing:
        raise ValidationError(
            f"no answer for {', '.join(missing)} ({form.code} {form.version} asks it)",
            field="answers",
            value=missing[0],
        )
    if extra:
        raise ValidationError(
            f"{form.code} {form.version} does not ask {', '.join(extra)}",
            field="answers",
            value=extra[0],
        )
    signature = ParticipantConsent(
        participant_id=person.id, document_id=form.id, signed_on=signed_on,
        recorded_by_id=actor.user_id,
    )  # fmt: skip
    session.add(signature)
    flush(session)
    ids = dict(
        session.exec(
            select(ConsentStatement.code, ConsentStatement.id).where(
                ConsentStatement.code.in_(asked)
            )
        ).all()
    )
    for code in asked:
        session.add(
            ConsentAnswer(
                participant_consent_id=signature.id, statement_id=ids[code], answer=given[code]
            )
        )
    read = SignatureRead(
        document=form.code,
        version=form.version,
        signed_on=signed_on,
        answers={code: given[code] for code in asked},
        recorded_by=actor.username,
    )
    audit.record(
        session,
        actor=actor,
        action="consent.sign",
        entity="participant_consent",
        entity_id=signature.id,
        after={"participant": person.code} | read.model_dump(mode="json"),
    )
    _reconsider(session, actor=actor, person=person)
    return read


def _reconsider(session: Session, *, actor: Actor, person: Participant) -> None:
    """After a signature, as of today: a participant no longer withdrawn entirely is active
    again, and specimen flags whose withdrawal the signature lifted are cleared (each an
    event and an audit entry), which takes those tubes off the pull list."""
    today = date.today()
    answers, withdrawals = consent_acts(session, [person.id])
    mine, gone = answers[person.id], withdrawals[person.id]
    full = withdrawn_entirely(mine, gone, today)
    if person.status == ParticipantStatus.withdrawn and full is None:
        _set_status(session, actor=actor, person=person, status=ParticipantStatus.active)
    rows = session.execute(
        sa.select(Specimen, ConsentStatement.code)
        .join(ConsentWithdrawal, ConsentWithdrawal.id == Specimen.consent_withdrawal_id)
        .outerjoin(ConsentStatement, ConsentStatement.id == ConsentWithdrawal.statement_id)
        .where(Specimen.participant_id == person.id)
        .order_by(Specimen.id)
    ).all()
    for specimen, statement in rows:
        if statement is None:
            lifted = full is None
        else:
            lifted = statement_status(statement, mine, gone, today).state is not (
                StatementState.withdrawn
            )
        if not lifted:
            continue
        with audit.audited(session, specimen, actor=actor, action="specimen.consent_renewed",
                           entity="specimen"):  # fmt: skip
            specimen.consent_withdrawal_id = None
            record_event(
                session,
                actor=actor,
                specimen=specimen,
                event_type="consent_renewed",
                status_before=specimen.status.value,
                details={"statement": statement or "ALL"},
            )


def _set_status(
    session: Session, *, actor: Actor, person: Participant, status: ParticipantStatus
) -> None:
    with audit.audited(session, person, actor=actor, action="participant.status",
                       entity="participant"):  # fmt: skip
        person.status = status


# --- Status ---------------------------------------------------------------------------------


def check_uses(
    session: Session, *, actor: Actor, participant: str, uses: Iterable[str], as_of: date | None
) -> Decision:
    """A participant's consent for every use on `as_of` (today if None), with each
    statement's state: the question before using a tube or sharing data."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    as_of = as_of or date.today()
    return consent_decisions(session, participant_ids=[person.id], uses=uses, as_of=as_of)[
        person.id
    ]


def consent_status(
    session: Session, *, actor: Actor, participant: str, as_of: date | None = None
) -> ConsentStatusRead:
    """Each statement's state as of a date, with the signatures and withdrawals behind it."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    as_of = as_of or date.today()
    answers, withdrawals = consent_acts(session, [person.id])
    mine, gone = answers[person.id], withdrawals[person.id]
    statements = session.exec(select(ConsentStatement).order_by(ConsentStatement.id)).all()
    full = withdrawn_entirely(mine, gone, as_of)
    reads = _withdrawal_reads(session, person)
    return ConsentStatusRead(
        participant_code=person.code,
        as_of=as_of,
        withdrawn_entirely=full is not None,
        full_withdrawal=next((w for w in reads if full and w.id == full.order), None),
        statements=[
            StatementStatusRead(code=s.code, text=s.text, state=status.state, since=status.since)
            for s in statements
            for status in [statement_status(s.code, mine, gone, as_of)]
        ],
        signatures=_signatures(session, person.id),
        withdrawals=reads,
    )


def _signatures(session: Session, participant_id: int) -> list[SignatureRead]:
    rows = session.execute(
        sa.select(
            ParticipantConsent.id,
            ConsentDocument.code,
            ConsentDocument.version,
            ParticipantConsent.signed_on,
            User.username,
        )
        .join(ConsentDocument, ConsentDocument.id == ParticipantConsent.document_id)
        .outerjoin(User, User.id == ParticipantConsent.recorded_by_id)
        .where(ParticipantConsent.participant_id == participant_id)
        .order_by(ParticipantConsent.signed_on, ParticipantConsent.id)
    ).all()
    answers: dict[int, dict[str, bool]] = defaultdict(dict)
    for consent_id, code, answer in session.execute(
        sa.select(ConsentAnswer.participant_consent_id, ConsentStatement.code, ConsentAnswer.answer)
        .join(ConsentStatement, ConsentStatement.id == ConsentAnswer.statement_id)
        .where(ConsentAnswer.participant_consent_id.in_([r[0] for r in rows]))
        .order_by(ConsentAnswer.id)
    ):
        answers[consent_id][code] = answer
    return [
        SignatureRead(
            document=code, version=version, signed_on=signed_on, answers=answers[cid],
            recorded_by=username,
        )
        for cid, code, version, signed_on, username in rows
    ]  # fmt: skip


def _withdrawal_read(
    row: ConsentWithdrawal, participant_code: str, statement: str | None, flagged: int = 0
) -> WithdrawalRead:
    return WithdrawalRead(
        id=row.id,
        participant_code=participant_code,
        statement=statement,
        withdrawn_on=row.withdrawn_on,
        requested_by=row.requested_by,
        disposition=row.disposition,
        reason=row.reason,
        flagged=flagged,
    )


def _withdrawal_reads(session: Session, person: Participant) -> list[WithdrawalRead]:
    rows = session.execute(
        sa.select(ConsentWithdrawal, ConsentStatement.code)
        .outerjoin(ConsentStatement, ConsentStatement.id == ConsentWithdrawal.statement_id)
        .where(ConsentWithdrawal.participant_id == person.id)
        .order_by(ConsentWithdrawal.withdrawn_on, ConsentWithdrawal.id)
    ).all()
    flagged = dict(
        session.execute(
            sa.select(Specimen.consent_withdrawal_id, sa.func.count())
            .where(Specimen.participant_id == person.id)
            .group_by(Specimen.consent_withdrawal_id)
        ).all()
    )
    return [_withdrawal_read(row, person.code, code, flagged.get(row.id, 0)) for row, code in rows]


# --- Withdrawal, its impact and the pull list ---------------------------------------------------


def withdrawal_impact(
    session: Session, *, actor: Actor, participant: str, statement: str | None = None
) -> ImpactReport:
    """What withdrawing (all, or one statement) would touch; read before confirming."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    code = _statement(session, statement).code if statement else None
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
            ExportRun.run_code,
            ExportRun.created_at,
            ExportRun.mode,
            sa.func.count(ExportRunSpecimen.specimen_id),
        )
        .join(ExportRunSpecimen, ExportRunSpecimen.export_run_id == ExportRun.id)
        .join(Specimen, Specimen.id == ExportRunSpecimen.specimen_id)
        .where(Specimen.participant_id == person.id)
        .group_by(ExportRun.id, ExportRun.run_code, ExportRun.created_at, ExportRun.mode)
        .order_by(ExportRun.created_at)
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
    statement_row = _statement(session, statement) if statement else None
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
        _set_status(session, actor=actor, person=person, status=ParticipantStatus.withdrawn)
    return _withdrawal_read(row, person.code, code, flagged), _impact(session, person, code)


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
        .join(ConsentAnswer, ConsentAnswer.participant_consent_id == ParticipantConsent.id)
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
        Specimen.participant_id == person.id, Specimen.status.not_in(_GONE)
    )
    if statement is not None:
        query = query.where(Specimen.consent_withdrawal_id.is_(None))
    flagged = 0
    for specimen in session.exec(query.order_by(Specimen.id)).all():
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


def _pull_query() -> sa.Select:
    return (
        sa.select(Specimen.id, ConsentWithdrawal.disposition, ConsentWithdrawal.withdrawn_on)
        .join(ConsentWithdrawal, ConsentWithdrawal.id == Specimen.consent_withdrawal_id)
        .where(
            ConsentWithdrawal.disposition.in_(PULLED_DISPOSITIONS),
            Specimen.status.not_in(_PULLED),
        )
    )


def pull_list(session: Session, *, actor: Actor, participant: str | None = None) -> list[PullItem]:
    """The tubes to take out for destruction or return, in freezer order (box, position)."""
    require(actor, Permission.view_inventory)
    query = (
        _pull_query()
        .outerjoin(StorageUnit, StorageUnit.id == Specimen.box_id)
        .order_by(
            StorageUnit.sort_key.is_(None),
            StorageUnit.sort_key,
            Specimen.position_row,
            Specimen.position_col,
            Specimen.accession_id,
        )
    )
    if participant is not None:
        query = query.where(Specimen.participant_id == get_participant_row(session, participant).id)
    found = {pid: (disp, on) for pid, disp, on in session.execute(query)}
    if not found:
        return []
    order = {pid: rank for rank, pid in enumerate(found)}
    reads = specimens_where(session, Specimen.__table__.c.id.in_(list(found)))
    reads.sort(key=lambda s: order[s.id])
    return [_pull_item(s, *found[s.id]) for s in reads]


def pull_item(session: Session, *, actor: Actor, specimen_id: int) -> PullItem | None:
    """The tube's line on the pull list, or None when it is not on it."""
    require(actor, Permission.view_inventory)
    found = session.execute(_pull_query().where(Specimen.id == specimen_id)).first()
    if found is None:
        return None
    (read,) = specimens_where(session, Specimen.__table__.c.id == specimen_id)
    return _pull_item(read, found[1], found[2])


def _pull_item(s: SpecimenRead, disposition: WithdrawalDisposition, on: date) -> PullItem:
    return PullItem(
        accession_id=s.accession_id, participant_code=s.participant_code,
        specimen_type=s.specimen_type, status=s.status, box_barcode=s.box_barcode,
        position=s.position, location=s.location, disposition=disposition, withdrawn_on=on,
    )  # fmt: skip


def pull(session: Session, *, actor: Actor, accession: str) -> SpecimenRead:
    """Take one tube of the pull list out: disposed, for destruction or for return."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession)
    found = session.execute(_pull_query().where(Specimen.id == specimen.id)).first()
    if found is None:
        raise ValidationError(
            f"{specimen.accession_id} is not on the pull list", field="specimen", value=accession
        )
    _, disposition, withdrawn_on = found
    done = (
        "returned to the participant"
        if disposition is not WithdrawalDisposition.destroy
        else "destroyed"
    )
    return dispose(
        session,
        actor=actor,
        accession=specimen.accession_id,
        reason=f"consent withdrawn on {withdrawn_on}: {done}",
    )
