"""What happens to a tube once it is stored: moves, check-out and -in, thaws, depletion,
disposal, distribution, going missing. Each step is a custody event and an audit entry
(`audit.audited`: the tube's row before, the step, the row after).
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import date

from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.lifecycle import IN_STORAGE, check_transition
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.positions import parse_position, position_label
from biobank.domain.vocabulary import SpecimenStatus
from biobank.errors import PositionOccupied, ValidationError
from biobank.models import Specimen, utcnow
from biobank.services import audit
from biobank.services.consent_checks import refuse_if_withdrawn, require_consent
from biobank.services.events import NO_POSITION, Position, record_event
from biobank.services.reservations import follow_status
from biobank.services.slots import (
    Slot,
    check_box_accepts,
    lock_box,
    occupy,
    position_of,
    resolve_destination,
    vacate,
)
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimen_read
from biobank.services.storage import get_unit, holder_grid

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


def _record_step(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    event_type: str,
    reason: str | None,
    status_before: str,
    from_slot: Position = NO_POSITION,
    to_slot: Position = NO_POSITION,
    quantity_change: float | None = None,
    details: dict[str, object] | None = None,
) -> None:
    """The last of every step, inside its audited block: its custody event, and the tube
    stamped as changed."""
    record_event(
        session, actor=actor, specimen=specimen, event_type=event_type, reason=reason,
        status_before=status_before, from_slot=from_slot, to_slot=to_slot,
        quantity_change=quantity_change, details=details,
    )  # fmt: skip
    specimen.updated_at = utcnow()


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
    with audit.audited(session, specimen, actor=actor, action="specimen.move",
                       entity="specimen", reason=reason):  # fmt: skip
        (slot,) = resolve_destination(
            session,
            destination=destination,
            position=position,
            specimen_type=specimen.specimen_type,
        )
        old = vacate(session, specimen)
        flush(session)  # free the old position before taking the new one
        _place(session, actor=actor, specimen=specimen, slot=slot, old=old, reason=reason)
    return specimen_read(session, specimen)


def _place(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    slot: Slot,
    old: Position,
    reason: str | None,
) -> None:
    """Take a (vacated) tube to `slot`; a missing tube that turns up is available again."""
    occupy(session, specimen, slot)
    status_before = specimen.status.value
    if specimen.status == SpecimenStatus.missing:
        specimen.status = SpecimenStatus.available
    _record_step(
        session,
        actor=actor,
        specimen=specimen,
        event_type="moved" if old[0] is not None else "placed",
        reason=reason,
        from_slot=old,
        to_slot=position_of(specimen),
        status_before=status_before,
    )


def _changing_status(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    new_status: SpecimenStatus,
    expected_version: int | None,
) -> tuple[Specimen, SpecimenStatus]:
    """The tube, once it may become `new_status`, and the status it becomes (a reservation
    may decide: see `follow_status`)."""
    require(actor, Permission.move)
    specimen = get_specimen(session, accession, expected_version=expected_version)
    check_transition(specimen.status, new_status, specimen=specimen.accession_id)
    return specimen, follow_status(session, actor=actor, specimen=specimen, new_status=new_status)


def _set_status(specimen: Specimen, new_status: SpecimenStatus) -> str:
    """Give the tube its new status; returns the one it had."""
    status_before = specimen.status.value
    specimen.status = new_status
    if new_status not in BACK_FROM_OUT | {SpecimenStatus.checked_out}:
        specimen.checked_out_at = None  # check-in counts the minutes out; nothing else does
    return status_before


def check_out(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    reason: str | None = None,
    expected_version: int | None = None,
) -> SpecimenRead:
    """Take a tube out of the freezer; its position stays held for it."""
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.checked_out,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.check_out",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        refuse_if_withdrawn(
            session, participant_id=specimen.participant_id, what=f"check-out of {accession}"
        )
        specimen.checked_out_at = utcnow()
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="checked_out",
            reason=reason,
            from_slot=position_of(specimen),
            status_before=status_before,
        )
    return specimen_read(session, specimen)


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
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.available,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.check_in",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        minutes = 0
        if specimen.checked_out_at is not None:
            minutes = max(0, round((utcnow() - specimen.checked_out_at).total_seconds() / 60))
        specimen.minutes_out += minutes
        specimen.checked_out_at = None
        old = position_of(specimen)
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
            vacate(session, specimen)
            flush(session)
            occupy(session, specimen, slot)
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="checked_in",
            reason=reason,
            from_slot=old,
            to_slot=position_of(specimen),
            status_before=status_before,
            details={"minutes_out": minutes},
        )
    return specimen_read(session, specimen)


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
    with audit.audited(session, specimen, actor=actor, action="specimen.thaw",
                       entity="specimen", reason=reason):  # fmt: skip
        specimen.freeze_thaw_count += 1
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="thawed",
            reason=reason,
            status_before=specimen.status.value,
            details={"freeze_thaw_count": specimen.freeze_thaw_count},
        )
    read = specimen_read(session, specimen)
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
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.depleted,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.deplete",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        change = -specimen.quantity
        specimen.quantity = 0
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="depleted",
            reason=reason,
            quantity_change=change,
            status_before=status_before,
        )
    return specimen_read(session, specimen)


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
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.disposed,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.dispose",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        old = vacate(session, specimen)
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="disposed",
            reason=reason,
            from_slot=old,
            quantity_change=-specimen.quantity if specimen.quantity else None,
            status_before=status_before,
        )
    return specimen_read(session, specimen)


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
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.distributed,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.distribute",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        require_consent(
            session,
            participant_id=specimen.participant_id,
            uses=uses,
            as_of=date.today(),
            what=f"distribution of {specimen.accession_id}",
        )
        old = vacate(session, specimen)
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="distributed",
            reason=reason,
            from_slot=old,
            status_before=status_before,
            details={"recipient": recipient.strip(), "uses": [u.strip().upper() for u in uses]},
        )
    return specimen_read(session, specimen)


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
    specimen, new_status = _changing_status(
        session,
        actor=actor,
        accession=accession,
        new_status=SpecimenStatus.missing,
        expected_version=expected_version,
    )
    with audit.audited(session, specimen, actor=actor, action="specimen.mark_missing",
                       entity="specimen", reason=reason):  # fmt: skip
        status_before = _set_status(specimen, new_status)
        old = vacate(session, specimen)
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="missing",
            reason=reason,
            from_slot=old,
            status_before=status_before,
        )
    return specimen_read(session, specimen)


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
    with audit.audited(session, specimen, actor=actor, action="specimen.release_position",
                       entity="specimen", reason=reason):  # fmt: skip
        old = vacate(session, specimen)
        _record_step(
            session,
            actor=actor,
            specimen=specimen,
            event_type="position_released",
            reason=reason,
            from_slot=old,
            status_before=specimen.status.value,
        )
    return specimen_read(session, specimen)


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
    target = lock_box(session, get_unit(session, box, field="box"))
    rows, cols = holder_grid(target)
    planned: dict[tuple[int, int], Specimen] = {}
    for accession, position in placements.items():
        specimen = get_specimen(session, accession)
        _check_placeable(specimen)
        check_box_accepts(target, specimen.specimen_type)
        key = parse_position(position, rows=rows, cols=cols, scheme=target.position_labels)
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
    staying = session.exec(
        select(Specimen).where(Specimen.box_id == target.id, col(Specimen.id).not_in(moving))
    )
    occupants = {(s.position_row, s.position_col): s.accession_id for s in staying}
    for key in planned:
        if key in occupants:
            label = position_label(*key, cols=cols, scheme=target.position_labels)
            raise PositionOccupied(
                f"{target.barcode} {label} is occupied by {occupants[key]}",
                field="position",
                value=label,
            )
    with ExitStack() as moves:
        for specimen in reversed(planned.values()):  # entered last to first: kept first to last
            moves.enter_context(
                audit.audited(
                    session,
                    specimen,
                    actor=actor,
                    action="specimen.move",
                    entity="specimen",
                    reason=reason,
                )
            )
        olds = [vacate(session, specimen) for specimen in planned.values()]
        flush(session)  # every old position is free before any new one is taken
        for (key, specimen), old in zip(planned.items(), olds, strict=True):
            slot = Slot(target, *key)
            _place(session, actor=actor, specimen=specimen, slot=slot, old=old, reason=reason)
    return [specimen_read(session, specimen) for specimen in planned.values()]
