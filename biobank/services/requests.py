"""Specimen requests: a PI asks for tubes, from a cohort (a saved query, narrowed or not, kept
as it stood when asked) or a list of accession IDs, line by line, for named uses under an IRB
approval and a data use or material transfer agreement, each with its expiry.

A request is drafted, submitted, taken up by a reviewer and decided (`request_review`); its PI
or an admin may cancel it until it is fulfilled. Every change of state is a `RequestEvent` (who,
when, why, from what to what) and an audit entry. A PI sees and changes only their own
requests; reviewers (admins) see all. Consent is asked as of the day each step runs: the
listed tubes when a request is made, the would-be selection when it is submitted, reviewed
and approved (`request_review`), and each tube again when it is handed over (`reservations`).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from biobank.db import flush
from biobank.domain.cohort import CohortQuery
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import positive_quantity, specimen_type_code
from biobank.domain.vocabulary import (
    RequestLineStatus,
    RequestStatus,
    RequestTake,
    SpecimenStatus,
)
from biobank.errors import InvalidTransition, NotFound, PermissionDenied, ValidationError
from biobank.models import (
    RequestedSpecimen,
    RequestEvent,
    RequestLine,
    Specimen,
    SpecimenRequest,
    SpecimenReservation,
    User,
    utcnow,
)
from biobank.services import audit
from biobank.services.consent_checks import consent_decisions, known_uses
from biobank.services.request_selection import needed
from biobank.services.reservations import STANDING, release_reserved
from biobank.services.saved_queries import resolve_query
from biobank.services.specimen_read import get_specimen

SECRET = frozenset({"code_key"})  # shown in the audit trail only as set
OPEN = frozenset(
    {
        RequestStatus.draft,
        RequestStatus.submitted,
        RequestStatus.under_review,
        RequestStatus.approved,
        RequestStatus.partly_approved,
    }
)
# what each state may become, and who moves it there is each service's to check
MOVES: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.draft: frozenset({RequestStatus.submitted, RequestStatus.cancelled}),
    RequestStatus.submitted: frozenset({RequestStatus.under_review, RequestStatus.cancelled}),
    RequestStatus.under_review: frozenset(
        {
            RequestStatus.approved,
            RequestStatus.partly_approved,
            RequestStatus.rejected,
            RequestStatus.cancelled,
        }
    ),
    RequestStatus.approved: frozenset({RequestStatus.fulfilled, RequestStatus.cancelled}),
    RequestStatus.partly_approved: frozenset({RequestStatus.fulfilled, RequestStatus.cancelled}),
}


class LineWant(BaseModel):
    """One line of a request: tubes of a type with at least a quantity each, or so many
    aliquots of a volume (split at picking); one per participant or all that fit. A request
    of a list has one line without a type: the tubes listed."""

    specimen_type: str | None = None
    min_quantity: float | None = None
    aliquots: int | None = Field(default=None, ge=1, le=100)
    aliquot_volume: float | None = None
    take: RequestTake = RequestTake.one


LINE = re.compile(
    r"^(?P<type>[A-Za-z0-9]{3})?"
    r"(?:>=(?P<min>[0-9.]+))?"
    r"(?::(?P<aliquots>[0-9]+)x(?P<volume>[0-9.]+))?"
    r"(?:/(?P<take>one|all))?$"
)


def line_from_text(text: str, *, field: str = "line") -> LineWant:
    """A line as typed: `SER`, `SER>=0.5`, `PL1:3x0.25`, `BUF/all`, `/all` (the tubes listed,
    every one): type, minimum quantity, aliquots × volume, one per participant (default) or
    all."""
    found = LINE.match(text.strip())
    if found is None or not text.strip():
        raise ValidationError(
            f"{field} {text!r} is not a line: TYPE[>=QUANTITY][:N x VOLUME][/one|/all], e.g. "
            "SER>=0.5, PL1:3x0.25/all",
            field=field,
            value=text,
        )
    parts = found.groupdict()
    try:
        return LineWant(
            specimen_type=parts["type"],
            min_quantity=float(parts["min"]) if parts["min"] else None,
            aliquots=int(parts["aliquots"]) if parts["aliquots"] else None,
            aliquot_volume=float(parts["volume"]) if parts["volume"] else None,
            take=RequestTake(parts["take"] or "one"),
        )
    except ValueError as error:
        raise ValidationError(f"{field} {text!r}: {error}", field=field, value=text) from None


class RequestDraft(BaseModel):
    """What a PI asks for (see the module)."""

    title: str
    uses: list[str]
    project: str
    irb_reference: str
    irb_expires_on: date
    agreement_reference: str | None = None
    agreement_expires_on: date | None = None
    needed_by: date | None = None
    destination_institution: str
    destination_address: str
    destination_contact: str
    saved_query: str | None = None
    cohort: CohortQuery | None = None  # filters, alone or narrowing the saved query
    accessions: list[str] = []
    lines: list[LineWant] = []
    relabel: bool = False
    reservation_days: int = Field(default=30, ge=1, le=365)


class LineRead(BaseModel):
    line_no: int
    specimen_type: str | None
    min_quantity: float | None
    aliquots: int | None
    aliquot_volume: float | None
    take: RequestTake
    status: RequestLineStatus
    decision_reason: str | None
    approved_tubes: int


class EventRead(BaseModel):
    status_before: str | None
    status_after: str
    actor: str | None
    occurred_at: datetime
    reason: str | None


class RequestRead(BaseModel):
    code: str
    title: str
    requester: str
    status: RequestStatus
    saved_query: str | None
    cohort_query: dict[str, Any] | None
    accessions: list[str]
    uses: list[str]
    project: str
    irb_reference: str
    irb_expires_on: date
    agreement_reference: str | None
    agreement_expires_on: date | None
    needed_by: date | None
    destination_institution: str
    destination_address: str
    destination_contact: str
    relabel: bool
    reservation_days: int
    reviewer: str | None
    decided_at: datetime | None
    decision_reason: str | None
    lines: list[LineRead]
    reserved_tubes: int  # standing reservations for it now
    created_at: datetime
    age_days: int  # since it was made
    events: list[EventRead]


class RequestSummary(BaseModel):
    code: str
    title: str
    requester: str
    status: RequestStatus
    needed_by: date | None
    reserved_tubes: int
    age_days: int


# --- Reading ---------------------------------------------------------------------------------


def get_request(session: Session, code: str) -> SpecimenRequest:
    """The request with this code (any case), or NotFound naming it."""
    row = session.exec(
        select(SpecimenRequest).where(SpecimenRequest.code == code.strip().upper())
    ).first()
    if row is None:
        raise NotFound(f"no request {code.strip()!r}", field="request", value=code)
    return row


def refuse_others(actor: Actor, request: SpecimenRequest) -> None:
    """A PI sees and changes their own requests only; a reviewer (admin) every one."""
    if request.requester_id != actor.user_id and not actor.can(Permission.review_requests):
        raise PermissionDenied(
            f"{actor.username} ({actor.role.value}) may not see request {request.code} of "
            "another user",
            field="request",
            value=request.code,
        )


def _reserved_counts(session: Session, ids: list[int]) -> dict[int, int]:
    query = (
        sa.select(col(SpecimenReservation.request_id), func.count())
        .where(col(SpecimenReservation.request_id).in_(ids), STANDING)
        .group_by(col(SpecimenReservation.request_id))
    )
    return {request_id: count for request_id, count in session.execute(query)}


def _usernames(session: Session, ids: set[int | None]) -> dict[int | None, str]:
    wanted = [i for i in ids if i is not None]
    rows = session.execute(
        sa.select(col(User.id), col(User.username)).where(col(User.id).in_(wanted))
    )
    return {i: name for i, name in rows}


def age_days(moment: datetime) -> int:
    """Whole days since a stored time (UTC; SQLite gives it back without its zone)."""
    return (utcnow() - (moment if moment.tzinfo else moment.replace(tzinfo=UTC))).days


def request_read(session: Session, row: SpecimenRequest) -> RequestRead:
    """A request as returned to callers: its lines, listed tubes, events and reservations."""
    assert row.id is not None
    lines = session.exec(
        select(RequestLine)
        .where(RequestLine.request_id == row.id)
        .order_by(col(RequestLine.line_no))
    ).all()
    accessions = session.exec(
        select(Specimen.accession_id)
        .join(RequestedSpecimen, col(RequestedSpecimen.specimen_id) == Specimen.id)
        .where(RequestedSpecimen.request_id == row.id)
        .order_by(col(Specimen.accession_id))
    ).all()
    events = session.exec(
        select(RequestEvent).where(RequestEvent.request_id == row.id).order_by(col(RequestEvent.id))
    ).all()
    names = _usernames(session, {row.requester_id, row.reviewer_id, *(e.actor_id for e in events)})
    fields = row.model_dump(exclude={"id", "requester_id", "reviewer_id", "updated_at"})
    return RequestRead(
        **fields,
        requester=names.get(row.requester_id, "?"),
        reviewer=names.get(row.reviewer_id),
        accessions=list(accessions),
        lines=[LineRead.model_validate(line, from_attributes=True) for line in lines],
        reserved_tubes=_reserved_counts(session, [row.id]).get(row.id, 0),
        age_days=age_days(row.created_at),
        events=[
            EventRead(
                status_before=e.status_before, status_after=e.status_after,
                actor=names.get(e.actor_id), occurred_at=e.occurred_at, reason=e.reason,
            )
            for e in events
        ],
    )  # fmt: skip


def show_request(session: Session, *, actor: Actor, code: str) -> RequestRead:
    require(actor, Permission.request_specimens)
    row = get_request(session, code)
    refuse_others(actor, row)
    return request_read(session, row)


def list_requests(
    session: Session, *, actor: Actor, status: RequestStatus | None = None, open_only: bool = False
) -> list[RequestSummary]:
    """Requests, oldest first: a PI's own, a reviewer's all; open ones only if asked."""
    require(actor, Permission.request_specimens)
    query = select(SpecimenRequest).order_by(
        col(SpecimenRequest.created_at), col(SpecimenRequest.id)
    )
    if not actor.can(Permission.review_requests):
        query = query.where(SpecimenRequest.requester_id == actor.user_id)
    if status is not None:
        query = query.where(SpecimenRequest.status == status)
    if open_only:
        query = query.where(col(SpecimenRequest.status).in_(OPEN))
    rows = session.exec(query).all()
    reserved = _reserved_counts(session, [r.id for r in rows if r.id is not None])
    names = _usernames(session, {r.requester_id for r in rows})
    return [
        RequestSummary(
            code=r.code, title=r.title, requester=names.get(r.requester_id, "?"), status=r.status,
            needed_by=r.needed_by, reserved_tubes=reserved.get(r.id or 0, 0),
            age_days=age_days(r.created_at),
        )
        for r in rows
    ]  # fmt: skip


# --- Changes of state ------------------------------------------------------------------------


def move(
    session: Session,
    *,
    actor: Actor,
    request: SpecimenRequest,
    to: RequestStatus,
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Move a request to `to` if its state allows, as an event and an audit entry."""
    before = request.status
    if to not in MOVES.get(before, frozenset()):
        raise InvalidTransition(
            f"request {request.code} is {before.value.replace('_', ' ')}: it cannot become "
            f"{to.value.replace('_', ' ')}",
            field="status",
            value=to.value,
        )
    with audit.audited(session, request, actor=actor, action=f"request.{to.value}",
                       entity="specimen_request", reason=reason, hide=SECRET):  # fmt: skip
        request.status = to
        request.updated_at = utcnow()
    assert request.id is not None
    session.add(
        RequestEvent(
            request_id=request.id, status_before=before.value, status_after=to.value,
            actor_id=actor.user_id, workstation=actor.workstation, reason=reason,
            details=details,
        )
    )  # fmt: skip
    flush(session)


