"""Reservations: tubes set aside for one request, for named uses, by someone who owns them.

A tube has at most one standing reservation (the database's partial unique index says so), so
a tube reserved for one request is never silently counted for another: reserving leaves it
out, counted by reason ("reserved for REQ-…"). Consent is asked as of the day a reservation is
made and again, for the reservation's uses, whenever the tube is handed over (checked out or
distributed). A reservation ends when its owner or an admin releases it, when the tube is
distributed, or when its status leaves `reserved` any other way; each end is an event and an
audit entry, and the row stays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush, one_of
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import Role, SpecimenStatus
from biobank.errors import InvalidTransition, NotFound, PermissionDenied, ValidationError
from biobank.models import Specimen, SpecimenReservation, User, utcnow
from biobank.services import audit
from biobank.services.consent_checks import consent_decisions, known_uses, require_consent
from biobank.services.events import record_event
from biobank.services.specimen_read import refuse_misread
from biobank.tabular import chunks

BATCH = 1000
HANDED_OVER = frozenset({SpecimenStatus.checked_out, SpecimenStatus.distributed})
STANDING = col(SpecimenReservation.ended_at).is_(None)


class ReservationSummary(BaseModel):
    """What a reservation did: how many tubes it took, and why it left the others out."""

    request: str
    reserved: int
    left_out: dict[str, int]


class ReleaseSummary(BaseModel):
    released: list[str]
    reason: str


def _request(text: str | None) -> str:
    request = (text or "").strip()
    if not request or len(request) > 120:
        raise ValidationError("a reservation names its request (1-120 characters)",
                              field="request", value=text)  # fmt: skip
    return request


def standing_reservation(session: Session, specimen: Specimen) -> SpecimenReservation | None:
    """The reservation a tube is under now, if any (ended ones are history)."""
    return session.exec(
        select(SpecimenReservation).where(SpecimenReservation.specimen_id == specimen.id, STANDING)
    ).first()


def reserve_specimens(
    session: Session,
    *,
    actor: Actor,
    specimen_ids: Iterable[int],
    request: str,
    uses: list[str],
    export_run_id: int | None = None,
    request_id: int | None = None,
    request_line_id: int | None = None,
    expires_at: datetime | None = None,
) -> ReservationSummary:
    """Reserve these tubes for `request`, a batch at a time: available ones whose
    participant's consent allows every use today. The others are left out and counted by
    reason: reserved for another request (or already for this one), not available, consent.
    A specimen request's approval names the request and line, and when the tubes go back."""
    require(actor, Permission.export)
    return set_aside(
        session, actor=actor, specimen_ids=specimen_ids, request=request, uses=uses,
        export_run_id=export_run_id, request_id=request_id, request_line_id=request_line_id,
        expires_at=expires_at,
    )  # fmt: skip


def set_aside(
    session: Session,
    *,
    actor: Actor,
    specimen_ids: Iterable[int],
    request: str,
    uses: list[str],
    export_run_id: int | None = None,
    request_id: int | None = None,
    request_line_id: int | None = None,
    expires_at: datetime | None = None,
    picked: bool = False,
) -> ReservationSummary:
    """`reserve_specimens`, after its caller's check (a split at picking reserves the
    aliquots it makes for the parent's request, `picked` already)."""
    owner = actor.user_id
    assert owner is not None, "a reservation is owned by a signed-in user, not the system"
    request, uses = _request(request), known_uses(session, uses)
    today = date.today()
    taken, left_out = 0, Counter[str]()
    for batch in chunks(specimen_ids, BATCH):
        rows = session.execute(
            select(Specimen, SpecimenReservation.request)
            .outerjoin(
                SpecimenReservation,
                sa.and_(col(SpecimenReservation.specimen_id) == Specimen.id, STANDING),
            )
            .where(one_of(session, col(Specimen.id), batch))
            .order_by(col(Specimen.id))
        ).all()
        decisions = consent_decisions(
            session, participant_ids={s.participant_id for s, _ in rows}, uses=uses, as_of=today
        )
        chosen = []
        for specimen, held_for in rows:
            decision = decisions[specimen.participant_id]
            if held_for is not None:
                left_out[f"reserved for {held_for}"] += 1
            elif specimen.status is not SpecimenStatus.available:
                left_out[specimen.status.value.replace("_", " ")] += 1
            elif not decision.allowed:
                left_out[decision.reason()] += 1
            else:
                chosen.append(specimen)
        for specimen in chosen:
            specimen.status = SpecimenStatus.reserved
            specimen.updated_at = utcnow()
            session.add(specimen)
            session.add(
                SpecimenReservation(
                    specimen_id=specimen.id, request=request, uses=uses,
                    owner_id=owner, export_run_id=export_run_id, request_id=request_id,
                    request_line_id=request_line_id, expires_at=expires_at,
                    picked_at=utcnow() if picked else None,
                    picked_by_id=actor.user_id if picked else None,
                )
            )  # fmt: skip
            record_event(
                session, actor=actor, specimen=specimen, event_type="reserved",
                status_before=SpecimenStatus.available.value, reason=f"request {request}",
                details={"request": request, "uses": uses, "export_run_id": export_run_id},
            )  # fmt: skip
        flush(session)
        audit.record_many(
            session,
            actor=actor,
            entries=[
                {"action": "specimen.reserve", "entity": "specimen", "entity_id": s.id,
                 "after": audit.snapshot(s) | {"request": request, "uses": uses},
                 "reason": f"request {request}"}
                for s in chosen
            ],
        )  # fmt: skip
        taken += len(chosen)
    return ReservationSummary(
        request=request, reserved=taken, left_out=dict(sorted(left_out.items()))
    )


