"""Picking an approved specimen request: its tubes in freezer order (freezer, shelf, rack, box,
then position), so a technician opens each box once, each ticked by scanning it in hand.

A scan of a tube that is not the request's (another request's, or no request's) is refused,
naming what it is, and changes nothing; so is a tube whose participant's consent no longer
allows the request's uses today: the list says so, loudly, and the tube stays in its box. A
tube of a line that wants aliquots is split when picked: the aliquots (new IDs, their labels to
print) take the parent's place on the request, picked, and the parent, with what is left, is
available again where it stands. A tube not found is marked missing (it leaves the request),
and may be replaced by another of the same participant that meets the line."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import RequestStatus, SpecimenStatus
from biobank.errors import ConsentDenied, InvalidTransition, NotFound, ValidationError
from biobank.models import (
    RequestLine,
    Specimen,
    SpecimenRequest,
    SpecimenReservation,
    utcnow,
)
from biobank.services import audit, custody, lineage, reservations
from biobank.services.consent_checks import consent_decisions
from biobank.services.events import record_event
from biobank.services.request_selection import needed
from biobank.services.requests import get_request
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimens_where
from biobank.services.storage import in_freezer_order

PICKABLE = frozenset({RequestStatus.approved, RequestStatus.partly_approved})


class PickItem(BaseModel):
    accession_id: str
    line_no: int | None
    participant_code: str
    specimen_type: str
    quantity: float
    unit: str
    box_barcode: str | None
    position: str | None
    location: str | None
    picked: bool
    split: str | None  # "3 × 0.25 aliquots": the tube is split when picked
    blocked: str | None  # why it must not be picked (consent, as of today)


class PickList(BaseModel):
    code: str
    status: RequestStatus
    items: list[PickItem]

    @property
    def to_pick(self) -> int:
        return sum(1 for i in self.items if not i.picked and not i.blocked)


class PickOutcome(BaseModel):
    """What a scan did: `picked`, `already picked` or `split` (into `aliquots`)."""

    outcome: str
    item: PickItem
    aliquots: list[SpecimenRead] = []


def _pickable(session: Session, code: str) -> SpecimenRequest:
    request = get_request(session, code)
    if request.status not in PICKABLE:
        raise InvalidTransition(
            f"request {request.code} is {request.status.value.replace('_', ' ')}: only an "
            "approved request is picked",
            field="request",
            value=request.code,
        )
    return request


def _items(
    session: Session, request: SpecimenRequest, where: sa.ColumnElement[bool] | None = None
) -> list[PickItem]:
    """The request's standing reservations as pick-list lines, in freezer order."""
    query = in_freezer_order(
        sa.select(
            col(Specimen.id),
            col(SpecimenReservation.picked_at),
            col(RequestLine.line_no),
            col(RequestLine.aliquots),
            col(RequestLine.aliquot_volume),
        )
        .join(Specimen, col(Specimen.id) == SpecimenReservation.specimen_id)
        .outerjoin(RequestLine, col(RequestLine.id) == SpecimenReservation.request_line_id)
        .where(col(SpecimenReservation.request_id) == request.id, reservations.STANDING)
    )
    if where is not None:
        query = query.where(where)
    found = {row[0]: row[1:] for row in session.execute(query)}
    if not found:
        return []
    reads = {s.id: s for s in specimens_where(session, col(Specimen.id).in_(list(found)))}
    participants = dict(
        session.execute(
            sa.select(col(Specimen.id), col(Specimen.participant_id)).where(
                col(Specimen.id).in_(list(found))
            )
        ).all()
    )
    decisions = consent_decisions(
        session, participant_ids=set(participants.values()), uses=request.uses,
        as_of=date.today(),
    )  # fmt: skip
    items = []
    for specimen_id, (picked_at, line_no, aliquots, volume) in found.items():
        s, decision = reads[specimen_id], decisions[participants[specimen_id]]
        blocked = None
        if not decision.allowed:
            blocked = f"CONSENT {decision.reason().upper()}: do not pick, leave it in its box"
        items.append(
            PickItem(
                accession_id=s.accession_id, line_no=line_no,
                participant_code=s.participant_code, specimen_type=s.specimen_type,
                quantity=s.quantity, unit=s.unit, box_barcode=s.box_barcode,
                position=s.position, location=s.location, picked=picked_at is not None,
                split=f"{aliquots} × {volume:g} aliquots"
                if aliquots and volume and picked_at is None else None,
                blocked=blocked,
            )
        )  # fmt: skip
    return items


def pick_list(session: Session, *, actor: Actor, code: str) -> PickList:
    """The approved tubes of a request in freezer order, each picked or not, and those
    consent now forbids flagged."""
    require(actor, Permission.view_inventory)
    request = _pickable(session, code)
    return PickList(code=request.code, status=request.status, items=_items(session, request))


