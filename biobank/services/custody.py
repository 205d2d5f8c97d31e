"""Where tubes are and what happens to them: placement, allocation, moves, check-out and -in,
thaws, depletion and disposal. Each step is a custody event and an audit entry.

Allocation locks the box row it fills (`SELECT … FOR UPDATE`, `SKIP LOCKED` when any box of a
freezer will do), so concurrent terminals fill different boxes instead of colliding; the
unique constraint on (box, row, column) stays the final guard. Boxes keep a free-slot count,
so finding room in a freezer of thousands of boxes is one index range, not a scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, select

from biobank.db import flush
from biobank.domain.lifecycle import IN_STORAGE, check_transition
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.positions import fill_sequence, parse_position, position_label
from biobank.errors import PositionOccupied, ValidationError
from biobank.models import Specimen, SpecimenStatus, StorageUnit, utcnow
from biobank.services import audit
from biobank.services.consent_checks import refuse_if_withdrawn, require_consent
from biobank.services.events import record_event
from biobank.services.reservations import follow_status
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimen_read
from biobank.services.storage import get_unit, subtree_range

# Freeze-thaw cycles after which a warning is shown (most analytes degrade beyond these).
THAW_WARNING = {"RNA": 1, "CEL": 1, "SER": 3, "PL1": 3, "PL2": 3, "URN": 3, "URM": 3}
DEFAULT_THAW_WARNING = 5


# What a check-in makes of a tube: available, or reserved again when it is reserved.
BACK_FROM_OUT = frozenset({SpecimenStatus.available, SpecimenStatus.reserved})

# What may be put in a box: a stored tube, or a missing one that turned up.
PLACEABLE = IN_STORAGE | {SpecimenStatus.missing}


def _check_placeable(specimen: Specimen) -> None:
    if specimen.status not in PLACEABLE:
        raise ValidationError(
            f"{specimen.accession_id} is {specimen.status.value} and cannot be placed",
            field="status",
            value=specimen.status.value,
        )


@dataclass(frozen=True)
class Slot:
    box: StorageUnit
    row: int
    col: int


def lock_box(session: Session, box_id: int) -> StorageUnit:
    """The box row, locked until commit on PostgreSQL (SQLite writers are serial anyway), as
    it is once locked: a copy the session read before (the destination, by barcode) is
    refreshed, as another terminal may have moved or changed the box meanwhile."""
    query = select(StorageUnit).where(StorageUnit.id == box_id).with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).one()


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


def _taken(session: Session, box: StorageUnit) -> set[tuple[int, int]]:
    return set(
        session.exec(
            select(Specimen.position_row, Specimen.position_col).where(Specimen.box_id == box.id)
        ).all()
    )


def _free_in_box(session: Session, box: StorageUnit, count: int) -> list[Slot]:
    taken = _taken(session, box)
    free = (p for p in fill_sequence(box.grid_rows, box.grid_cols, box.fill_order))
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
        box = lock_box(session, target.id)
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
        StorageUnit.free_slots >= count,
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
    passed: list[int] = []
    while len(slots) < count:
        need = count - len(slots) if together else 1
        query = (
            select(StorageUnit)
            .where(
                # the partial index's condition, written out: bound as a parameter, the
                # planners could not match it (PostgreSQL's generic plan of a prepared
                # statement then walked the whole freezer's full boxes, ~3 ms at 12,000)
                StorageUnit.free_slots > sa.literal_column("0"),
                StorageUnit.free_slots >= need,
                StorageUnit.sort_key >= low,
                StorageUnit.sort_key < high,
                StorageUnit.holds_specimens,
                StorageUnit.active,
            )
            .order_by(StorageUnit.sort_key)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if passed:
            query = query.where(StorageUnit.id.not_in(passed))
        box = session.exec(query).first()
        if box is None:
            # Every box with room is being filled at another terminal: wait for the first.
            box = session.exec(query.with_for_update()).first()
        if box is None:
            return slots
        passed.append(box.id)
        if box.allowed_types and specimen_type not in box.allowed_types:
            continue
        slots += _free_in_box(session, box, count - len(slots))
        if together and len(slots) < count:
            return slots
    return slots


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
    box = lock_box(session, target.id)
    check_box_accepts(box, specimen_type)
    row, col = parse_position(
        position, rows=box.grid_rows, cols=box.grid_cols, scheme=box.position_labels
    )
    occupant = session.exec(
        select(Specimen.accession_id).where(
            Specimen.box_id == box.id, Specimen.position_row == row, Specimen.position_col == col
        )
    ).first()
    if occupant is not None:
        raise PositionOccupied(
            f"{box.barcode} {position.upper()} is occupied by {occupant}",
            field="position",
            value=position,
        )
    return [Slot(box, row, col)]


def adjust_free_slots(session: Session, box_id: int, delta: int) -> None:
    """Keep a box's count of free positions in step as a tube leaves (+1) or takes (-1) a
    position, so finding room never scans the positions."""
    session.execute(
        sa.update(StorageUnit)
        .where(StorageUnit.id == box_id)
        .values(free_slots=StorageUnit.free_slots + delta)
    )


def occupy(session: Session, specimen: Specimen, slot: Slot) -> None:
    """Put a tube at a free slot and count the slot taken (the caller saves the tube)."""
    specimen.box_id, specimen.position_row, specimen.position_col = (
        slot.box.id,
        slot.row,
        slot.col,
    )
    adjust_free_slots(session, slot.box.id, -1)


def _vacate(session: Session, specimen: Specimen) -> tuple[int | None, int | None, int | None]:
    old = (specimen.box_id, specimen.position_row, specimen.position_col)
    if specimen.box_id is not None:
        adjust_free_slots(session, specimen.box_id, +1)
        specimen.box_id = specimen.position_row = specimen.position_col = None
    return old


def _slot_tuple(specimen: Specimen) -> tuple[int | None, int | None, int | None]:
    return (specimen.box_id, specimen.position_row, specimen.position_col)


def _save(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    action: str,
    before: dict,
    reason: str | None,
    event_type: str,
    **event,
) -> SpecimenRead:
    """One custody step kept: its event, the row, and its audit entry."""
    record_event(
        session, actor=actor, specimen=specimen, event_type=event_type, reason=reason, **event
    )
    specimen.updated_at = utcnow()
    session.add(specimen)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action=f"specimen.{action}",
        entity="specimen",
        entity_id=specimen.id,
        before=before,
        after=audit.snapshot(specimen),
        reason=reason,
    )
    return specimen_read(session, specimen)


def move(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    destination: str,
    position: str | None = None,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Put a tube at a position, or at the next free one in a box, rack or freezer."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession, expected_version=expected_version)
    _check_placeable(specimen)
    before = audit.snapshot(specimen)
    (slot,) = resolve_destination(
        session,
        destination=destination,
        position=position,
        specimen_type=specimen.specimen_type,
    )
    old = _vacate(session, specimen)
    flush(session)  # free the old position before taking the new one
    return _place(
        session, actor=actor, specimen=specimen, slot=slot, old=old, before=before, reason=reason
    )


def _place(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    slot: Slot,
    old: tuple[int | None, int | None, int | None],
    before: dict,
    reason: str | None,
) -> SpecimenRead:
    """Take a (vacated) tube to `slot`; a missing tube that turns up is available again."""
    occupy(session, specimen, slot)
    status_before = specimen.status.value
    if specimen.status == SpecimenStatus.missing:
        specimen.status = SpecimenStatus.available
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="move",
        before=before,
        reason=reason,
        event_type="moved" if old[0] is not None else "placed",
        from_slot=old,
        to_slot=_slot_tuple(specimen),
        status_before=status_before,
    )


def _transition(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    new_status: SpecimenStatus,
    expected_version: int | None,
) -> tuple[Specimen, dict, str]:
    require(actor, Permission.move)
    specimen = get_specimen(session, accession, expected_version=expected_version)
    check_transition(specimen.status, new_status, specimen=specimen.accession_id)
    new_status = follow_status(session, actor=actor, specimen=specimen, new_status=new_status)
    before = audit.snapshot(specimen)
    status_before = specimen.status.value
    specimen.status = new_status
    if new_status not in BACK_FROM_OUT | {SpecimenStatus.checked_out}:
        specimen.checked_out_at = None  # check-in counts the minutes out; nothing else does
    return specimen, before, status_before


def check_out(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Take a tube out of the freezer; its position stays held for it."""
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.checked_out,
        expected_version=expected_version,
    )
    refuse_if_withdrawn(
        session, participant_id=specimen.participant_id, what=f"check-out of {accession}"
    )
    specimen.checked_out_at = utcnow()
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="check_out",
        before=before,
        reason=reason,
        event_type="checked_out",
        from_slot=_slot_tuple(specimen),
        status_before=status_before,
    )