def refuse_expired(request: SpecimenRequest | RequestDraft, *, on: date, what: str) -> None:
    """An IRB approval or agreement that has expired by `on` stops `what`, naming which."""
    for name, reference, expires in (
        ("IRB approval", request.irb_reference, request.irb_expires_on),
        ("agreement", request.agreement_reference, request.agreement_expires_on),
    ):
        if expires is not None and expires < on:
            raise ValidationError(
                f"{what}: the {name} {reference} expired on {expires.isoformat()}",
                field="irb_expires_on" if name.startswith("IRB") else "agreement_expires_on",
                value=expires.isoformat(),
            )


def _optional(value: str | None, field: str, limit: int) -> str | None:
    text = (value or "").strip()
    if len(text) > limit:
        raise ValidationError(f"{field} is at most {limit} characters", field=field, value=text)
    return text or None


def _text(value: str | None, field: str, limit: int) -> str:
    text = _optional(value, field, limit)
    if text is None:
        raise ValidationError(f"a request needs its {field.replace('_', ' ')}", field=field)
    return text


def _check_line(line: LineWant, number: int, *, listed: bool) -> LineWant:
    field = f"lines[{number}]"
    if line.specimen_type is None and not listed:
        raise ValidationError(f"{field}: a line of a cohort request names its specimen type",
                              field=field)  # fmt: skip
    specimen_type = (
        specimen_type_code(line.specimen_type, derivative=True) if line.specimen_type else None
    )
    if (line.aliquots is None) != (line.aliquot_volume is None):
        raise ValidationError(f"{field}: aliquots are so many of a volume: give both",
                              field=field)  # fmt: skip
    return line.model_copy(
        update={
            "specimen_type": specimen_type,
            "min_quantity": positive_quantity(line.min_quantity, f"{field}.min_quantity")
            if line.min_quantity is not None else None,
            "aliquot_volume": positive_quantity(line.aliquot_volume, f"{field}.aliquot_volume")
            if line.aliquot_volume is not None else None,
        }
    )  # fmt: skip


