"""Consent: statements, versioned documents, signed answers, and where a participant stands.

Whether a use is allowed is decided by `biobank.domain.consent` from these rows as of a date;
every capability that uses specimens or data asks `biobank.services.consent_checks`. Withdrawing
is `biobank.services.withdrawals`; a signature that lifts a withdrawal clears its flags here.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.consent import Decision, StatementState, statement_status, withdrawn_entirely
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import ParticipantStatus, WithdrawalDisposition
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentDocumentStatement,
    ConsentStatement,
    ConsentWithdrawal,
    Participant,
    ParticipantConsent,
    Specimen,
    User,
)
from biobank.services import audit
from biobank.services.consent_checks import consent_acts, consent_decisions
from biobank.services.events import record_event
from biobank.services.participants import get_participant_row

STATEMENT_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


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


# --- Statements and documents --------------------------------------------------------------


def get_statement_row(session: Session, code: str, *, field: str = "statement") -> ConsentStatement:
    """The statement a code names (any case), or NotFound listing the known ones."""
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
    rows = session.exec(select(ConsentStatement).order_by(col(ConsentStatement.id))).all()
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


def _document_statements(session: Session, document_id: int) -> dict[str, int]:
    """The statements a document asks, in order: each code with its statement's id."""
    return dict(
        session.exec(
            select(ConsentStatement.code, ConsentDocumentStatement.statement_id)
            .join(
                ConsentDocumentStatement,
                col(ConsentDocumentStatement.statement_id) == ConsentStatement.id,
            )
            .where(ConsentDocumentStatement.document_id == document_id)
            .order_by(col(ConsentDocumentStatement.position))
        ).all()
    )


def _document_read(session: Session, row: ConsentDocument) -> DocumentRead:
    assert row.id is not None
    return DocumentRead(
        code=row.code,
        version=row.version,
        title=row.title,
        effective_on=row.effective_on,
        statements=list(_document_statements(session, row.id)),
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
    asked = [get_statement_row(session, s, field="statements") for s in statements]
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
    assert row.id is not None
    for position, statement in enumerate(asked):
        assert statement.id is not None
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
        select(ConsentDocument).order_by(
            col(ConsentDocument.code), col(ConsentDocument.effective_on)
        )
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
    assert person.id is not None and form.id is not None
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
    assert signature.id is not None
    for code, statement_id in asked.items():
        session.add(
            ConsentAnswer(
                participant_consent_id=signature.id, statement_id=statement_id, answer=given[code]
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
    assert person.id is not None
    today = date.today()
    answers, withdrawals = consent_acts(session, [person.id])
    mine, gone = answers[person.id], withdrawals[person.id]
    full = withdrawn_entirely(mine, gone, today)
    if person.status == ParticipantStatus.withdrawn and full is None:
        with audit.audited(session, person, actor=actor, action="participant.status",
                           entity="participant"):  # fmt: skip
            person.status = ParticipantStatus.active
    rows = session.execute(
        sa.select(Specimen, col(ConsentStatement.code))
        .join(ConsentWithdrawal, col(ConsentWithdrawal.id) == Specimen.consent_withdrawal_id)
        .outerjoin(ConsentStatement, col(ConsentStatement.id) == ConsentWithdrawal.statement_id)
        .where(col(Specimen.participant_id) == person.id)
        .order_by(col(Specimen.id))
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


# --- Status ---------------------------------------------------------------------------------


def check_uses(
    session: Session, *, actor: Actor, participant: str, uses: Iterable[str], as_of: date | None
) -> Decision:
    """A participant's consent for every use on `as_of` (today if None), with each
    statement's state: the question before using a tube or sharing data."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    assert person.id is not None
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
    assert person.id is not None
    as_of = as_of or date.today()
    answers, withdrawals = consent_acts(session, [person.id])
    mine, gone = answers[person.id], withdrawals[person.id]
    statements = session.exec(select(ConsentStatement).order_by(col(ConsentStatement.id))).all()
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
            col(ParticipantConsent.id),
            col(ConsentDocument.code),
            col(ConsentDocument.version),
            col(ParticipantConsent.signed_on),
            col(User.username),
        )
        .join(ConsentDocument, col(ConsentDocument.id) == ParticipantConsent.document_id)
        .outerjoin(User, col(User.id) == ParticipantConsent.recorded_by_id)
        .where(col(ParticipantConsent.participant_id) == participant_id)
        .order_by(col(ParticipantConsent.signed_on), col(ParticipantConsent.id))
    ).all()
    answers: dict[int | None, dict[str, bool]] = defaultdict(dict)
    for consent_id, code, answer in session.execute(
        sa.select(
            col(ConsentAnswer.participant_consent_id),
            col(ConsentStatement.code),
            col(ConsentAnswer.answer),
        )
        .join(ConsentStatement, col(ConsentStatement.id) == ConsentAnswer.statement_id)
        .where(col(ConsentAnswer.participant_consent_id).in_([r[0] for r in rows]))
        .order_by(col(ConsentAnswer.id))
    ):
        answers[consent_id][code] = answer
    return [
        SignatureRead(
            document=code, version=version, signed_on=signed_on, answers=answers[cid],
            recorded_by=username,
        )
        for cid, code, version, signed_on, username in rows
    ]  # fmt: skip


def withdrawal_read(
    row: ConsentWithdrawal, participant_code: str, statement: str | None, flagged: int = 0
) -> WithdrawalRead:
    """A stored withdrawal as callers see it, with the number of specimens it flags."""
    assert row.id is not None
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
        sa.select(ConsentWithdrawal, col(ConsentStatement.code))
        .outerjoin(ConsentStatement, col(ConsentStatement.id) == ConsentWithdrawal.statement_id)
        .where(col(ConsentWithdrawal.participant_id) == person.id)
        .order_by(col(ConsentWithdrawal.withdrawn_on), col(ConsentWithdrawal.id))
    ).all()
    flagged: dict[int | None, int] = dict(
        session.execute(
            sa.select(col(Specimen.consent_withdrawal_id), sa.func.count())
            .where(col(Specimen.participant_id) == person.id)
            .group_by(col(Specimen.consent_withdrawal_id))
        ).all()
    )
    return [withdrawal_read(row, person.code, code, flagged.get(row.id, 0)) for row, code in rows]
