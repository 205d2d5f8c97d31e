"""The storage tree (site > freezer > shelf > rack > box) and its grids.

Units sit at positions of their parent as tubes sit at positions of a box. Each unit keeps a
`sort_key` (its physical place in the tree) so a subtree is one index range, and each box keeps
`free_slots` so allocation never scans positions to find room.
"""

from __future__ import annotations

import uuid
from functools import cache, partial
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from biobank.db import flush
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.positions import fill_sequence, parse_position, position_label
from biobank.domain.vocabulary import FillOrder, PositionLabels
from biobank.errors import AlreadyExists, NotFound, PositionOccupied, ValidationError
from biobank.models import Specimen, StorageUnit
from biobank.services import audit
from biobank.services.events import record_event

BARCODE_PREFIX = {"site": "ST", "freezer": "FR", "shelf": "SH", "rack": "RK", "box": "BX"}
SPECIMEN_HOLDERS = frozenset({"box"})


class UnitRead(BaseModel):
    id: int
    kind: str
    name: str
    barcode: str
    path: str
    parent_barcode: str | None
    position: str | None
    grid: str | None
    holds_specimens: bool
    capacity: int | None
    free_slots: int | None
    temperature_class: str | None
    allowed_types: list[str] | None


class TreeNode(BaseModel):
    depth: int
    unit: UnitRead


class BoxCell(BaseModel):
    row: int
    col: int
    label: str
    accession_id: str | None = None
    specimen_type: str | None = None
    status: str | None = None


class BoxView(BaseModel):
    unit: UnitRead
    rows: int
    cols: int
    cells: list[BoxCell]


def get_unit(session: Session, barcode: str, *, field: str = "unit") -> StorageUnit:
    """The storage unit with this barcode (any case), or NotFound naming `field`."""
    unit = session.exec(_by_barcode(), params={"barcode": barcode.strip().upper()}).first()
    if unit is None:
        raise NotFound(f"no storage unit with barcode {barcode!r}", field=field, value=barcode)
    return unit


@cache
def _by_barcode() -> SelectOfScalar[StorageUnit]:
    """Built once: every accession into a destination asks for its unit."""
    return select(StorageUnit).where(StorageUnit.barcode == sa.bindparam("barcode"))


def grid_of(unit: StorageUnit) -> tuple[int, int] | None:
    """A unit's (rows, columns), or None when it has no grid (the schema sets both or neither)."""
    if unit.grid_rows is None or unit.grid_cols is None:
        return None
    return unit.grid_rows, unit.grid_cols


def holder_grid(unit: StorageUnit) -> tuple[int, int]:
    """The grid of a unit that has one: a box (one that holds tubes is made with a grid), or
    the parent a unit has a position in."""
    grid = grid_of(unit)
    if grid is None:
        raise ValidationError(f"{unit.barcode} has no grid", field="grid", value=unit.barcode)
    return grid


PATH_SEPARATOR = " > "


Selecting = TypeVar("Selecting", bound=sa.Select[*tuple[Any, ...]])


def in_freezer_order(query: Selecting) -> Selecting:
    """`query` (over specimens) in the order a technician walks the freezers: freezer, shelf,
    rack, box (the storage tree's sort key), then position; unplaced tubes last. A list in
    this order opens each box once (the pull list, a request's pick list)."""
    return query.outerjoin(StorageUnit, col(StorageUnit.id) == Specimen.box_id).order_by(
        col(StorageUnit.sort_key).is_(None),
        col(StorageUnit.sort_key),
        col(Specimen.position_row),
        col(Specimen.position_col),
        col(Specimen.accession_id),
    )


