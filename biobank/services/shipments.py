"""Shipments: a request's picked tubes packed into shipping boxes (each at the next free place of
a grid), sent by courier with a manifest, and the receiver's confirmation recorded.

Dispatch asks consent a third time, as of its day: a tube whose participant's consent no longer
allows the request's uses is taken off the shipment and given back (it goes back in its box),
and the result says so, loudly. It refuses a shipment of an incomplete pick (a tube of the
request not yet picked and packed) unless told it is a part shipment. The others are
distributed (their positions freed, the quantity sent recorded, consent asked again by custody),
the manifest made (`shipment_manifest`) and its SHA-256 kept, and the request fulfilled when
nothing of it is left reserved. Technicians pack and ship; everything is audited.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from biobank.db import flush
from biobank.domain.cohort import CohortQuery
from biobank.domain.lifecycle import RETURNED_FROM
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import positive_quantity
from biobank.domain.vocabulary import (
    RequestStatus,
    ShipmentItemStatus,
    ShipmentStatus,
    ShippingCondition,
    SpecimenStatus,
)
from biobank.errors import InvalidTransition, NotFound, ValidationError
from biobank.models import (
    Shipment,
    ShipmentItem,
    Specimen,
    SpecimenRequest,
    SpecimenReservation,
    utcnow,
)
from biobank.services import audit, custody, reservations
from biobank.services.consent_checks import consent_decisions
from biobank.services.deidentification import export_code
from biobank.services.events import record_event
from biobank.services.exports import ExportRequest, ExportResult, run_export
from biobank.services.request_picks import PICKABLE
from biobank.services.requests import get_request, move, refuse_others
from biobank.services.shipment_manifest import Manifest, box_place, manifest_of
from biobank.services.specimen_read import get_specimen


class ShipmentLine(BaseModel):
    accession_id: str
    specimen_type: str
    quantity: float
    unit: str
    box_no: int
    position: str  # in its shipping box: A1
    ship_code: str | None  # the label it ships under, when relabelled
    status: ShipmentItemStatus
    note: str | None


class ShipmentRead(BaseModel):
    code: str
    request: str
    status: ShipmentStatus
    courier: str
    tracking: str | None
    condition: ShippingCondition
    destination: str
    dispatched_at: datetime | None
    manifest_sha256: str | None
    confirmed_at: datetime | None
    confirmation: str | None
    items: list[ShipmentLine]


class Dispatched(BaseModel):
    """What dispatch did: the shipment, the tubes consent took off it (loudly), and the
    manifest to write beside it."""

    shipment: ShipmentRead
    taken_off: dict[str, str]  # accession → why
    manifest: Manifest


def get_shipment(session: Session, code: str) -> Shipment:
    row = session.exec(select(Shipment).where(Shipment.code == code.strip().upper())).first()
    if row is None:
        raise NotFound(f"no shipment {code.strip()!r}", field="shipment", value=code)
    return row


def _items(session: Session, shipment: Shipment) -> list[tuple[ShipmentItem, Specimen]]:
    return list(
        session.exec(
            select(ShipmentItem, Specimen)
            .join(Specimen, col(Specimen.id) == ShipmentItem.specimen_id)
            .where(ShipmentItem.shipment_id == shipment.id)
            .order_by(
                col(ShipmentItem.box_no), col(ShipmentItem.box_row), col(ShipmentItem.box_col)
            )
        ).all()
    )


def shipment_read(session: Session, shipment: Shipment) -> ShipmentRead:
    request = session.get_one(SpecimenRequest, shipment.request_id)
    return ShipmentRead(
        code=shipment.code, request=request.code, status=shipment.status,
        courier=shipment.courier, tracking=shipment.tracking, condition=shipment.condition,
        destination=f"{request.destination_institution}; {request.destination_address}; "
        f"{request.destination_contact}",
        dispatched_at=shipment.dispatched_at, manifest_sha256=shipment.manifest_sha256,
        confirmed_at=shipment.confirmed_at, confirmation=shipment.confirmation,
        items=[
            ShipmentLine(
                accession_id=tube.accession_id, specimen_type=tube.specimen_type,
                quantity=item.quantity, unit=tube.unit.value, box_no=item.box_no,
                position=box_place(item.box_row, item.box_col, shipment.box_cols),
                ship_code=item.ship_code,
                status=item.status,
                note=item.note,
            )
            for item, tube in _items(session, shipment)
        ],
    )  # fmt: skip


def _new_code(session: Session) -> str:
    prefix = f"SHP-{date.today().year}-"
    taken = session.execute(
        sa.select(func.count()).where(col(Shipment.code).startswith(prefix))
    ).scalar_one()
    return f"{prefix}{taken + 1:04d}"


def create_shipment(
    session: Session,
    *,
    actor: Actor,
    request: str,
    courier: str,
    condition: ShippingCondition | str,
    tracking: str | None = None,
    box_rows: int = 9,
    box_cols: int = 9,
) -> ShipmentRead:
    """An open shipment for an approved request, to pack its picked tubes into."""
    require(actor, Permission.move)
    asked = get_request(session, request)
    if asked.status not in PICKABLE:
        raise InvalidTransition(
            f"request {asked.code} is {asked.status.value.replace('_', ' ')}: only an approved "
            "request is shipped", field="request", value=asked.code,
        )  # fmt: skip
    if not courier or not courier.strip():
        raise ValidationError("a shipment names its courier", field="courier")
    try:
        kind = ShippingCondition(condition)
    except ValueError:
        allowed = ", ".join(ShippingCondition)
        raise ValidationError(f"unknown shipping condition {condition!r} (allowed: {allowed})",
                              field="condition", value=condition) from None  # fmt: skip
    if not (1 <= box_rows <= 26 and 1 <= box_cols <= 26):
        raise ValidationError("a shipping box is 1-26 rows by 1-26 columns", field="box_rows")
    assert asked.id is not None
    row = Shipment(
        code=_new_code(session), request_id=asked.id, courier=courier.strip(),
        tracking=(tracking or "").strip() or None, condition=kind, box_rows=box_rows,
        box_cols=box_cols, created_by_id=actor.user_id,
    )  # fmt: skip
    session.add(row)
    flush(session)
    audit.record(session, actor=actor, action="shipment.create", entity="shipment",
                 entity_id=row.id, after=audit.snapshot(row) | {"request": asked.code})  # fmt: skip
    return shipment_read(session, row)


def _open(session: Session, code: str) -> Shipment:
    shipment = get_shipment(session, code)
    if shipment.status is not ShipmentStatus.open:
        raise InvalidTransition(f"shipment {shipment.code} is {shipment.status.value}",
                                field="shipment", value=shipment.code)  # fmt: skip
    return shipment


def pack(session: Session, *, actor: Actor, code: str, accessions: list[str]) -> ShipmentRead:
    """Put picked tubes of the shipment's request into it, each at the next free place of its
    shipping boxes; a tube that is not picked for the request is refused, naming it."""
    require(actor, Permission.move)
    shipment = _open(session, code)
    request = session.get_one(SpecimenRequest, shipment.request_id)
    taken = {
        (i.box_no, i.box_row, i.box_col)
        for i in session.exec(select(ShipmentItem).where(ShipmentItem.shipment_id == shipment.id))
    }
    places = (
        (box, r, c)
        for box in range(1, 10_000)
        for r in range(1, shipment.box_rows + 1)
        for c in range(1, shipment.box_cols + 1)
        if (box, r, c) not in taken
    )
    for accession in accessions:
        tube = get_specimen(session, accession)
        held = reservations.standing_reservation(session, tube)
        if held is None or held.request_id != request.id or held.picked_at is None:
            why = "not picked" if held is not None and held.request_id == request.id else (
                f"reserved for {held.request}" if held is not None else tube.status.value
            )  # fmt: skip
            raise ValidationError(
                f"{tube.accession_id} cannot go in {shipment.code}: {why} (only tubes picked "
                f"for {request.code} are packed)", field="specimen", value=tube.accession_id,
            )  # fmt: skip
        packed = session.exec(
            select(ShipmentItem.shipment_id).where(
                ShipmentItem.specimen_id == tube.id,
                col(ShipmentItem.status) != ShipmentItemStatus.withdrawn,
            )
        ).first()
        if packed is not None:
            other = session.get_one(Shipment, packed).code
            raise ValidationError(f"{tube.accession_id} is packed in {other} already",
                                  field="specimen", value=tube.accession_id)  # fmt: skip
        box, r, c = next(places)
        assert shipment.id is not None and tube.id is not None
        ship_code = export_code(request.code_key, "S", tube.id) if request.relabel else None
        item = ShipmentItem(shipment_id=shipment.id, specimen_id=tube.id, box_no=box,
                            box_row=r, box_col=c, quantity=tube.quantity,
                            ship_code=ship_code)  # fmt: skip
        session.add(item)
        flush(session)
        audit.record(session, actor=actor, action="shipment.pack", entity="shipment_item",
                     entity_id=item.id, after=audit.snapshot(item) | {
                         "shipment": shipment.code, "accession_id": tube.accession_id})  # fmt: skip
    return shipment_read(session, shipment)


def _unshipped(session: Session, request: SpecimenRequest, shipment: Shipment) -> list[str]:
    """The request's reserved tubes that are not in this shipment: not picked, or not packed."""
    packed = sa.select(col(ShipmentItem.specimen_id)).where(
        col(ShipmentItem.shipment_id) == shipment.id
    )
    return list(
        session.execute(
            sa.select(col(Specimen.accession_id))
            .join(SpecimenReservation, col(SpecimenReservation.specimen_id) == Specimen.id)
            .where(
                col(SpecimenReservation.request_id) == request.id,
                reservations.STANDING,
                col(Specimen.id).not_in(packed),
            )
            .order_by(col(Specimen.accession_id))
        ).scalars()
    )


