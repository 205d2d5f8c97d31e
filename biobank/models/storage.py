"""The storage tree: sites, freezers, shelves, racks and boxes."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.models.base import Table, enum_type, utcnow


class StorageUnit(Table, table=True):
    """One node of the storage tree (site > freezer > shelf > rack > box, kinds configurable).

    A unit sits at a position of its parent the way a tube sits at a position of its box; the
    unique constraint on (parent, row, column) makes a double-booked position impossible.
    """

    __tablename__ = "storage_unit"
    __table_args__ = (
        sa.UniqueConstraint("parent_id", "position_row", "position_col"),
        sa.UniqueConstraint("parent_id", "name"),
        sa.CheckConstraint(
            "(position_row IS NULL) = (position_col IS NULL)", name="position_complete"
        ),
        sa.CheckConstraint(
            "(grid_rows IS NULL AND grid_cols IS NULL) OR (grid_rows > 0 AND grid_cols > 0)",
            name="grid_positive",
        ),
        sa.CheckConstraint("free_slots IS NULL OR free_slots >= 0", name="free_slots_valid"),
        # Freezer-wide allocation walks this index: boxes with room, in physical order.
        sa.Index(
            "ix_storage_unit_free_boxes",
            "sort_key",
            sqlite_where=sa.text("free_slots > 0"),
            postgresql_where=sa.text("free_slots > 0"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(
        default=None, foreign_key="storage_unit.id", index=True, ondelete="RESTRICT"
    )
    kind: str = Field(max_length=32)
    name: str = Field(max_length=120)
    barcode: str = Field(max_length=64, unique=True)
    grid_rows: int | None = None
    grid_cols: int | None = None
    position_labels: PositionLabels = Field(
        default=PositionLabels.letter_number, sa_type=enum_type(PositionLabels)
    )
    position_row: int | None = None
    position_col: int | None = None
    temperature_class: str | None = Field(default=None, max_length=32)
    allowed_types: list[str] | None = Field(default=None, sa_type=sa.JSON())
    holds_specimens: bool = False
    fill_order: FillOrder = Field(default=FillOrder.row_major, sa_type=enum_type(FillOrder))
    # Maintained occupancy (boxes only): allocation never scans positions to find room.
    free_slots: int | None = None
    # Physical order in the tree, e.g. "0001.0003.0012": a subtree is a range of sort keys.
    # Compared byte by byte on PostgreSQL too ("C" collation): subtree ranges rely on '/'
    # sorting just before '0', which a language collation does not promise.
    sort_key: str = Field(
        default="",
        index=True,
        sa_type=sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql"),
    )
    # Names from the root, e.g. "-80 #3 > Shelf 1 > Rack 2 > Box 7": a tube's location is
    # one join away, which keeps scan lookups fast.
    path: str = ""
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