def release_reservations(
    session: Session,
    *,
    actor: Actor,
    reason: str,
    accessions: list[str] | None = None,
    request: str | None = None,
) -> ReleaseSummary:
    """Give reserved tubes back (available again): named ones, or every tube of a request.
    Only a reservation's owner or an admin releases it; each release is an event."""
    require(actor, Permission.view_inventory)
    if not reason or not reason.strip():
        raise ValidationError("a release needs a reason", field="reason")
    if bool(accessions) == bool(request and request.strip()):
        raise ValidationError("name the tubes or the request, not both", field="request")
    query = select(SpecimenReservation, Specimen).join(
        Specimen, col(Specimen.id) == SpecimenReservation.specimen_id
    ).where(STANDING)  # fmt: skip
    if request:
        rows = session.exec(query.where(SpecimenReservation.request == request.strip())).all()
        if not rows:
            raise NotFound(f"no tube is reserved for {request.strip()!r}", field="request",
                           value=request)  # fmt: skip
    else:
        wanted = {a.strip().upper() for a in accessions or []}
        rows = session.exec(query.where(col(Specimen.accession_id).in_(wanted))).all()
        missing = sorted(wanted - {s.accession_id for _, s in rows})
        if missing:
            refuse_misread(missing[0])  # a bad check character is a misread, not "not reserved"
            raise NotFound(f"{missing[0]} is not reserved", field="specimen", value=missing[0])
    for reservation, _ in rows:
        if reservation.owner_id != actor.user_id and actor.role is not Role.admin:
            raise PermissionDenied(
                f"{actor.username} ({actor.role.value}) may not release a reservation of "
                f"another user (request {reservation.request})",
                field="permission",
                value="release",
            )
    for reservation, specimen in rows:
        give_back(session, actor=actor, reservation=reservation, specimen=specimen,
                  why=f"released: {reason.strip()}", reason=reason.strip())  # fmt: skip
    return ReleaseSummary(released=sorted(s.accession_id for _, s in rows), reason=reason.strip())


def give_back(
    session: Session,
    *,
    actor: Actor,
    reservation: SpecimenReservation,
    specimen: Specimen,
    why: str,
    reason: str | None = None,
) -> None:
    """End a reservation (`why`) and make its tube available again (unless it is out: a
    checked-out tube's reservation ends, and its check-in makes it available), each audited,
    an event with `reason` (`why` unless given)."""
    end_reservation(session, actor=actor, reservation=reservation, why=why)
    if specimen.status is SpecimenStatus.reserved:
        reason = reason or why
        with audit.audited(session, specimen, actor=actor, action="specimen.release",
                           entity="specimen", reason=reason):  # fmt: skip
            specimen.status = SpecimenStatus.available
            specimen.updated_at = utcnow()
            record_event(
                session, actor=actor, specimen=specimen, event_type="released",
                status_before=SpecimenStatus.reserved.value, reason=reason,
                details={"request": reservation.request},
            )  # fmt: skip