def _new_code(session: Session, today: date) -> str:
    prefix = f"REQ-{today.year}-"
    taken = session.execute(
        sa.select(func.count()).where(col(SpecimenRequest.code).startswith(prefix))
    ).scalar_one()
    return f"{prefix}{taken + 1:04d}"


def _listed(
    session: Session, accessions: list[str], draft: RequestDraft, uses: list[str]
) -> list[Specimen]:
    """The tubes a request lists: each found, available and allowed the uses today, or a
    ValidationError naming it (nothing is made of a request that cannot be met as asked)."""
    tubes: dict[int, Specimen] = {}
    for accession in accessions:
        tube = get_specimen(session, accession, field="accessions")
        if tube.status is not SpecimenStatus.available:
            raise ValidationError(
                f"{tube.accession_id} is {tube.status.value.replace('_', ' ')}, not available",
                field="accessions", value=tube.accession_id,
            )  # fmt: skip
        assert tube.id is not None
        tubes[tube.id] = tube
    decisions = consent_decisions(
        session, participant_ids={t.participant_id for t in tubes.values()}, uses=uses,
        as_of=date.today(),
    )  # fmt: skip
    for tube in tubes.values():
        decision = decisions[tube.participant_id]
        if not decision.allowed:
            raise ValidationError(
                f"{tube.accession_id} may not be requested for {', '.join(uses)}: "
                f"{decision.reason()}",
                field="accessions", value=tube.accession_id,
            )  # fmt: skip
        for number, line in enumerate(draft.lines, start=1):
            need = needed(line)
            if need is not None and tube.quantity is not None and tube.quantity < need:
                raise ValidationError(
                    f"{tube.accession_id} holds {tube.quantity:g} {tube.unit}, less "
                    f"than line {number} needs ({need:g})",
                    field="accessions", value=tube.accession_id,
                )  # fmt: skip
    return list(tubes.values())


