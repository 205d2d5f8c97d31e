"""Shipments: the tubes of a specimen request packed into shipping boxes, sent by courier with a
manifest, and the receiver's confirmation."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import ShipmentItemStatus, ShipmentStatus, ShippingCondition
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
    status: ShipmentItemStatus = Field(
        default=ShipmentItemStatus.packed, sa_type=enum_type(ShipmentItemStatus)
    )
    note: str | None = None