def release_reserved(session: Session, *, actor: Actor, request_id: int | None, why: str) -> int:
    """Give back every tube a specimen request holds now (it was cancelled); how many."""
    rows = session.exec(
        select(SpecimenReservation, Specimen)
        .join(Specimen, col(Specimen.id) == SpecimenReservation.specimen_id)
        .where(SpecimenReservation.request_id == request_id, STANDING)
    ).all()
    for reservation, specimen in rows:
        give_back(session, actor=actor, reservation=reservation, specimen=specimen, why=why)
    return len(rows)


def release_expired(session: Session, *, actor: Actor, now: datetime | None = None) -> list[str]:
    """Give back the tubes whose reservation has expired unpicked (a specimen request's
    approval sets when): each an event with why. The tubes, by accession ID."""
    now = now or utcnow()
    rows = session.exec(
        select(SpecimenReservation, Specimen)
        .join(Specimen, col(Specimen.id) == SpecimenReservation.specimen_id)
        .where(
            STANDING,
            col(SpecimenReservation.expires_at) < now,
            col(SpecimenReservation.picked_at).is_(None),
        )
        .order_by(col(Specimen.accession_id))
    ).all()
    for reservation, specimen in rows:
        assert reservation.expires_at is not None
        why = f"reservation for {reservation.request} expired unpicked"
        give_back(session, actor=actor, reservation=reservation, specimen=specimen, why=why)
    return [specimen.accession_id for _, specimen in rows]


def end_reservation(
    session: Session, *, actor: Actor, reservation: SpecimenReservation, why: str
) -> None:
    """End a reservation, with why, in the audit trail; the tube's own status is the
    caller's to change."""
    with audit.audited(session, reservation, actor=actor, action="reservation.end",
                       entity="specimen_reservation", reason=why):  # fmt: skip
        reservation.ended_at = utcnow()
        reservation.ended_by_id = actor.user_id
        reservation.end_reason = why


def follow_status(
    session: Session, *, actor: Actor, specimen: Specimen, new_status: SpecimenStatus
) -> SpecimenStatus:
    """What a reserved tube's change of status does to its reservation (custody calls this
    for every change): handing it over asks consent for the reservation's uses today, a
    check-in returns it to `reserved`, and any other status ends the reservation. Returns
    the status the tube takes."""
    if specimen.status not in (SpecimenStatus.reserved, SpecimenStatus.checked_out):
        return new_status
    reservation = standing_reservation(session, specimen)
    if reservation is None:
        return new_status
    if specimen.status is SpecimenStatus.reserved and new_status is SpecimenStatus.available:
        raise InvalidTransition(
            f"{specimen.accession_id} is reserved for {reservation.request} and was never "
            "checked out: its owner or an admin releases it (`biobank specimen release`)",
            field="status",
            value=new_status.value,
        )
    if new_status in HANDED_OVER:
        require_consent(
            session, participant_id=specimen.participant_id, uses=reservation.uses,
            as_of=date.today(),
            what=f"handing over {specimen.accession_id} (reserved for {reservation.request})",
        )  # fmt: skip
    if new_status is SpecimenStatus.available and specimen.status is SpecimenStatus.checked_out:
        return SpecimenStatus.reserved
    if new_status is not SpecimenStatus.checked_out:
        end_reservation(session, actor=actor, reservation=reservation,
                        why=f"tube {new_status.value.replace('_', ' ')}")  # fmt: skip
    return new_status


class ReservationRead(BaseModel):
    accession_id: str
    request: str
    uses: list[str]
    owner: str | None
    reserved_at: datetime
    ended_at: datetime | None
    end_reason: str | None


def list_reservations(
    session: Session, *, actor: Actor, request: str | None = None, standing_only: bool = True
) -> list[ReservationRead]:
    """The reservations (standing ones unless told), by request then tube."""
    require(actor, Permission.view_inventory)
    query = (
        select(SpecimenReservation, Specimen.accession_id, User.username)
        .join(Specimen, col(Specimen.id) == SpecimenReservation.specimen_id)
        .outerjoin(User, col(User.id) == SpecimenReservation.owner_id)
        .order_by(SpecimenReservation.request, Specimen.accession_id)
    )
    if standing_only:
        query = query.where(STANDING)
    if request:
        query = query.where(SpecimenReservation.request == request.strip())
    return [
        ReservationRead(
            accession_id=accession, request=r.request, uses=r.uses, owner=owner,
            reserved_at=r.reserved_at, ended_at=r.ended_at, end_reason=r.end_reason,
        )
        for r, accession, owner in session.exec(query).all()
    ]  # fmt: skip
