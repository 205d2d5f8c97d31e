"""Specimens and what happens to them: serials, accessions reserved for kits, reservations for
requests, pools' sources and the custody history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import declared_attr
from sqlmodel import Field

from biobank.domain.vocabulary import QuantityUnit, SpecimenKind, SpecimenStatus
from biobank.models.base import Table, enum_type, utcnow


class SerialCounter(Table, table=True):
    """Specimen serials on SQLite (PostgreSQL uses the `specimen_serial` sequence).

    A serial handed out in a transaction that rolls back is burned afterwards, never reissued.
    """

    __tablename__ = "serial_counter"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32, unique=True)
    next_value: int = 1


class Specimen(Table, table=True):
    __table_args__ = (
        sa.UniqueConstraint("box_id", "position_row", "position_col"),
        sa.CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        sa.CheckConstraint("initial_quantity >= 0", name="initial_quantity_not_negative"),
        sa.CheckConstraint("freeze_thaw_count >= 0", name="freeze_thaws_not_negative"),
        sa.CheckConstraint(
            "(box_id IS NULL AND position_row IS NULL AND position_col IS NULL)"
            " OR (box_id IS NOT NULL AND position_row IS NOT NULL AND position_col IS NOT NULL)",
            name="location_complete",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    accession_id: str = Field(max_length=32, unique=True)
    legacy_id: str | None = Field(default=None, max_length=64, index=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    visit_id: int | None = Field(
        default=None, foreign_key="visit.id", index=True, ondelete="RESTRICT"
    )
    parent_id: int | None = Field(
        default=None, foreign_key="specimen.id", index=True, ondelete="RESTRICT"
    )
    kind: SpecimenKind = Field(sa_type=enum_type(SpecimenKind))
    specimen_type: str = Field(max_length=3, index=True)
    container_type: str | None = Field(default=None, max_length=3)
    sprec_code: str | None = Field(default=None, max_length=40)
    collected_at: datetime | None = None
    received_at: datetime | None = None
    processed_at: datetime | None = None
    frozen_at: datetime | None = None
    precentrifugation_temperature: str | None = Field(default=None, max_length=8)
    postcentrifugation_temperature: str | None = Field(default=None, max_length=8)
    initial_quantity: float
    quantity: float
    unit: QuantityUnit = Field(sa_type=enum_type(QuantityUnit))
    status: SpecimenStatus = Field(
        default=SpecimenStatus.available, sa_type=enum_type(SpecimenStatus), index=True
    )
    freeze_thaw_count: int = 0
    checked_out_at: datetime | None = None
    minutes_out: int = 0
    box_id: int | None = Field(default=None, foreign_key="storage_unit.id", ondelete="RESTRICT")
    position_row: int | None = None
    position_col: int | None = None
    notes: str | None = None
    # Set when a consent withdrawal covers the tube: flagged, never deleted.
    consent_withdrawal_id: int | None = Field(
        default=None, foreign_key="consent_withdrawal.id", index=True, ondelete="RESTRICT"
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # Optimistic locking: an UPDATE names the version it read, so a stale edit from a
        # second terminal is refused instead of silently overwriting the first.
        return {"version_id_col": cls.__table__.c.version}


class ReservedAccession(Table, table=True):
    """An accession ID printed on a collection kit before the draw, for one participant's
    visit; accessioning the tube at receipt uses it (`specimen_id` then set)."""

    __tablename__ = "reserved_accession"

    id: int | None = Field(default=None, primary_key=True)
    accession_id: str = Field(max_length=32, unique=True)
    kit_code: str = Field(max_length=40, index=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="RESTRICT")
    visit_id: int = Field(foreign_key="visit.id", ondelete="RESTRICT")
    specimen_type: str | None = Field(default=None, max_length=3)
    reserved_at: datetime = Field(default_factory=utcnow)
    reserved_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    specimen_id: int | None = Field(
        default=None, foreign_key="specimen.id", unique=True, ondelete="RESTRICT"
    )


class SpecimenReservation(Table, table=True):
    """A tube set aside for one request, with the uses it is for. Exclusive: a tube has at
    most one standing reservation (`ended_at` empty), which the database enforces. It ends
    when it is released, when the tube is handed over, or when the tube's status leaves
    `reserved` any other way; it is never deleted."""

    __tablename__ = "specimen_reservation"
    __table_args__ = (
        sa.Index(
            "ix_specimen_reservation_standing",
            "specimen_id",
            unique=True,
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    specimen_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")
    request: str = Field(max_length=120, index=True)
    uses: list[str] = Field(sa_type=sa.JSON())
    owner_id: int = Field(foreign_key="app_user.id", ondelete="RESTRICT")
    export_run_id: int | None = Field(
        default=None, foreign_key="export_run.id", ondelete="RESTRICT"
    )
    # set by a specimen request's approval: the request, the line the tube meets, and when an
    # unpicked tube is given back
    request_id: int | None = Field(
        default=None, foreign_key="specimen_request.id", index=True, ondelete="RESTRICT"
    )
    request_line_id: int | None = Field(
        default=None, foreign_key="request_line.id", ondelete="RESTRICT"
    )
    expires_at: datetime | None = None
    # a request's tube picked from its box (scanned in hand) for shipping, by whom
    picked_at: datetime | None = None
    picked_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    reserved_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    ended_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    end_reason: str | None = None


class SpecimenPoolSource(Table, table=True):
    """The parents of a pool and how much each gave."""

    __tablename__ = "specimen_pool_source"
    __table_args__ = (sa.UniqueConstraint("pool_id", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="specimen.id", ondelete="RESTRICT")
    source_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")
    quantity_used: float


class SpecimenEvent(Table, table=True):
    """Custody history: accessioned, aliquoted, moved, checked out/in, thawed, printed…"""

    __tablename__ = "specimen_event"
    __table_args__ = (sa.Index("ix_specimen_event_history", "specimen_id", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True)
    specimen_id: int = Field(foreign_key="specimen.id", ondelete="RESTRICT")
    event_type: str = Field(max_length=32)
    occurred_at: datetime = Field(default_factory=utcnow)
    actor_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    workstation: str | None = Field(default=None, max_length=120)
    from_box_id: int | None = Field(
        default=None, foreign_key="storage_unit.id", ondelete="RESTRICT"
    )
    from_row: int | None = None
    from_col: int | None = None
    to_box_id: int | None = Field(default=None, foreign_key="storage_unit.id", ondelete="RESTRICT")
    to_row: int | None = None
    to_col: int | None = None
    quantity_change: float | None = None
    status_before: str | None = Field(default=None, max_length=32)
    status_after: str | None = Field(default=None, max_length=32)
    reason: str | None = None
    details: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())
