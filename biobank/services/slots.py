"""Positions for tubes: finding free ones in a box or anywhere below a freezer, and keeping each
box's count of free positions in step as tubes take and leave them.

Allocation locks the box row it fills (`SELECT … FOR UPDATE`, `SKIP LOCKED` when any box of a
freezer will do), so concurrent terminals fill different boxes instead of colliding; the
unique constraint on (box, row, column) stays the final guard. Boxes keep a free-slot count,
so finding room in a freezer of thousands of boxes is one index range, not a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from biobank.db import driver_cursor, flush
from biobank.domain.positions import fill_sequence, parse_position
from biobank.errors import PositionOccupied, ValidationError
from biobank.models import Specimen, StorageUnit
from biobank.services.events import Position
from biobank.services.storage import get_unit, holder_grid, subtree_range


@dataclass(frozen=True)
class Slot:
    """A free position of a locked box."""

    box: StorageUnit
    row: int
    col: int


def lock_box(session: Session, box: StorageUnit) -> StorageUnit:
    """The box row, locked until commit on PostgreSQL (SQLite writers are serial anyway), as
    it is once locked: the copy the session read before (the destination, by barcode) is
    refreshed, as another terminal may have moved or changed the box meanwhile."""
    return session.exec(_locked_box(), params={"box": box.id}).one()


# The statements every placement runs are built once (`cache`): building one costs more than
# running it, and SQLAlchemy finds its compiled form by the statement's key.


@cache
def _locked_box() -> SelectOfScalar[StorageUnit]:
    query = select(StorageUnit).where(col(StorageUnit.id) == sa.bindparam("box"))
    return query.with_for_update().execution_options(populate_existing=True)


def check_box_accepts(box: StorageUnit, specimen_type: str) -> None:
    """Refuse a tube for a unit that is not a box, or a box that does not take its type."""
    if not box.holds_specimens:
        raise ValidationError(f"{box.barcode} is a {box.kind}, not a box", field="box")
    if box.allowed_types and specimen_type not in box.allowed_types:
        raise ValidationError(
            f"{box.barcode} takes only {', '.join(box.allowed_types)}, not {specimen_type}",
            field="specimen_type",
            value=specimen_type,
        )


def _taken(session: Session, box: StorageUnit) -> set[tuple[int | None, int | None]]:
    """The positions of a box that tubes hold, read on the driver's cursor: a box's tens of
    rows through SQLAlchemy's result layer cost more than the query. Tubes the session has
    placed and not yet written are written first, as a query through the session would."""
    flush(session)
    mark = "?" if session.get_bind().dialect.paramstyle == "qmark" else "%s"
    with driver_cursor(session) as cursor:
        cursor.execute(
            f"SELECT position_row, position_col FROM specimen WHERE box_id = {mark}", (box.id,)
        )
        return set(cursor.fetchall())


def _free_in_box(session: Session, box: StorageUnit, count: int) -> list[Slot]:
    taken = _taken(session, box)
    free = (p for p in fill_sequence(*holder_grid(box), box.fill_order))
    return [Slot(box, r, c) for r, c in free if (r, c) not in taken][:count]


def find_slots(
    session: Session,
    *,
    target: StorageUnit,
    specimen_type: str,
    count: int = 1,
    near: int | None = None,
) -> list[Slot]:
    """`count` free positions in a box, or anywhere below a rack, shelf or freezer.

    A set stays in one box when some box has room for all of it: the box `near` first (a
    parent's, so aliquots stay beside it), then the first in physical order; otherwise it
    fills boxes in physical order. Raises when there is not enough room, saying how many
    positions are free and how many needed.
    """
    if target.holds_specimens:
        box = lock_box(session, target)
        check_box_accepts(box, specimen_type)
        slots = _free_in_box(session, box, count)
        if len(slots) < count:
            raise PositionOccupied(
                f"{box.barcode} has {len(slots)} free positions, {count} needed",
                field="box",
                value=box.barcode,
            )
        return slots
    slots = _slots_near(session, target, specimen_type, count, near) if near else []
    if not slots:
        slots = _slots_below(session, target, specimen_type, count, together=True)
    if len(slots) < count:
        slots = _slots_below(session, target, specimen_type, count, together=False)
    if len(slots) < count:  # the second pass took every free position: it says how many
        raise PositionOccupied(
            f"not enough room below {target.barcode} ({target.name}): {len(slots)} free "
            f"positions for {specimen_type}, {count} needed",
            field="destination",
            value=target.barcode,
        )
    return slots


def _slots_near(
    session: Session, target: StorageUnit, specimen_type: str, count: int, box_id: int
) -> list[Slot]:
    """All `count` positions in box `box_id` (locked) if it is below `target`, takes the type
    and has room for them; otherwise none."""
    low, high = subtree_range(target)
    query = select(StorageUnit).where(
        StorageUnit.id == box_id,
        col(StorageUnit.free_slots) >= count,
        StorageUnit.sort_key >= low,
        StorageUnit.sort_key < high,
        StorageUnit.holds_specimens,
        StorageUnit.active,
    )
    box = session.exec(query.with_for_update().execution_options(populate_existing=True)).first()
    if box is None or (box.allowed_types and specimen_type not in box.allowed_types):
        return []
    return _free_in_box(session, box, count)


def _slots_below(
    session: Session, target: StorageUnit, specimen_type: str, count: int, *, together: bool
) -> list[Slot]:
    low, high = subtree_range(target)
    slots: list[Slot] = []
    passed: list[int | None] = []
    while len(slots) < count:
        params = {"need": count - len(slots) if together else 1, "low": low, "high": high}
        box = session.exec(_box_with_room(passed, wait=False), params=params).first()
        if box is None:
            # Every box with room is being filled at another terminal: wait for the first.
            box = session.exec(_box_with_room(passed, wait=True), params=params).first()
        if box is None:
            return slots
        passed.append(box.id)
        if box.allowed_types and specimen_type not in box.allowed_types:
            continue
        slots += _free_in_box(session, box, count - len(slots))
        if together and len(slots) < count:
            return slots
    return slots


def _box_with_room(passed: list[int | None], *, wait: bool) -> SelectOfScalar[StorageUnit]:
    """The first box in physical order in [low, high) with room for `need` tubes but those
    `passed`, locked: skipping those locked elsewhere, or (`wait`) waiting for them."""
    query = _room_query(wait)
    return query.where(col(StorageUnit.id).not_in(passed)) if passed else query


@cache
def _room_query(wait: bool) -> SelectOfScalar[StorageUnit]:
    query = (
        select(StorageUnit)
        .where(
            # the partial index's condition, written out: bound as a parameter, the planners
            # could not match it (PostgreSQL's generic plan of a prepared statement then
            # walked the whole freezer's full boxes, ~3 ms at 12,000)
            col(StorageUnit.free_slots) > sa.literal_column("0"),
            col(StorageUnit.free_slots) >= sa.bindparam("need"),
            StorageUnit.sort_key >= sa.bindparam("low"),
            StorageUnit.sort_key < sa.bindparam("high"),
            StorageUnit.holds_specimens,
            StorageUnit.active,
        )
        .order_by(StorageUnit.sort_key)
        .limit(1)
    )
    return query.with_for_update(skip_locked=not wait)


def resolve_destination(
    session: Session,
    *,
    destination: str,
    position: str | None,
    specimen_type: str,
    count: int = 1,
    near: int | None = None,
) -> list[Slot]:
    """A box (and position), or a rack/shelf/freezer to auto-allocate in (`find_slots`)."""
    target = get_unit(session, destination, field="destination")
    if position is None:
        return find_slots(
            session, target=target, specimen_type=specimen_type, count=count, near=near
        )
    if count != 1:
        raise ValidationError("give a position for one tube only", field="position")
    box = lock_box(session, target)
    check_box_accepts(box, specimen_type)
    rows, cols = holder_grid(box)
    row, column = parse_position(position, rows=rows, cols=cols, scheme=box.position_labels)
    occupant = session.exec(
        select(Specimen.accession_id).where(
            Specimen.box_id == box.id,
            Specimen.position_row == row,
            Specimen.position_col == column,
        )
    ).first()
    if occupant is not None:
        raise PositionOccupied(
            f"{box.barcode} {position.upper()} is occupied by {occupant}",
            field="position",
            value=position,
        )
    return [Slot(box, row, column)]


def new_tube_slots(
    session: Session,
    *,
    destination: str | None,
    position: str | None,
    specimen_type: str,
    count: int,
    near: int | None = None,
) -> Sequence[Slot | None]:
    """Where `count` new tubes go (`resolve_destination`); with no destination they are made
    unplaced, a None each."""
    if destination is None:
        if position is not None:
            raise ValidationError("a position needs a box", field="position", value=position)
        return [None] * count
    return resolve_destination(
        session,
        destination=destination,
        position=position,
        specimen_type=specimen_type,
        count=count,
        near=near,
    )


def adjust_free_slots(session: Session, box_id: int, delta: int) -> None:
    """Keep a box's count of free positions in step as a tube leaves (+1) or takes (-1) a
    position, so finding room never scans the positions. A copy of the box the session
    holds counts alike (as an ORM update would keep it)."""
    session.execute(_count_free(), {"box": box_id, "delta": delta})
    held: Any = session.identity_map.get(identity_key(StorageUnit, box_id))
    if held is not None and "free_slots" in held.__dict__ and held.free_slots is not None:
        set_committed_value(held, "free_slots", held.free_slots + delta)


@cache
def _count_free() -> sa.Update:
    units = StorageUnit.__table__
    return (
        sa.update(units)
        .where(units.c.id == sa.bindparam("box"))
        .values(free_slots=units.c.free_slots + sa.bindparam("delta"))
    )


def position_of(specimen: Specimen) -> Position:
    return (specimen.box_id, specimen.position_row, specimen.position_col)


def occupy(session: Session, specimen: Specimen, slot: Slot) -> None:
    """Put a tube at a free slot and count the slot taken (the caller saves the tube)."""
    assert slot.box.id is not None  # a locked box is a stored row
    specimen.box_id, specimen.position_row, specimen.position_col = (
        slot.box.id,
        slot.row,
        slot.col,
    )
    adjust_free_slots(session, slot.box.id, -1)


def vacate(session: Session, specimen: Specimen) -> Position:
    """Take a tube out of its position, if it has one, and count the position free; returns
    the position it left (the caller saves the tube)."""
    old = position_of(specimen)
    if specimen.box_id is not None:
        adjust_free_slots(session, specimen.box_id, +1)
        specimen.box_id = specimen.position_row = specimen.position_col = None
    return old