def check_in(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    destination: str | None = None,
    position: str | None = None,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Back to its held position (or to a new one), adding the minutes it was out."""
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.available,
        expected_version=expected_version,
    )
    minutes = 0
    if specimen.checked_out_at is not None:
        minutes = max(0, round((utcnow() - specimen.checked_out_at).total_seconds() / 60))
    specimen.minutes_out += minutes
    specimen.checked_out_at = None
    old = _slot_tuple(specimen)
    if destination is not None or specimen.box_id is None:
        if destination is None:
            raise ValidationError(
                f"{specimen.accession_id} has no held position: say where it goes",
                field="destination",
            )
        (slot,) = resolve_destination(
            session,
            destination=destination,
            position=position,
            specimen_type=specimen.specimen_type,
        )
        _vacate(session, specimen)
        flush(session)
        occupy(session, specimen, slot)
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="check_in",
        before=before,
        reason=reason,
        event_type="checked_in",
        from_slot=old,
        to_slot=_slot_tuple(specimen),
        status_before=status_before,
        details={"minutes_out": minutes},
    )


def record_thaw(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """One more freeze-thaw cycle; warns past the type's limit."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession, expected_version=expected_version)
    if specimen.status not in {SpecimenStatus.available, SpecimenStatus.checked_out}:
        raise ValidationError(
            f"{specimen.accession_id} is {specimen.status.value}; only a stored tube thaws",
            field="status",
            value=specimen.status.value,
        )
    before = audit.snapshot(specimen)
    specimen.freeze_thaw_count += 1
    read = _save(
        session,
        actor=actor,
        specimen=specimen,
        action="thaw",
        before=before,
        reason=reason,
        event_type="thawed",
        status_before=specimen.status.value,
        details={"freeze_thaw_count": specimen.freeze_thaw_count},
    )
    limit = THAW_WARNING.get(specimen.specimen_type, DEFAULT_THAW_WARNING)
    if specimen.freeze_thaw_count > limit:
        read.warnings.append(
            f"{specimen.accession_id} has been thawed {specimen.freeze_thaw_count} times; "
            f"{specimen.specimen_type} is advised at most {limit}"
        )
    return read


def deplete(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Used up: nothing left, the empty tube still in its position until disposed."""
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.depleted,
        expected_version=expected_version,
    )
    change = -specimen.quantity
    specimen.quantity = 0
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="deplete",
        before=before,
        reason=reason,
        event_type="depleted",
        quantity_change=change,
        status_before=status_before,
    )


def dispose(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Destroyed: the position is freed; the record and its ID stay forever."""
    require(actor, Permission.move)
    if not reason or not reason.strip():
        raise ValidationError("a disposal needs a reason", field="reason")
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.disposed,
        expected_version=expected_version,
    )
    old = _vacate(session, specimen)
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="dispose",
        before=before,
        reason=reason,
        event_type="disposed",
        from_slot=old,
        quantity_change=-specimen.quantity if specimen.quantity else None,
        status_before=status_before,
    )