def dispatch(session: Session, *, actor: Actor, code: str, part: bool = False) -> Dispatched:
    """Send a packed shipment (see the module): consent asked as of today, tubes it no longer
    allows taken off; the rest distributed; the manifest made."""
    require(actor, Permission.move)
    shipment = _open(session, code)
    request = session.get_one(SpecimenRequest, shipment.request_id)
    rows = _items(session, shipment)
    if not rows:
        raise ValidationError(f"shipment {shipment.code} is empty", field="shipment",
                              value=shipment.code)  # fmt: skip
    left = _unshipped(session, request, shipment)
    if left and not part:
        raise ValidationError(
            f"{len(left)} tube{'s' if len(left) != 1 else ''} of {request.code} not picked and "
            f"packed (first {left[0]}): pack them, or send a part shipment (--part)",
            field="shipment", value=shipment.code,
        )  # fmt: skip
    decisions = consent_decisions(
        session, participant_ids={t.participant_id for _, t in rows}, uses=request.uses,
        as_of=date.today(),
    )  # fmt: skip
    taken_off: dict[str, str] = {}
    recipient = request.destination_institution
    for item, tube in rows:
        decision = decisions[tube.participant_id]
        if not decision.allowed:
            why = (
                f"CONSENT {decision.reason().upper()} as of {date.today()}: taken off, put it back"
            )
            held = reservations.standing_reservation(session, tube)
            if held is not None:
                off = f"taken off {shipment.code}: {decision.reason()}"
                reservations.give_back(session, actor=actor, reservation=held, specimen=tube,
                                       why=off)  # fmt: skip
            with audit.audited(session, item, actor=actor, action="shipment.take_off",
                               entity="shipment_item", reason=why):  # fmt: skip
                item.status, item.note = ShipmentItemStatus.withdrawn, why
            taken_off[tube.accession_id] = why
            continue
        custody.distribute(
            session, actor=actor, accession=tube.accession_id, recipient=recipient,
            uses=request.uses, reason=f"shipment {shipment.code} for {request.code}",
        )  # fmt: skip
        with audit.audited(session, item, actor=actor, action="shipment.dispatch_item",
                           entity="shipment_item", reason=shipment.code):  # fmt: skip
            item.status = ShipmentItemStatus.dispatched
    if len(taken_off) == len(rows):
        raise ValidationError(
            f"every tube of {shipment.code} was taken off (consent): nothing to send",
            field="shipment", value=shipment.code,
        )  # fmt: skip
    manifest = manifest_of(session, shipment=shipment, request=request)
    with audit.audited(session, shipment, actor=actor, action="shipment.dispatch",
                       entity="shipment", reason=f"for {request.code}"):  # fmt: skip
        shipment.status = ShipmentStatus.dispatched
        shipment.dispatched_at, shipment.dispatched_by_id = utcnow(), actor.user_id
        shipment.manifest_sha256 = manifest.sha256
    if not _unshipped(session, request, shipment) and not left:
        move(session, actor=actor, request=request, to=RequestStatus.fulfilled,
             reason=f"shipped in {shipment.code}")  # fmt: skip
    return Dispatched(
        shipment=shipment_read(session, shipment), taken_off=taken_off, manifest=manifest
    )


