"""Lineage: specimens made from specimens (aliquots split off, derivatives extracted, pools
combined) and the family tree they form.

A child draws its quantity from its parents (over-drawing refused, reaching zero depletes) and
inherits their participant and visit, and so their consent. A pool has many parents, recorded
as its sources; pools across participants are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush
from biobank.domain.lifecycle import check_transition
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import positive_quantity, quantity_unit, specimen_type_code
from biobank.domain.vocabulary import QuantityUnit, SpecimenKind, SpecimenStatus
from biobank.errors import ValidationError
from biobank.models import Participant, Specimen, SpecimenPoolSource, Study, utcnow
from biobank.services import audit
from biobank.services.consent_checks import refuse_if_withdrawn
from biobank.services.events import record_event
from biobank.services.reservations import standing_reservation
from biobank.services.slots import new_tube_slots
from biobank.services.specimen_ids import allocate_accession_ids
from biobank.services.specimen_read import SpecimenRead, get_specimen, specimen_read
from biobank.services.specimens import record_new_specimen

QUANTITY_EPSILON = 1e-9


class Lineage(BaseModel):
    specimen: SpecimenRead
    ancestors: list[SpecimenRead]
    descendants: list[SpecimenRead]


def _check_drawable(session: Session, specimen: Specimen) -> None:
    """Available or checked out, and not set aside for a request (a reserved tube checked out
    to be shipped is someone else's material: its reservation is released first)."""
    if specimen.status not in {SpecimenStatus.available, SpecimenStatus.checked_out}:
        raise ValidationError(
            f"{specimen.accession_id} is {specimen.status.value}; nothing can be drawn from it",
            field="parent",
            value=specimen.accession_id,
        )
    held = specimen.status is SpecimenStatus.checked_out and standing_reservation(session, specimen)
    if held:
        raise ValidationError(
            f"{specimen.accession_id} is reserved for {held.request}; nothing can be drawn "
            "from it until the reservation is released",
            field="parent",
            value=specimen.accession_id,
        )


def _draw(session: Session, specimen: Specimen, amount: float, *, field: str) -> None:
    """Take `amount` from a specimen; over-drawing is refused, reaching zero depletes it."""
    _check_drawable(session, specimen)
    if amount > specimen.quantity + QUANTITY_EPSILON:
        raise ValidationError(
            f"{specimen.accession_id} has {specimen.quantity:g} {specimen.unit.value} left, "
            f"{amount:g} {specimen.unit.value} asked",
            field=field,
            value=amount,
        )
    specimen.quantity = round(max(0.0, specimen.quantity - amount), 6)
    if specimen.quantity <= QUANTITY_EPSILON:
        check_transition(specimen.status, SpecimenStatus.depleted, specimen=specimen.accession_id)
        specimen.status = SpecimenStatus.depleted


def _child(parent: Specimen, accession_id: str, **fields: Any) -> Specimen:
    """A new tube of `parent`'s participant and visit, collected and processed with it."""
    inherited = {
        "participant_id": parent.participant_id,
        "visit_id": parent.visit_id,
        "collected_at": parent.collected_at,
        "received_at": parent.received_at,
        "processed_at": parent.processed_at,
        "frozen_at": parent.frozen_at,
    }
    return Specimen(accession_id=accession_id, parent_id=parent.id, **inherited | fields)


def _save_parent(
    session: Session,
    *,
    actor: Actor,
    parent: Specimen,
    before: dict[str, Any],
    event_type: str,
    used: float,
    details: dict[str, object],
) -> None:
    parent.updated_at = utcnow()
    session.add(parent)
    flush(session)
    record_event(
        session,
        actor=actor,
        specimen=parent,
        event_type=event_type,
        quantity_change=-used,
        status_before=before["status"].value,
        details=details,
    )
    audit.record(
        session,
        actor=actor,
        action=f"specimen.{event_type}",
        entity="specimen",
        entity_id=parent.id,
        before=before,
        after=audit.snapshot(parent),
    )


def _prefix(session: Session, specimen: Specimen) -> str:
    """The accession ID prefix of the specimen's study, which its children share."""
    participant = session.get_one(Participant, specimen.participant_id)
    return session.get_one(Study, participant.study_id).id_prefix


def aliquot(
    session: Session,
    *,
    actor: Actor,
    parent: str,
    count: int,
    volume: float,
    destination: str | None = None,
    position: str | None = None,
    expected_version: int | None = None,
) -> list[SpecimenRead]:
    """Split `count` aliquots of `volume` (the parent's unit) from a parent. Auto-placed, they
    go into the parent's box when it is in the destination and has room for all of them."""
    require(actor, Permission.accession)
    if not isinstance(count, int) or not 1 <= count <= 500:
        raise ValidationError("count must be 1-500", field="count", value=count)
    volume = positive_quantity(volume, "volume")
    source = get_specimen(session, parent, field="parent", expected_version=expected_version)
    refuse_if_withdrawn(session, participant_id=source.participant_id, what="aliquoting")
    before = audit.snapshot(source)
    _draw(session, source, count * volume, field="volume")
    slots = new_tube_slots(
        session,
        destination=destination,
        position=position,
        specimen_type=source.specimen_type,
        count=count,
        near=source.box_id,
    )
    ids = allocate_accession_ids(session, prefix=_prefix(session, source), count=count)
    children = []
    for accession_id, slot in zip(ids, slots, strict=True):
        child = _child(
            source,
            accession_id,
            kind=SpecimenKind.aliquot,
            specimen_type=source.specimen_type,
            container_type=source.container_type,
            sprec_code=source.sprec_code,
            initial_quantity=volume,
            quantity=volume,
            unit=source.unit,
            freeze_thaw_count=source.freeze_thaw_count,
        )
        record_new_specimen(
            session,
            actor=actor,
            specimen=child,
            slot=slot,
            event_type="aliquoted_from",
            details={"parent": source.accession_id},
        )
        children.append(child)
    _save_parent(
        session,
        actor=actor,
        parent=source,
        before=before,
        event_type="aliquoted",
        used=count * volume,
        details={"children": [c.accession_id for c in children]},
    )
    return [specimen_read(session, c) for c in children]


def derive(
    session: Session,
    *,
    actor: Actor,
    parent: str,
    specimen_type: str,
    quantity: float,
    unit: QuantityUnit | str,
    used: float | None = None,
    destination: str | None = None,
    position: str | None = None,
    notes: str | None = None,
) -> SpecimenRead:
    """A derivative of a new type and unit (DNA from buffy coat), drawing `used` from the
    parent in the parent's unit."""
    require(actor, Permission.accession)
    source = get_specimen(session, parent, field="parent")
    refuse_if_withdrawn(session, participant_id=source.participant_id, what="deriving")
    specimen_type = specimen_type_code(specimen_type, derivative=True)
    quantity, unit = positive_quantity(quantity), quantity_unit(unit)
    before = audit.snapshot(source)
    drawn = positive_quantity(used, "used") if used is not None else 0.0
    _check_drawable(session, source)
    if drawn:
        _draw(session, source, drawn, field="used")
    (slot,) = new_tube_slots(
        session, destination=destination, position=position, specimen_type=specimen_type, count=1
    )
    (accession_id,) = allocate_accession_ids(session, prefix=_prefix(session, source), count=1)
    child = _child(
        source,
        accession_id,
        kind=SpecimenKind.derivative,
        specimen_type=specimen_type,
        initial_quantity=quantity,
        quantity=quantity,
        unit=unit,
        notes=notes,
    )
    record_new_specimen(
        session,
        actor=actor,
        specimen=child,
        slot=slot,
        event_type="derived_from",
        details={"parent": source.accession_id},
    )
    _save_parent(
        session,
        actor=actor,
        parent=source,
        before=before,
        event_type="derived",
        used=drawn,
        details={"derivative": child.accession_id},
    )
    return specimen_read(session, child)


def pool(
    session: Session,
    *,
    actor: Actor,
    sources: list[tuple[str, float]],
    destination: str | None = None,
    position: str | None = None,
) -> SpecimenRead:
    """Combine specimens of one participant (and unit) into a pool.

    Pools across participants are refused: consent and phenotypes follow one participant.
    """
    require(actor, Permission.accession)
    if len(sources) < 2:
        raise ValidationError("a pool needs at least two sources", field="sources")
    rows = [
        (get_specimen(session, acc, field="sources"), positive_quantity(q, "used"))
        for acc, q in sources
    ]
    first = rows[0][0]
    refuse_if_withdrawn(session, participant_id=first.participant_id, what="pooling")
    if len({s.id for s, _ in rows}) != len(rows):
        raise ValidationError("a source is named twice", field="sources")
    for specimen, _ in rows[1:]:
        for attribute, label in (
            ("participant_id", "participant"),
            ("specimen_type", "type"),
            ("unit", "unit"),
        ):
            if getattr(specimen, attribute) != getattr(first, attribute):
                raise ValidationError(
                    f"{specimen.accession_id} differs from {first.accession_id} in {label}: "
                    "a pool combines one participant's specimens of one type and unit",
                    field="sources",
                    value=specimen.accession_id,
                )
    befores = [(s, audit.snapshot(s), used) for s, used in rows]
    for specimen, used in rows:
        _draw(session, specimen, used, field="used")
    total = round(sum(used for _, used in rows), 6)
    (slot,) = new_tube_slots(
        session,
        destination=destination,
        position=position,
        specimen_type=first.specimen_type,
        count=1,
    )
    (accession_id,) = allocate_accession_ids(session, prefix=_prefix(session, first), count=1)
    same_visit = len({s.visit_id for s, _ in rows}) == 1
    child = Specimen(
        accession_id=accession_id,
        participant_id=first.participant_id,
        visit_id=first.visit_id if same_visit else None,
        kind=SpecimenKind.pool,
        specimen_type=first.specimen_type,
        container_type=first.container_type,
        initial_quantity=total,
        quantity=total,
        unit=first.unit,
    )
    record_new_specimen(
        session,
        actor=actor,
        specimen=child,
        slot=slot,
        event_type="pooled_from",
        details={"sources": [s.accession_id for s, _ in rows]},
    )
    assert child.id is not None  # saved just now
    for specimen, before, used in befores:
        assert specimen.id is not None  # a stored source
        session.add(SpecimenPoolSource(pool_id=child.id, source_id=specimen.id, quantity_used=used))
        _save_parent(
            session,
            actor=actor,
            parent=specimen,
            before=before,
            event_type="pooled",
            used=used,
            details={"pool": child.accession_id},
        )
    return specimen_read(session, child)


def _parents_of(session: Session, ids: set[int]) -> set[int]:
    direct = session.exec(select(Specimen.parent_id).where(col(Specimen.id).in_(ids))).all()
    pooled = session.exec(
        select(SpecimenPoolSource.source_id).where(col(SpecimenPoolSource.pool_id).in_(ids))
    ).all()
    return {parent for parent in direct if parent is not None} | set(pooled)


def _children_of(session: Session, ids: set[int]) -> set[int]:
    direct = session.exec(select(Specimen.id).where(col(Specimen.parent_id).in_(ids))).all()
    pooled = session.exec(
        select(SpecimenPoolSource.pool_id).where(col(SpecimenPoolSource.source_id).in_(ids))
    ).all()
    return {child for child in direct if child is not None} | set(pooled)


def _walk(session: Session, start: int, step: Callable[[Session, set[int]], set[int]]) -> list[int]:
    """The ids `step` reaches from `start`, generation by generation, each once."""
    seen: list[int] = []
    frontier = {start}
    while frontier:
        frontier = step(session, frontier) - set(seen) - {start}
        seen += sorted(frontier)
    return seen


def trace(session: Session, *, actor: Actor, accession: str) -> Lineage:
    """Every ancestor and every descendant of a tube, nearest first."""
    require(actor, Permission.view_inventory)
    specimen = get_specimen(session, accession)
    assert specimen.id is not None  # a stored row

    def reads(ids: list[int]) -> list[SpecimenRead]:
        return [specimen_read(session, session.get_one(Specimen, i)) for i in ids]

    return Lineage(
        specimen=specimen_read(session, specimen),
        ancestors=reads(_walk(session, specimen.id, _parents_of)),
        descendants=reads(_walk(session, specimen.id, _children_of)),
    )