def distribute(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    recipient: str,
    uses: list[str],
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Send a tube out to a recipient for named uses; the participant's consent must allow
    every one of them today. The position is freed: the tube has left the biobank."""
    require(actor, Permission.move)
    if not recipient or not recipient.strip():
        raise ValidationError("a distribution names its recipient", field="recipient")
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.distributed,
        expected_version=expected_version,
    )
    require_consent(
        session,
        participant_id=specimen.participant_id,
        uses=uses,
        as_of=date.today(),
        what=f"distribution of {specimen.accession_id}",
    )
    old = _vacate(session, specimen)
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="distribute",
        before=before,
        reason=reason,
        event_type="distributed",
        from_slot=old,
        status_before=status_before,
        details={"recipient": recipient.strip(), "uses": [u.strip().upper() for u in uses]},
    )


def mark_missing(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Not found where it should be: its position is freed for the tube really there; placing
    it again (a move) makes it available."""
    specimen, before, status_before = _transition(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.missing,
        expected_version=expected_version,
    )
    old = _vacate(session, specimen)
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="mark_missing",
        before=before,
        reason=reason,
        event_type="missing",
        from_slot=old,
        status_before=status_before,
    )


def release_position(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """A checked-out tube gives up the position held for it (another tube is there now);
    checking it in then needs a destination."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession, expected_version=expected_version)
    if specimen.status != SpecimenStatus.checked_out or specimen.box_id is None:
        raise ValidationError(
            f"{specimen.accession_id} is {specimen.status.value} and holds no position "
            "while out; only a checked-out tube's held position is released",
            field="status",
            value=specimen.status.value,
        )
    before = audit.snapshot(specimen)
    old = _vacate(session, specimen)
    return _save(
        session,
        actor=actor,
        specimen=specimen,
        action="release_position",
        before=before,
        reason=reason,
        event_type="position_released",
        from_slot=old,
        status_before=specimen.status.value,
    )


def rearrange(
    session: Session,
    *,
    actor: Actor,
    box: str,
    placements: dict[str, str],
    reason: str | None = None,
) -> list[SpecimenRead]:
    """Put several tubes at positions of one box at once (accession ID → position), so tubes
    can swap or rotate places: every tube leaves its old position before any takes its new one.
    Each is a move, with its event and audit entry."""
    require(actor, Permission.move)
    target = lock_box(session, get_unit(session, box, field="box").id)
    planned: dict[tuple[int, int], Specimen] = {}
    for accession, position in placements.items():
        specimen = get_specimen(session, accession)
        _check_placeable(specimen)
        check_box_accepts(target, specimen.specimen_type)
        key = parse_position(
            position, rows=target.grid_rows, cols=target.grid_cols, scheme=target.position_labels
        )
        if any(s.id == specimen.id for s in planned.values()):
            raise ValidationError(
                f"{specimen.accession_id} is placed twice", field="placements", value=accession
            )
        if key in planned:
            raise ValidationError(
                f"{planned[key].accession_id} and {specimen.accession_id} are both placed at "
                f"{position}",
                field="placements",
                value=position,
            )
        planned[key] = specimen
    moving = {s.id for s in planned.values()}
    for occupant in session.exec(select(Specimen).where(Specimen.box_id == target.id)):
        key = (occupant.position_row, occupant.position_col)
        if key in planned and occupant.id not in moving:
            label = position_label(*key, cols=target.grid_cols, scheme=target.position_labels)
            raise PositionOccupied(
                f"{target.barcode} {label} is occupied by {occupant.accession_id}",
                field="position",
                value=label,
            )
    moves = [
        (specimen, Slot(target, *key), audit.snapshot(specimen), _vacate(session, specimen))
        for key, specimen in planned.items()
    ]
    flush(session)  # every old position is free before any new one is taken
    return [
        _place(
            session,
            actor=actor,
            specimen=specimen,
            slot=slot,
            old=old,
            before=before,
            reason=reason,
        )
        for specimen, slot, before, old in moves
    ]