def sent_manifest(session: Session, *, actor: Actor, code: str) -> Manifest:
    """A sent shipment's manifest made again, the same as sent (its SHA-256 checked)."""
    require(actor, Permission.view_inventory)
    shipment = get_shipment(session, code)
    if shipment.manifest_sha256 is None:
        raise InvalidTransition(f"shipment {shipment.code} is not sent", field="shipment",
                                value=shipment.code)  # fmt: skip
    request = session.get_one(SpecimenRequest, shipment.request_id)
    made = manifest_of(session, shipment=shipment, request=request)
    if made.sha256 != shipment.manifest_sha256:
        raise ValidationError(
            f"the manifest of {shipment.code} made now differs from the one sent "
            f"({shipment.manifest_sha256[:12]}…): its tubes' records changed since",
            field="shipment", value=shipment.code,
        )  # fmt: skip
    return made


def linked_export(
    session: Session,
    *,
    actor: Actor,
    code: str,
    directory: Path,
    formats: list[str] | None = None,
) -> ExportResult:
    """The request's phenotype export for exactly the tubes a shipment sent, de-identified
    (Safe Harbor), consent asked today as for every export, its codes the request's: the
    specimen codes its relabelled tubes ship under, the donors its manifest names. Its PI's
    (or an admin's), through the one export path."""
    require(actor, Permission.export)
    shipment = get_shipment(session, code)
    request = session.get_one(SpecimenRequest, shipment.request_id)
    refuse_others(actor, request)
    if shipment.dispatched_at is None:
        raise InvalidTransition(f"shipment {shipment.code} is not sent", field="shipment",
                                value=shipment.code)  # fmt: skip
    statuses = [s.value for s in SpecimenStatus]
    asked = ExportRequest.model_validate(
        {"query": CohortQuery(shipment=shipment.code, statuses=statuses), "uses": request.uses}
        | ({"formats": formats} if formats else {})
    )
    return run_export(
        session, actor=actor, request=asked, directory=directory, code_key=request.code_key
    )