def unit_read(session: Session, unit: StorageUnit) -> UnitRead:
    """A unit as returned to callers (a stored one: it has its id), with its position in its
    parent as a label."""
    assert unit.id is not None
    parent = session.get(StorageUnit, unit.parent_id) if unit.parent_id else None
    position = None
    if parent is not None and unit.position_row is not None and unit.position_col is not None:
        position = position_label(
            unit.position_row,
            unit.position_col,
            cols=holder_grid(parent)[1],
            scheme=parent.position_labels,
        )
    grid = grid_of(unit)
    return UnitRead(
        id=unit.id,
        kind=unit.kind,
        name=unit.name,
        barcode=unit.barcode,
        path=unit.path,
        parent_barcode=parent.barcode if parent else None,
        position=position,
        grid=f"{grid[0]}x{grid[1]}" if grid else None,
        holds_specimens=unit.holds_specimens,
        capacity=grid[0] * grid[1] if grid else None,
        free_slots=unit.free_slots,
        temperature_class=unit.temperature_class,
        allowed_types=unit.allowed_types,
    )


def _segment(unit: StorageUnit) -> str:
    if unit.position_row is not None:
        return f"{unit.position_row:03d}{unit.position_col:03d}"
    return f"z{unit.id:07d}"


def subtree_range(unit: StorageUnit) -> tuple[str, str]:
    """Every descendant's sort key lies in [low, high): '/' sorts just before '0'."""
    return unit.sort_key + "/", unit.sort_key + "0"


def place_in_tree(unit: StorageUnit, parent: StorageUnit | None) -> None:
    """Set a unit's sort key and path from its parent's (the unit needs its id)."""
    unit.sort_key = (parent.sort_key + "/" if parent else "") + _segment(unit)
    unit.path = (parent.path + PATH_SEPARATOR if parent else "") + unit.name


def add_unit(
    session: Session,
    *,
    actor: Actor,
    kind: str,
    name: str,
    parent: str | None = None,
    position: str | None = None,
    grid: tuple[int, int] | None = None,
    barcode: str | None = None,
    holds_specimens: bool | None = None,
    position_labels: PositionLabels | str = PositionLabels.letter_number,
    fill_order: FillOrder | str = FillOrder.row_major,
    temperature_class: str | None = None,
    allowed_types: list[str] | None = None,
) -> UnitRead:
    """Add a storage unit (site, freezer, shelf, rack, box or another kind) under its parent,
    at a position of the parent's grid if it has one."""
    require(actor, Permission.manage_storage)
    unit = _create_unit(
        session,
        actor=actor,
        kind=kind,
        name=name,
        parent=get_unit(session, parent, field="parent") if parent else None,
        position=position,
        grid=grid,
        barcode=barcode,
        holds_specimens=holds_specimens,
        position_labels=PositionLabels(position_labels),
        fill_order=FillOrder(fill_order),
        temperature_class=temperature_class,
        allowed_types=allowed_types,
    )
    return unit_read(session, unit)


def _create_unit(
    session: Session,
    *,
    actor: Actor,
    kind: str,
    name: str,
    parent: StorageUnit | None,
    position: str | tuple[int, int] | None,
    grid: tuple[int, int] | None,
    barcode: str | None,
    holds_specimens: bool | None,
    position_labels: PositionLabels,
    fill_order: FillOrder,
    temperature_class: str | None,
    allowed_types: list[str] | None,
) -> StorageUnit:
    kind = kind.strip().lower()
    name = name.strip()
    if not kind.isidentifier():
        raise ValidationError("a unit kind is one word, like box or rack", field="kind", value=kind)
    if not name:
        raise ValidationError("a storage unit needs a name", field="name", value=name)
    holds = kind in SPECIMEN_HOLDERS if holds_specimens is None else holds_specimens
    if holds and grid is None:
        raise ValidationError(f"a {kind} that holds tubes needs a grid", field="grid")
    row = col = None
    if parent is not None:
        row, col = _position_in(session, parent, position, field="parent")
        _check_name_free(session, parent, name)
    if barcode is not None:
        barcode = barcode.strip().upper()
        if session.exec(select(StorageUnit.id).where(StorageUnit.barcode == barcode)).first():
            raise AlreadyExists(
                f"barcode {barcode} is already in use", field="barcode", value=barcode
            )
    unit = StorageUnit(
        parent_id=parent.id if parent else None,
        kind=kind,
        name=name,
        barcode=barcode or f"tmp-{uuid.uuid4().hex}",
        grid_rows=grid[0] if grid else None,
        grid_cols=grid[1] if grid else None,
        position_labels=position_labels,
        position_row=row,
        position_col=col,
        temperature_class=temperature_class,
        allowed_types=[t.upper() for t in allowed_types] if allowed_types else None,
        holds_specimens=holds,
        fill_order=fill_order,
        free_slots=grid[0] * grid[1] if holds and grid else None,
    )
    session.add(unit)
    flush(session)
    if barcode is None:
        unit.barcode = f"{BARCODE_PREFIX.get(kind, kind[:2].upper())}{unit.id:06d}"
    place_in_tree(unit, parent)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action="storage.add",
        entity="storage_unit",
        entity_id=unit.id,
        after=audit.snapshot(unit),
    )
    return unit


