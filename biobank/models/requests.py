"""Specimen requests: what a PI asks the biobank for, line by line, and each change of its
state. The tubes an approval sets aside are reservations (`SpecimenReservation`) naming the
request and the line they satisfy."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import RequestLineStatus, RequestStatus, RequestTake
from biobank.models.base import Table, enum_type, utcnow


class SpecimenRequest(Table, table=True):
    """A PI's request: which specimens (a cohort query, kept as it was when the request was
    made, or a list of tubes: `RequestedSpecimen`), for which uses (consent statements) and
    project, under which approvals (IRB; data use or material transfer agreement, each with
    its expiry), by when and to where; and the reviewer's decision."""

    __tablename__ = "specimen_request"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)  # REQ-2026-0001
    title: str = Field(max_length=200)
    requester_id: int = Field(foreign_key="app_user.id", index=True, ondelete="RESTRICT")
    status: RequestStatus = Field(
        default=RequestStatus.draft, sa_type=enum_type(RequestStatus), index=True
    )
    saved_query: str | None = Field(default=None, max_length=120)  # the name it came from
    cohort_query: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
    uses: list[str] = Field(sa_type=sa.JSON())
    project: str = Field(max_length=200)
    irb_reference: str = Field(max_length=120)
    irb_expires_on: date
    agreement_reference: str | None = Field(default=None, max_length=120)  # DUA or MTA
    agreement_expires_on: date | None = None
    needed_by: date | None = None
    destination_institution: str = Field(max_length=200)
    destination_address: str = Field(max_length=500)
    destination_contact: str = Field(max_length=200)
    relabel: bool = False  # ship under the export's codes, never our accession IDs
    # the secret its shipments' codes are made with (tubes relabelled, donors on manifests, the
    # linked exports): the same codes in every shipment and export of the request
    code_key: str = Field(max_length=64)
    reservation_days: int = 30  # how long approved tubes stay reserved unpicked
    reviewer_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    decided_at: datetime | None = None
    decision_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RequestLine(Table, table=True):
    """One want of a request: tubes of a type, at least a quantity each (or, for aliquots, so
    many of a volume), one per participant or all of them; or (no type) the tubes listed."""

    __tablename__ = "request_line"
    __table_args__ = (sa.UniqueConstraint("request_id", "line_no"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="specimen_request.id", ondelete="RESTRICT")
    line_no: int
    specimen_type: str | None = Field(default=None, max_length=32)
    min_quantity: float | None = None
    aliquots: int | None = None  # so many aliquots…
    aliquot_volume: float | None = None  # …of this volume each, split from the tube at picking
    take: RequestTake = Field(default=RequestTake.one, sa_type=enum_type(RequestTake))
    status: RequestLineStatus = Field(
        default=RequestLineStatus.pending, sa_type=enum_type(RequestLineStatus)
    )
    decision_reason: str | None = None
    approved_tubes: int = 0


class RequestedSpecimen(Table, table=True):
    """A tube a request names by its accession ID (a request of a list, not a cohort)."""

    __tablename__ = "requested_specimen"
    __table_args__ = (sa.UniqueConstraint("request_id", "specimen_id"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="specimen_request.id", ondelete="RESTRICT")
    specimen_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")


class RequestEvent(Table, table=True):
    """A change of a request's state: who, when, why, from what to what."""

    __tablename__ = "request_event"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="specimen_request.id", index=True, ondelete="RESTRICT")
    status_before: str | None = Field(default=None, max_length=32)
    status_after: str = Field(max_length=32)
    actor_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    workstation: str | None = Field(default=None, max_length=120)
    occurred_at: datetime = Field(default_factory=utcnow)
    reason: str | None = None
    details: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
