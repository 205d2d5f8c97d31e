"""Shipments: the tubes of a specimen request packed into shipping boxes, sent by courier with a
manifest, and the receiver's confirmation."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import (
    ReceiptItemStatus,
    ShipmentItemStatus,
    ShipmentStatus,
    ShippingCondition,
)
from biobank.models.base import Table, enum_type, utcnow


class Shipment(Table, table=True):
    """One consignment: of which request, by which courier and tracking number, in what
    condition; when it was sent and by whom, the manifest's SHA-256, and the receiver's
    confirmation."""

    __tablename__ = "shipment"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)  # SHP-2026-0001
    request_id: int = Field(foreign_key="specimen_request.id", index=True, ondelete="RESTRICT")
    status: ShipmentStatus = Field(default=ShipmentStatus.open, sa_type=enum_type(ShipmentStatus))
    courier: str = Field(max_length=120)
    tracking: str | None = Field(default=None, max_length=120)
    condition: ShippingCondition = Field(sa_type=enum_type(ShippingCondition))
    box_rows: int = 9  # the shipping boxes' grid
    box_cols: int = 9
    created_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)
    dispatched_by_id: int | None = Field(
        default=None, foreign_key="app_user.id", ondelete="RESTRICT"
    )
    dispatched_at: datetime | None = None
    manifest_sha256: str | None = Field(default=None, max_length=64)
    confirmed_at: datetime | None = None
    confirmation: str | None = None  # what the receiver said


class ShipmentItem(Table, table=True):
    """A tube in a shipment, at its place in a shipping box, with the quantity sent."""

    __tablename__ = "shipment_item"
    __table_args__ = (
        sa.UniqueConstraint("shipment_id", "specimen_id"),
        sa.UniqueConstraint("shipment_id", "box_no", "box_row", "box_col"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipment.id", ondelete="RESTRICT")
    specimen_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")
    box_no: int
    box_row: int
    box_col: int
    quantity: float
    ship_code: str | None = Field(default=None, max_length=32)  # its label's, when relabelled
    status: ShipmentItemStatus = Field(
        default=ShipmentItemStatus.packed, sa_type=enum_type(ShipmentItemStatus)
    )
    note: str | None = None


class Receipt(Table, table=True):
    """A shipment received from another biobank, by its manifest (whose SHA-256 makes receiving
    it twice impossible), its tubes accessioned into `study` as they are scanned in."""

    __tablename__ = "receipt"

    id: int | None = Field(default=None, primary_key=True)
    shipment_code: str = Field(max_length=32, index=True)  # the sender's
    request_code: str = Field(max_length=32)
    manifest_sha256: str = Field(max_length=64, unique=True)
    study_id: int = Field(foreign_key="study.id", ondelete="RESTRICT")
    received_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    received_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None


class ReceiptItem(Table, table=True):
    """A tube of a received shipment: as the manifest gives it, what became of it, and the
    specimen it was accessioned as."""

    __tablename__ = "receipt_item"
    __table_args__ = (sa.UniqueConstraint("receipt_id", "sender_accession"),)

    id: int | None = Field(default=None, primary_key=True)
    receipt_id: int = Field(foreign_key="receipt.id", ondelete="RESTRICT")
    sender_accession: str = Field(max_length=64)
    donor: str | None = Field(default=None, max_length=32)
    specimen_type: str | None = Field(default=None, max_length=3)
    sprec_code: str | None = Field(default=None, max_length=40)
    quantity: float | None = None
    unit: str | None = Field(default=None, max_length=8)
    freeze_thaw_count: int = 0
    status: ReceiptItemStatus = Field(
        default=ReceiptItemStatus.expected, sa_type=enum_type(ReceiptItemStatus)
    )
    specimen_id: int | None = Field(default=None, foreign_key="specimen.id", ondelete="RESTRICT")