def _position_in(
    session: Session,
    parent: StorageUnit,
    position: str | tuple[int, int] | None,
    *,
    field: str,
) -> tuple[int | None, int | None]:
    """Where a unit goes in `parent`: the position given (which must be free), else the first
    free one; nowhere in particular when the parent has no grid."""
    if parent.holds_specimens:
        raise ValidationError(f"{parent.barcode} holds tubes, not storage units", field=field)
    grid = grid_of(parent)
    if grid is None:
        if position is not None:
            raise ValidationError(
                f"{parent.barcode} has no grid: give no position", field="position"
            )
        return None, None
    if position is None:
        return _first_free_unit_position(session, parent, grid)
    row, column = (
        position
        if isinstance(position, tuple)
        else parse_position(position, rows=grid[0], cols=grid[1], scheme=parent.position_labels)
    )
    occupant = session.exec(
        select(StorageUnit.name).where(
            StorageUnit.parent_id == parent.id,
            StorageUnit.position_row == row,
            StorageUnit.position_col == column,
        )
    ).first()
    if occupant is not None:
        raise PositionOccupied(
            f"{parent.name} {position} is taken by {occupant}", field="position", value=position
        )
    return row, column


def _check_name_free(
    session: Session, parent: StorageUnit, name: str, *, moving_id: int | None = None
) -> None:
    query = select(StorageUnit.id).where(
        StorageUnit.parent_id == parent.id, StorageUnit.name == name
    )
    if moving_id is not None:
        query = query.where(StorageUnit.id != moving_id)
    if session.exec(query).first():
        raise AlreadyExists(
            f"{parent.name} already has a unit named {name!r}", field="name", value=name
        )


def _first_free_unit_position(
    session: Session, parent: StorageUnit, grid: tuple[int, int]
) -> tuple[int, int]:
    taken = set(
        session.exec(
            select(StorageUnit.position_row, StorageUnit.position_col).where(
                StorageUnit.parent_id == parent.id
            )
        ).all()
    )
    for row in range(1, grid[0] + 1):
        for column in range(1, grid[1] + 1):
            if (row, column) not in taken:
                return row, column
    raise ValidationError(f"{parent.barcode} ({parent.name}) is full", field="parent")


def add_freezer(
    session: Session,
    *,
    actor: Actor,
    name: str,
    parent: str | None = None,
    shelves: int,
    racks_per_shelf: int,
    boxes_per_rack: int,
    box_grid: tuple[int, int] = (9, 9),
    temperature_class: str | None = "-80C",
    position_labels: PositionLabels | str = PositionLabels.letter_number,
    fill_order: FillOrder | str = FillOrder.row_major,
    allowed_types: list[str] | None = None,
) -> UnitRead:
    """A freezer from a template: shelves, racks on each shelf, boxes in each rack."""
    require(actor, Permission.manage_storage)
    for field, value in (
        ("shelves", shelves),
        ("racks_per_shelf", racks_per_shelf),
        ("boxes_per_rack", boxes_per_rack),
    ):
        if not 1 <= value <= 1000:
            raise ValidationError(f"{field} must be 1-1000", field=field, value=value)
    create = partial(  # what every unit of the template shares; boxes set more
        _create_unit,
        session,
        actor=actor,
        barcode=None,
        position_labels=PositionLabels.letter_number,
        fill_order=FillOrder.row_major,
        temperature_class=temperature_class,
        allowed_types=None,
        holds_specimens=False,
    )
    freezer = create(
        kind="freezer",
        name=name,
        parent=get_unit(session, parent, field="parent") if parent else None,
        position=None,
        grid=(shelves, 1),
    )
    for s in range(1, shelves + 1):
        shelf = create(
            kind="shelf", name=f"Shelf {s}", parent=freezer, position=(s, 1),
            grid=(1, racks_per_shelf),
        )  # fmt: skip
        for r in range(1, racks_per_shelf + 1):
            rack = create(
                kind="rack", name=f"Rack {r}", parent=shelf, position=(1, r),
                grid=(boxes_per_rack, 1),
            )  # fmt: skip
            for b in range(1, boxes_per_rack + 1):
                create(
                    kind="box",
                    name=f"Box {b}",
                    parent=rack,
                    position=(b, 1),
                    grid=box_grid,
                    holds_specimens=True,
                    position_labels=PositionLabels(position_labels),
                    fill_order=FillOrder(fill_order),
                    allowed_types=allowed_types,
                )
    return unit_read(session, freezer)


