"""Custody events: every step of a tube's life, with who, when, from, to, quantity and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor
from biobank.domain.positions import position_label
from biobank.models import Specimen, SpecimenEvent, StorageUnit, User

# A tube's box id, row and column as an event records them; all None: in no box.
Position = tuple[int | None, int | None, int | None]
NO_POSITION: Position = (None, None, None)


class EventRead(BaseModel):
    occurred_at: datetime
    event_type: str
    actor: str | None
    workstation: str | None
    from_location: str | None
    to_location: str | None
    quantity_change: float | None
    status_before: str | None
    status_after: str | None
    reason: str | None
    details: dict[str, Any] | None


def record_event(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    event_type: str,
    from_slot: Position = NO_POSITION,
    to_slot: Position = NO_POSITION,
    quantity_change: float | None = None,
    status_before: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add a step to a tube's custody history, in the caller's transaction: where from
    and to, the quantity and status change, who, and why."""
    session.add(
        custody_event(
            actor=actor,
            specimen=specimen,
            event_type=event_type,
            from_slot=from_slot,
            to_slot=to_slot,
            quantity_change=quantity_change,
            status_before=status_before,
            reason=reason,
            details=details,
        )
    )


def custody_event(
    *,
    actor: Actor,
    specimen: Specimen,
    event_type: str,
    from_slot: Position = NO_POSITION,
    to_slot: Position = NO_POSITION,
    quantity_change: float | None = None,
    status_before: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> SpecimenEvent:
    """The event `record_event` adds, for a caller that writes it itself."""
    assert specimen.id is not None  # a tube is saved before its history is written
    return SpecimenEvent(
        specimen_id=specimen.id,
        event_type=event_type,
        actor_id=actor.user_id,
        workstation=actor.workstation,
        from_box_id=from_slot[0],
        from_row=from_slot[1],
        from_col=from_slot[2],
        to_box_id=to_slot[0],
        to_row=to_slot[1],
        to_col=to_slot[2],
        quantity_change=quantity_change,
        status_before=status_before,
        status_after=specimen.status.value,
        reason=reason,
        details=details,
    )


def slot_text(session: Session, box_id: int | None, row: int | None, col: int | None) -> str | None:
    """`BX000004 C7`, or None for no position."""
    if box_id is None or row is None or col is None:
        return None
    box = session.get_one(StorageUnit, box_id)
    assert box.grid_cols is not None  # a box that holds tubes has a grid
    label = position_label(row, col, cols=box.grid_cols, scheme=box.position_labels)
    return f"{box.barcode} {label}"


def specimen_events(session: Session, specimen: Specimen) -> list[EventRead]:
    """A tube's custody history, oldest first, with positions as box and label."""
    rows = session.exec(
        select(SpecimenEvent, User.username)
        .join(User, col(User.id) == SpecimenEvent.actor_id, isouter=True)
        .where(SpecimenEvent.specimen_id == specimen.id)
        .order_by(col(SpecimenEvent.occurred_at), col(SpecimenEvent.id))
    ).all()
    return [
        EventRead(
            occurred_at=e.occurred_at,
            event_type=e.event_type,
            actor=username,
            workstation=e.workstation,
            from_location=slot_text(session, e.from_box_id, e.from_row, e.from_col),
            to_location=slot_text(session, e.to_box_id, e.to_row, e.to_col),
            quantity_change=e.quantity_change,
            status_before=e.status_before,
            status_after=e.status_after,
            reason=e.reason,
            details=e.details,
        )
        for e, username in rows
    ]
