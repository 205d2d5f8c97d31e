"""What the biobank's requests stand at, for its managers: open requests and how long they have
waited, what each PI has received, tubes out with whom, and reservations about to expire."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, func

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import RequestStatus, ShipmentItemStatus
from biobank.models import (
    Shipment,
    ShipmentItem,
    SpecimenRequest,
    SpecimenReservation,
    User,
    utcnow,
)
from biobank.services.requests import OPEN, age_days
from biobank.services.reservations import STANDING


class OpenRequest(BaseModel):
    code: str
    status: RequestStatus
    requester: str
    age_days: int
    needed_by: date | None
    overdue: bool  # past its needed-by day


class Received(BaseModel):
    requester: str
    requests_fulfilled: int
    shipments: int
    tubes: int


class TubesOut(BaseModel):
    institution: str
    shipments: int
    tubes: int  # sent and not come back


class Expiring(BaseModel):
    request: str
    tubes: int
    first_expiry: datetime


class RequestsReport(BaseModel):
    as_of: date
    open: list[OpenRequest]
    received: list[Received]
    out: list[TubesOut]
    expiring: list[Expiring]


def requests_report(
    session: Session, *, actor: Actor, within_days: int = 7, now: datetime | None = None
) -> RequestsReport:
    """The report (see the module); `within_days`: how soon a reservation's expiry counts."""
    require(actor, Permission.review_requests)
    now = now or utcnow()
    today = now.date()
    names = dict(session.execute(sa.select(col(User.id), col(User.username))).all())
    rows = session.execute(
        sa.select(SpecimenRequest).where(col(SpecimenRequest.status).in_(OPEN))
        .order_by(col(SpecimenRequest.created_at))
    ).scalars()  # fmt: skip
    opened = [
        OpenRequest(
            code=r.code, status=r.status, requester=names.get(r.requester_id, "?"),
            age_days=age_days(r.created_at), needed_by=r.needed_by,
            overdue=r.needed_by is not None and r.needed_by < today,
        )
        for r in rows
    ]  # fmt: skip
    sent = (
        sa.select(
            col(SpecimenRequest.requester_id),
            col(SpecimenRequest.id),
            col(Shipment.id),
            col(SpecimenRequest.destination_institution),
            col(SpecimenRequest.status),
            col(ShipmentItem.status),
        )
        .join(Shipment, col(Shipment.request_id) == SpecimenRequest.id)
        .join(ShipmentItem, col(ShipmentItem.shipment_id) == Shipment.id)
        .where(col(Shipment.dispatched_at).is_not(None))
    )
    by_pi: dict[int, tuple[set[int], set[int], int]] = defaultdict(lambda: (set(), set(), 0))
    by_place: dict[str, tuple[set[int], int]] = defaultdict(lambda: (set(), 0))
    shipped = {ShipmentItemStatus.dispatched, ShipmentItemStatus.returned}
    for pi, request_id, shipment_id, place, status, item in session.execute(sent):
        if item not in shipped:
            continue
        fulfilled, shipments, tubes = by_pi[pi]
        if status is RequestStatus.fulfilled:
            fulfilled.add(request_id)
        shipments.add(shipment_id)
        by_pi[pi] = (fulfilled, shipments, tubes + 1)
        if item is ShipmentItemStatus.dispatched:
            places, out = by_place[place]
            places.add(shipment_id)
            by_place[place] = (places, out + 1)
    soon = now + timedelta(days=within_days)
    expiring = session.execute(
        sa.select(
            col(SpecimenReservation.request), func.count(), func.min(SpecimenReservation.expires_at)
        )
        .where(
            STANDING,
            col(SpecimenReservation.picked_at).is_(None),
            col(SpecimenReservation.expires_at) <= soon,
        )
        .group_by(col(SpecimenReservation.request))
        .order_by(func.min(SpecimenReservation.expires_at))
    ).all()
    return RequestsReport(
        as_of=today,
        open=opened,
        received=[
            Received(requester=names.get(pi, "?"), requests_fulfilled=len(f), shipments=len(s),
                     tubes=t)
            for pi, (f, s, t) in sorted(by_pi.items(), key=lambda kv: names.get(kv[0], ""))
        ],
        out=[
            TubesOut(institution=place, shipments=len(s), tubes=n)
            for place, (s, n) in sorted(by_place.items())
        ],
        expiring=[Expiring(request=r, tubes=n, first_expiry=e) for r, n, e in expiring],
    )  # fmt: skip