def storage_tree(session: Session, *, actor: Actor, root: str | None = None) -> list[TreeNode]:
    """Units in physical order with their depth below the root."""
    require(actor, Permission.view_inventory)
    query = select(StorageUnit).where(StorageUnit.active).order_by(StorageUnit.sort_key)
    if root is not None:
        top = get_unit(session, root)
        low, high = subtree_range(top)
        key = col(StorageUnit.sort_key)
        query = query.where(sa.or_(col(StorageUnit.id) == top.id, sa.and_(key >= low, key < high)))
    units = session.exec(query).all()
    base = min((u.sort_key.count("/") for u in units), default=0)
    return [TreeNode(depth=u.sort_key.count("/") - base, unit=unit_read(session, u)) for u in units]


def box_view(session: Session, *, actor: Actor, barcode: str) -> BoxView:
    """A box's grid with what occupies each position."""
    require(actor, Permission.view_inventory)
    box = get_unit(session, barcode)
    if not box.holds_specimens:
        raise ValidationError(f"{box.barcode} is a {box.kind}, not a box", field="box")
    occupants = {
        (s.position_row, s.position_col): s
        for s in session.exec(select(Specimen).where(Specimen.box_id == box.id))
    }
    rows, cols = holder_grid(box)
    cells = []
    for row in range(1, rows + 1):
        for column in range(1, cols + 1):
            label = position_label(row, column, cols=cols, scheme=box.position_labels)
            tube = occupants.get((row, column))
            cells.append(
                BoxCell(
                    row=row,
                    col=column,
                    label=label,
                    accession_id=tube.accession_id if tube else None,
                    specimen_type=tube.specimen_type if tube else None,
                    status=tube.status.value if tube else None,
                )
            )
    return BoxView(unit=unit_read(session, box), rows=rows, cols=cols, cells=cells)


def move_unit(
    session: Session,
    *,
    actor: Actor,
    unit: str,
    destination: str,
    position: str | None = None,
    reason: str | None = None,
) -> UnitRead:
    """Move a box (or a rack, a shelf…) with everything in it; each tube inside gets a
    `moved_with_unit` event, since its location changed."""
    require(actor, Permission.manage_storage)
    moving = get_unit(session, unit)
    target = get_unit(session, destination, field="destination")
    low, high = subtree_range(moving)
    if target.id == moving.id or low <= target.sort_key < high:
        raise ValidationError(
            f"{moving.barcode} cannot go inside itself", field="destination", value=destination
        )
    old_key, old_path = moving.sort_key, moving.path
    with audit.audited(session, moving, actor=actor, action="storage.move",
                       entity="storage_unit", reason=reason):  # fmt: skip
        row, column = _position_in(session, target, position, field="destination")
        _check_name_free(session, target, moving.name, moving_id=moving.id)
        moving.parent_id, moving.position_row, moving.position_col = target.id, row, column
        place_in_tree(moving, target)
    key = col(StorageUnit.sort_key)
    session.execute(
        sa.update(StorageUnit)
        .where(key >= low, key < high)
        .values(
            sort_key=moving.sort_key + sa.func.substr(StorageUnit.sort_key, len(old_key) + 1),
            path=moving.path + sa.func.substr(StorageUnit.path, len(old_path) + 1),
        )
        .execution_options(synchronize_session=False)
    )
    new_low, new_high = subtree_range(moving)
    inner = session.exec(
        select(StorageUnit.id).where(key >= new_low, key < new_high, StorageUnit.holds_specimens)
    ).all()
    boxes = [moving.id, *inner]
    for tube in session.exec(select(Specimen).where(col(Specimen.box_id).in_(boxes))):
        slot = (tube.box_id, tube.position_row, tube.position_col)
        record_event(
            session,
            actor=actor,
            specimen=tube,
            event_type="moved_with_unit",
            from_slot=slot,
            to_slot=slot,
            status_before=tube.status.value,
            reason=reason,
            details={"unit": moving.barcode, "to": target.barcode},
        )
    session.expire_all()
    return unit_read(session, session.get_one(StorageUnit, moving.id))