def create_request(session: Session, *, actor: Actor, draft: RequestDraft) -> RequestRead:
    """A new request, a draft of the actor's own, checked whole: nothing is made of one that
    names an unknown use, an expired approval, a past date, a line without sense, or a tube
    that is not there, not available or not allowed the uses today."""
    require(actor, Permission.request_specimens)
    assert actor.user_id is not None, "a request is a signed-in user's"
    today = date.today()
    title = _text(draft.title, "title", 200)
    project = _text(draft.project, "project", 200)
    irb = _text(draft.irb_reference, "irb_reference", 120)
    agreement = _optional(draft.agreement_reference, "agreement_reference", 120)
    if (agreement is None) != (draft.agreement_expires_on is None):
        raise ValidationError(
            "an agreement is given with its expiry date", field="agreement_expires_on"
        )
    refuse_expired(draft, on=today, what="a new request")
    if draft.needed_by is not None and draft.needed_by < today:
        raise ValidationError(f"needed by {draft.needed_by.isoformat()}: that day is past",
                              field="needed_by", value=draft.needed_by.isoformat())  # fmt: skip
    if not draft.uses:
        raise ValidationError("a request names its uses (consent statements)", field="uses")
    uses = known_uses(session, draft.uses)
    listed = bool(draft.accessions)
    if listed == bool(draft.saved_query or draft.cohort):
        raise ValidationError("a request is of a cohort (a saved query or filters) or of "
                              "listed tubes, one of them", field="accessions")  # fmt: skip
    lines = [_check_line(line, n, listed=listed) for n, line in enumerate(draft.lines, start=1)]
    if not lines:
        if not listed:
            raise ValidationError("a cohort request has at least one line", field="lines")
        lines = [LineWant(take=RequestTake.all)]
    if listed and len(lines) > 1:
        raise ValidationError("a request of listed tubes has one line", field="lines")
    checked = draft.model_copy(update={"lines": lines})
    query: CohortQuery | None = None
    if not listed:
        query, _ = resolve_query(session, actor=actor, query=draft.cohort, saved=draft.saved_query)
    tubes = _listed(session, draft.accessions, checked, uses) if listed else []
    row = SpecimenRequest(
        code=_new_code(session, today), title=title, requester_id=actor.user_id,
        saved_query=(draft.saved_query or "").strip() or None,
        cohort_query=query.model_dump(mode="json", exclude_defaults=True) if query else None,
        uses=uses, project=project, irb_reference=irb,
        irb_expires_on=draft.irb_expires_on, agreement_reference=agreement,
        agreement_expires_on=draft.agreement_expires_on, needed_by=draft.needed_by,
        destination_institution=_text(
            draft.destination_institution, "destination_institution", 200
        ),
        destination_address=_text(draft.destination_address, "destination_address", 500),
        destination_contact=_text(draft.destination_contact, "destination_contact", 200),
        relabel=draft.relabel, reservation_days=draft.reservation_days,
        code_key=secrets.token_hex(16),
    )  # fmt: skip
    session.add(row)
    flush(session)
    assert row.id is not None
    for number, line in enumerate(lines, start=1):
        session.add(RequestLine(request_id=row.id, line_no=number, **line.model_dump()))
    for tube in tubes:
        assert tube.id is not None  # stored tubes
        session.add(RequestedSpecimen(request_id=row.id, specimen_id=tube.id))
    session.add(
        RequestEvent(request_id=row.id, status_after=RequestStatus.draft.value,
                     actor_id=actor.user_id, workstation=actor.workstation, reason="created")
    )  # fmt: skip
    flush(session)
    audit.record(
        session, actor=actor, action="request.create", entity="specimen_request",
        entity_id=row.id,
        after=audit.snapshot(row, hide=SECRET) | {"lines": [line.model_dump() for line in lines],
                                     "accessions": sorted(t.accession_id for t in tubes)},
    )  # fmt: skip
    return request_read(session, row)


def submit_request(session: Session, *, actor: Actor, code: str) -> RequestRead:
    """A draft sent for review, its approvals still valid today."""
    require(actor, Permission.request_specimens)
    row = get_request(session, code)
    refuse_others(actor, row)
    refuse_expired(row, on=date.today(), what=f"submitting {row.code}")
    move(session, actor=actor, request=row, to=RequestStatus.submitted, reason="submitted")
    return request_read(session, row)


def withdraw_request(session: Session, *, actor: Actor, code: str, reason: str) -> RequestRead:
    """Its PI (or an admin) cancels a request not yet fulfilled: the tubes approved for it
    and not yet handed over are given back (available again), each an event."""
    require(actor, Permission.request_specimens)
    reason = _text(reason, "reason", 500)
    row = get_request(session, code)
    refuse_others(actor, row)
    move(session, actor=actor, request=row, to=RequestStatus.cancelled, reason=reason)
    release_reserved(
        session, actor=actor, request_id=row.id, why=f"request {row.code} cancelled: {reason}"
    )
    return request_read(session, row)


def reservation_expiry(request: SpecimenRequest, *, at: datetime) -> datetime:
    """When the tubes an approval at `at` reserves are given back if not picked."""
    return at + timedelta(days=request.reservation_days)