def confirm_delivery(session: Session, *, actor: Actor, code: str, note: str) -> ShipmentRead:
    """Record the receiver's confirmation (what they said: all received, one missing…)."""
    require(actor, Permission.move)
    shipment = get_shipment(session, code)
    if shipment.status is not ShipmentStatus.dispatched:
        raise InvalidTransition(f"shipment {shipment.code} is {shipment.status.value}",
                                field="shipment", value=shipment.code)  # fmt: skip
    if not note or not note.strip():
        raise ValidationError("a confirmation says what the receiver reported", field="note")
    with audit.audited(session, shipment, actor=actor, action="shipment.confirm",
                       entity="shipment", reason=note.strip()):  # fmt: skip
        shipment.status = ShipmentStatus.delivered
        shipment.confirmed_at, shipment.confirmation = utcnow(), note.strip()
    return shipment_read(session, shipment)


def receive_return(
    session: Session,
    *,
    actor: Actor,
    code: str,
    accession: str,
    destination: str,
    quantity: float | None = None,
    position: str | None = None,
    thaws: int = 0,
    reason: str | None = None,
) -> ShipmentLine:
    """A tube of a sent shipment come back (unused, or what is left): available again with the
    quantity that came back (None: all that was sent) and the thaws it went through, stored
    at `destination`; each step a custody event. The tube is named by its ID here or by the
    label it shipped under (a relabelled request's `S-…`, as it comes back). Only a tube this
    shipment sent comes back against it."""
    require(actor, Permission.move)
    shipment = get_shipment(session, code)
    shipped = session.exec(
        select(ShipmentItem).where(
            ShipmentItem.shipment_id == shipment.id,
            ShipmentItem.ship_code == accession.strip().upper(),
        )
    ).first()
    tube = (
        session.get_one(Specimen, shipped.specimen_id)
        if shipped is not None
        else get_specimen(session, accession)
    )
    item = (
        shipped
        or session.exec(
            select(ShipmentItem).where(
                ShipmentItem.shipment_id == shipment.id, ShipmentItem.specimen_id == tube.id
            )
        ).first()
    )
    if item is None or item.status is not ShipmentItemStatus.dispatched:
        why = "was not sent in it" if item is None else f"is {item.status.value}"
        raise ValidationError(f"{tube.accession_id} {why}: no return against {shipment.code}",
                              field="specimen", value=tube.accession_id)  # fmt: skip
    if tube.status is not RETURNED_FROM:
        raise InvalidTransition(f"{tube.accession_id} is {tube.status.value}, not distributed",
                                field="status", value=tube.status.value)  # fmt: skip
    quantity = item.quantity if quantity is None else positive_quantity(quantity, "quantity")
    if quantity > item.quantity + 1e-9:
        raise ValidationError(
            f"{tube.accession_id} came back with {quantity:g}, more than the {item.quantity:g} "
            "sent", field="quantity", value=quantity,
        )  # fmt: skip
    if not 0 <= thaws <= 50:
        raise ValidationError("thaws is 0-50", field="thaws", value=thaws)
    why = reason or f"returned from {shipment.code}"
    with audit.audited(session, tube, actor=actor, action="specimen.return",
                       entity="specimen", reason=why):  # fmt: skip
        before = tube.status.value
        tube.status = SpecimenStatus.available
        tube.quantity, tube.freeze_thaw_count = quantity, tube.freeze_thaw_count + thaws
        tube.updated_at = utcnow()
        record_event(
            session, actor=actor, specimen=tube, event_type="returned", status_before=before,
            quantity_change=round(quantity - item.quantity, 6), reason=why,
            details={"shipment": shipment.code, "thaws": thaws},
        )  # fmt: skip
    custody.move(session, actor=actor, accession=tube.accession_id, destination=destination,
                 position=position, reason=why)  # fmt: skip
    with audit.audited(session, item, actor=actor, action="shipment.return",
                       entity="shipment_item", reason=why):  # fmt: skip
        item.status, item.note = ShipmentItemStatus.returned, f"{quantity:g} came back"
    return next(
        i for i in shipment_read(session, shipment).items if i.accession_id == tube.accession_id
    )


def show_shipment(session: Session, *, actor: Actor, code: str) -> ShipmentRead:
    require(actor, Permission.view_inventory)
    return shipment_read(session, get_shipment(session, code))


def list_shipments(
    session: Session, *, actor: Actor, request: str | None = None
) -> list[ShipmentRead]:
    require(actor, Permission.view_inventory)
    query = select(Shipment).order_by(col(Shipment.created_at), col(Shipment.id))
    if request:
        query = query.where(Shipment.request_id == get_request(session, request).id)
    return [shipment_read(session, s) for s in session.exec(query).all()]