class UnitBranch(BaseModel):
    """A unit as a branch of the tree: how many units are inside it, and the free positions
    and capacity of every box in it (a box counts its own)."""

    unit: UnitRead
    units_inside: int
    free: int
    capacity: int


def storage_children(
    session: Session, *, actor: Actor, parent: str | None = None
) -> list[UnitBranch]:
    """The units directly in `parent` (without it, the top-level units) in physical order: one
    level of the tree, so a browser opens a freezer of thousands of boxes branch by branch."""
    require(actor, Permission.view_inventory)
    top = get_unit(session, parent, field="parent") if parent else None
    placed = col(StorageUnit.parent_id) == top.id if top else col(StorageUnit.parent_id).is_(None)
    children = session.exec(
        select(StorageUnit).where(placed, StorageUnit.active).order_by(StorageUnit.sort_key)
    ).all()
    inner = aliased(StorageUnit)
    key, inner_key = col(StorageUnit.sort_key), col(inner.sort_key)
    # [key, key + "0") is the unit and its subtree (see `subtree_range`).
    in_subtree = sa.and_(inner_key >= key, inner_key < key + "0", col(inner.active))
    size = col(inner.grid_rows) * col(inner.grid_cols)
    # A sum coalesced with 0 is never NULL, which the stubs cannot tell: `type_coerce` says so.
    free_slots = sa.type_coerce(sa.func.coalesce(sa.func.sum(col(inner.free_slots)), 0), sa.Integer)
    totals = {
        unit_id: (count, free, capacity)
        for unit_id, count, free, capacity in session.exec(
            select(
                StorageUnit.id,
                sa.func.count(col(inner.id)),
                free_slots,
                sa.func.coalesce(
                    sa.func.sum(sa.case((col(inner.holds_specimens), size), else_=0)), 0
                ),
            )
            .join(inner, in_subtree)
            .where(col(StorageUnit.id).in_([u.id for u in children]))
            .group_by(col(StorageUnit.id))
        )
    }
    return [
        UnitBranch(
            unit=unit_read(session, u),
            units_inside=totals[u.id][0] - 1,
            free=totals[u.id][1],
            capacity=totals[u.id][2],
        )
        for u in children
    ]


def storage_path(session: Session, *, actor: Actor, barcode: str) -> list[UnitRead]:
    """The unit and every unit it sits in, outermost first."""
    require(actor, Permission.view_inventory)
    trail = [get_unit(session, barcode)]
    while trail[-1].parent_id is not None:
        trail.append(session.get_one(StorageUnit, trail[-1].parent_id))
    return [unit_read(session, unit) for unit in reversed(trail)]


def fill_positions(session: Session, *, actor: Actor, barcode: str) -> list[str]:
    """A box's position labels in its fill order: the order tubes go in, whether allocated or
    scanned into it one by one."""
    require(actor, Permission.view_inventory)
    box = get_unit(session, barcode, field="box")
    if not box.holds_specimens:
        raise ValidationError(f"{box.barcode} is a {box.kind}, not a box", field="box")
    rows, cols = holder_grid(box)
    return [
        position_label(row, column, cols=cols, scheme=box.position_labels)
        for row, column in fill_sequence(rows, cols, box.fill_order)
    ]