def pick(session: Session, *, actor: Actor, code: str, accession: str) -> PickOutcome:
    """A tube scanned in hand: ticked (or split, for a line of aliquots), or refused, naming
    why, with nothing changed (see the module)."""
    require(actor, Permission.move)
    request = _pickable(session, code)
    tube = get_specimen(session, accession)
    held = reservations.standing_reservation(session, tube)
    if held is None or held.request_id != request.id:
        what = f"reserved for {held.request}" if held is not None else tube.status.value
        raise ValidationError(
            f"WRONG TUBE: {tube.accession_id} is not on {request.code}'s pick list ({what}); "
            "put it back",
            field="specimen",
            value=tube.accession_id,
        )
    (item,) = _items(session, request, col(Specimen.id) == tube.id)
    if item.blocked:
        raise ConsentDenied(
            f"{tube.accession_id}: {item.blocked}; it will not ship with {request.code}",
            field="uses",
            value=tube.accession_id,
        )
    if held.picked_at is not None:
        return PickOutcome(outcome="already picked", item=item)
    line = session.get(RequestLine, held.request_line_id) if held.request_line_id else None
    if line is not None and line.aliquots and line.aliquot_volume:
        return _split(session, actor=actor, request=request, tube=tube, held=held, line=line)
    why = f"picked for {request.code}"
    with audit.audited(session, held, actor=actor, action="reservation.pick",
                       entity="specimen_reservation", reason=why):  # fmt: skip
        held.picked_at, held.picked_by_id = utcnow(), actor.user_id
    record_event(
        session, actor=actor, specimen=tube, event_type="picked",
        status_before=tube.status.value, reason=why, details={"request": request.code},
    )  # fmt: skip
    return PickOutcome(outcome="picked", item=item.model_copy(update={"picked": True}))


def _split(
    session: Session,
    *,
    actor: Actor,
    request: SpecimenRequest,
    tube: Specimen,
    held: SpecimenReservation,
    line: RequestLine,
) -> PickOutcome:
    """Split a picked tube into the line's aliquots, which take its place on the request."""
    assert line.aliquots is not None and line.aliquot_volume is not None
    why = f"split for {request.code} line {line.line_no}"
    reservations.give_back(session, actor=actor, reservation=held, specimen=tube, why=why)
    made = lineage.aliquot(
        session, actor=actor, parent=tube.accession_id, count=line.aliquots,
        volume=line.aliquot_volume,
    )  # fmt: skip
    reservations.set_aside(
        session, actor=actor, specimen_ids=[a.id for a in made], request=request.code,
        uses=request.uses, request_id=request.id, request_line_id=line.id,
        expires_at=held.expires_at, picked=True,
    )  # fmt: skip
    (item,) = _items(session, request, col(Specimen.id) == made[0].id)
    return PickOutcome(outcome="split", item=item, aliquots=made)


def mark_missing(
    session: Session, *, actor: Actor, code: str, accession: str, reason: str
) -> SpecimenRead:
    """A tube of the request not where the list says: missing (its position freed), which
    takes it off the request."""
    require(actor, Permission.move)
    request = _pickable(session, code)
    tube = get_specimen(session, accession)
    held = reservations.standing_reservation(session, tube)
    if held is None or held.request_id != request.id:
        raise ValidationError(f"{tube.accession_id} is not on {request.code}'s pick list",
                              field="specimen", value=tube.accession_id)  # fmt: skip
    why = (reason or "").strip() or f"not found when picking {request.code}"
    return custody.mark_missing(session, actor=actor, accession=tube.accession_id, reason=why)


def substitute(session: Session, *, actor: Actor, code: str, accession: str) -> PickItem:
    """Replace a tube of the request that cannot be picked (missing, or no longer its) with
    another tube of the same participant that meets the same line, available and allowed
    today: reserved for the request, on its pick list."""
    require(actor, Permission.move)
    request = _pickable(session, code)
    tube = get_specimen(session, accession)
    last = session.exec(
        select(SpecimenReservation)
        .where(
            SpecimenReservation.specimen_id == tube.id,
            SpecimenReservation.request_id == request.id,
        )
        .order_by(col(SpecimenReservation.id).desc())
    ).first()
    if last is None:
        raise ValidationError(f"{tube.accession_id} was never on {request.code}",
                              field="specimen", value=tube.accession_id)  # fmt: skip
    if last.ended_at is None and last.picked_at is not None:
        raise ValidationError(f"{tube.accession_id} is picked already: nothing to replace",
                              field="specimen", value=tube.accession_id)  # fmt: skip
    line = session.get_one(RequestLine, last.request_line_id)
    need = needed(line)
    candidates = session.exec(
        select(Specimen)
        .where(
            Specimen.participant_id == tube.participant_id,
            Specimen.specimen_type == tube.specimen_type,
            Specimen.status == SpecimenStatus.available,
            col(Specimen.id) != tube.id,
            col(Specimen.quantity) >= (need or 0),
        )
        .order_by(col(Specimen.quantity).desc(), col(Specimen.accession_id))
    ).all()
    if not candidates:
        raise NotFound(
            f"no other available {tube.specimen_type} tube of this participant meets line "
            f"{line.line_no} of {request.code}",
            field="specimen",
            value=tube.accession_id,
        )
    if last.ended_at is None:  # still on the request, unpicked: it goes back
        reservations.give_back(session, actor=actor, reservation=last, specimen=tube,
                               why=f"replaced on {request.code}")  # fmt: skip
    summary = reservations.set_aside(
        session, actor=actor, specimen_ids=[c.id for c in candidates[:1] if c.id is not None],
        request=request.code, uses=request.uses, request_id=request.id,
        request_line_id=line.id, expires_at=last.expires_at,
    )  # fmt: skip
    if not summary.reserved:
        reasons = ", ".join(summary.left_out)
        raise ConsentDenied(f"{candidates[0].accession_id} cannot replace it: {reasons}",
                            field="specimen", value=candidates[0].accession_id)  # fmt: skip
    (item,) = _items(session, request, col(Specimen.id) == candidates[0].id)
    return item
