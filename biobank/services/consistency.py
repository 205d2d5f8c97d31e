"""A deep consistency check: each specimen row against its history, each box's free count
against its tubes.

`audit verify` proves the audit trail unaltered and `db check` the schema the models'; neither
reads the rows. A change made behind the application's back (an UPDATE in psql) leaves no
custody event and no audit entry, so the row then disagrees with its history, and this names
it:

- status: the row's status is the `status_after` of its latest custody event (by time, then
  id). Every path that changes a status records one, the legacy import's bulk `accessioned`
  events included.
- location: the row's position is the one its latest location event leaves it in: the
  event's `to_*`, or none when it names only a `from_*` (disposed, distributed, missing, a
  released position). A check-out is the exception: it names the position held for the tube,
  which the tube keeps.
- audit: the row equals the `after` snapshot of its latest audit entry, in the columns the
  snapshot holds (a column added later is in no older one), converted as `audit.snapshot`'s
  are, times compared as instants (a snapshot keeps the offset a time was given in, the
  database gives it back in UTC). Every change of a specimen writes its whole row but a label
  printed or rendered to a file, whose `after` names the printer or file and which changes no
  column: those entries are passed over. A reservation's snapshot holds two more keys
  (request, uses) and the legacy import's is the row it inserted, with its id: both hold
  every column.
- position: a tube that holds a position is in storage (`lifecycle.IN_STORAGE`).
- free slots: a box's `free_slots` is its grid less the tubes in it, as `custody` counts
  them when a tube takes or leaves a position.

Quantities are not summed from the events: an accession's event carries the whole quantity
(the sum alone, not initial + sum, would be the rule), and a disposal records the quantity
leaving (-quantity) while the row keeps it, so no such rule holds on every path. The audit
snapshot covers the quantity instead.

Specimens are read a batch at a time, by id, each with its latest event, location event and
audit entry in the same statement (SQLAlchemy Core): memory stays flat however large the
inventory, and a tube changed at a workstation while the check runs is seen before or after
the change, never half (on PostgreSQL each statement of a read-only unit of work has a
snapshot of its own).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, computed_field
from sqlmodel import Session

from biobank.domain.lifecycle import IN_STORAGE
from biobank.domain.permissions import Actor, Permission, require
from biobank.models import AuditEntry, Specimen, SpecimenEvent, StorageUnit
from biobank.services.audit import canonical_json
from biobank.services.events import Position, slot_text

BATCH = 1000
MAX_LISTED = 1000
# An audit entry of a specimen whose `after` is not the row.
NOT_A_SNAPSHOT = ("specimen.label_printed", "specimen.label_rendered")
# A custody event that names a position without leaving it.
HOLDS_POSITION = ("checked_out",)

SPECIMENS = Specimen.__table__
EVENTS = SpecimenEvent.__table__
ENTRIES = AuditEntry.__table__
UNITS = StorageUnit.__table__
COLUMNS = tuple(SPECIMENS.c.keys())
# Times: SQLModel's UTCDateTime decorates DateTime, which it names as its `impl`.
TIMES = frozenset(
    c.key for c in SPECIMENS.columns if isinstance(getattr(c.type, "impl", c.type), sa.DateTime)
)

Kind = Literal["status", "location", "audit", "position", "free_slots"]


class Problem(BaseModel):
    """One disagreement: what is stored, and what the history (or a box's tubes) says."""

    kind: Kind
    entity: str  # a specimen's accession ID or a box's barcode
    stored: str
    expected: str


class ConsistencyReport(BaseModel):
    specimens: int
    boxes: int
    problem_count: int
    problems: list[Problem]  # the first MAX_LISTED

    @computed_field  # type: ignore[prop-decorator]  # mypy takes no decorator over a property
    @property
    def ok(self) -> bool:
        return self.problem_count == 0


@dataclass(frozen=True)
class _Place:
    """A position, named (`BX000004 C7`) only if a problem showing it is listed."""

    session: Session
    slot: Position

    def __str__(self) -> str:
        return slot_text(self.session, *self.slot) or "no position"


class _Findings:
    def __init__(self) -> None:
        self.count = 0
        self.listed: list[Problem] = []

    def add(self, kind: Kind, entity: str, stored: object, expected: object) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(
                Problem(kind=kind, entity=entity, stored=str(stored), expected=str(expected))
            )


def check_consistency(session: Session, *, actor: Actor) -> ConsistencyReport:
    """Every specimen against its custody events and audit trail, every box against its
    tubes; the first MAX_LISTED disagreements listed, all counted."""
    require(actor, Permission.view_audit)
    found = _Findings()
    specimens = 0
    for batch in _batches(session):
        specimens += len(batch)
        _check_specimens(session, batch, found)
    boxes = _check_boxes(session, found)
    return ConsistencyReport(
        specimens=specimens, boxes=boxes, problem_count=found.count, problems=found.listed
    )


def _latest_event(*where: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
    """The id of a specimen's latest custody event (by time, then id) that meets `where`."""
    return (
        sa.select(EVENTS.c.id)
        .where(EVENTS.c.specimen_id == SPECIMENS.c.id, *where)
        .order_by(EVENTS.c.occurred_at.desc(), EVENTS.c.id.desc())
        .limit(1)
        .correlate(SPECIMENS)
        .scalar_subquery()
    )


_LOCATES = sa.or_(
    EVENTS.c.to_box_id.is_not(None),
    sa.and_(EVENTS.c.from_box_id.is_not(None), EVENTS.c.event_type.not_in(HOLDS_POSITION)),
)
_SNAPSHOT = (
    sa.select(sa.func.max(ENTRIES.c.id))
    .where(
        ENTRIES.c.entity == "specimen",
        ENTRIES.c.entity_id == sa.cast(SPECIMENS.c.id, ENTRIES.c.entity_id.type),
        ENTRIES.c.action.not_in(NOT_A_SNAPSHOT),
    )
    .correlate(SPECIMENS)
    .scalar_subquery()
)
_EVENT, _PLACE, _ENTRY = EVENTS.alias("event"), EVENTS.alias("place"), ENTRIES.alias("entry")
# Each specimen with its latest event, the position its latest location event leaves it in,
# and its latest snapshot: one statement, so one snapshot of the database on any engine.
WITH_HISTORY = (
    sa.select(
        SPECIMENS,
        _EVENT.c.id.label("event_id"), _EVENT.c.event_type, _EVENT.c.status_after,
        _PLACE.c.to_box_id, _PLACE.c.to_row, _PLACE.c.to_col,
        _ENTRY.c.id.label("entry_id"), _ENTRY.c.after,
    )
    .select_from(
        SPECIMENS.outerjoin(_EVENT, _EVENT.c.id == _latest_event())
        .outerjoin(_PLACE, _PLACE.c.id == _latest_event(_LOCATES))
        .outerjoin(_ENTRY, _ENTRY.c.id == _SNAPSHOT)
    )
    .order_by(SPECIMENS.c.id)
)  # fmt: skip


# A specimen row of `WITH_HISTORY`: its columns, then its history's.
HistoryRow = sa.Row[*tuple[Any, ...]]


def _batches(session: Session) -> Iterator[Sequence[HistoryRow]]:
    last = 0
    while True:
        query = WITH_HISTORY.where(SPECIMENS.c.id > last).limit(BATCH)
        rows = session.execute(query).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _check_specimens(session: Session, batch: Sequence[HistoryRow], found: _Findings) -> None:
    for row in batch:
        name, status = row.accession_id, row.status.value
        if row.event_id is None:
            found.add("status", name, status, "no custody event")
        elif row.status_after != status:
            found.add("status", name, status, f"{row.status_after} (after {row.event_type})")
        here: Position = (row.box_id, row.position_row, row.position_col)
        there: Position = (row.to_box_id, row.to_row, row.to_col)
        if here != there:
            found.add("location", name, _Place(session, here), _Place(session, there))
        if row.box_id is not None and row.status not in IN_STORAGE:
            found.add("position", name, _Place(session, here), f"no position ({status})")
        _compare_snapshot(row, found)


def _compare_snapshot(row: HistoryRow, found: _Findings) -> None:
    if row.after is None:
        found.add("audit", row.accession_id, "a row", "no audit entry holding it")
        return
    stored_json = canonical_json({key: getattr(row, key) for key in COLUMNS})
    assert stored_json is not None  # a row's values, never None
    if stored_json == row.after:  # as written, byte for byte: most rows
        return
    stored, recorded = orjson.loads(stored_json), orjson.loads(row.after)
    differing = [
        key for key in COLUMNS if key in recorded and not _same(key, stored[key], recorded[key])
    ]
    if differing:
        found.add(
            "audit",
            row.accession_id,
            ", ".join(f"{key}={stored[key]}" for key in differing),
            ", ".join(f"{key}={recorded[key]}" for key in differing) + f" (entry {row.entry_id})",
        )


def _same(key: str, stored: Any, recorded: Any) -> bool:
    if stored == recorded:
        return True
    if key in TIMES and isinstance(stored, str) and isinstance(recorded, str):
        return datetime.fromisoformat(stored) == datetime.fromisoformat(recorded)
    return False


def _check_boxes(session: Session, found: _Findings) -> int:
    """Each box's free count against its grid and the tubes in it; returns how many boxes."""
    tubes = (
        sa.select(SPECIMENS.c.box_id, sa.func.count().label("tubes"))
        .where(SPECIMENS.c.box_id.is_not(None))
        .group_by(SPECIMENS.c.box_id)
        .subquery()
    )
    query = (
        sa.select(
            UNITS.c.barcode, UNITS.c.grid_rows, UNITS.c.grid_cols, UNITS.c.free_slots,
            sa.func.coalesce(tubes.c.tubes, 0).label("tubes"),
        )
        .outerjoin(tubes, tubes.c.box_id == UNITS.c.id)
        .where(UNITS.c.holds_specimens)
        .order_by(UNITS.c.id)
    )  # fmt: skip
    boxes = 0
    for box in session.execute(query.execution_options(yield_per=BATCH)):
        boxes += 1
        rows, cols = box.grid_rows or 0, box.grid_cols or 0
        expected = rows * cols - box.tubes
        if box.free_slots != expected:
            found.add(
                "free_slots",
                box.barcode,
                box.free_slots,
                f"{expected} ({rows}x{cols} positions, {box.tubes} tubes)",
            )
    return boxes
