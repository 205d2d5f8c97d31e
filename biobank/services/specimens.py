"""Accession and lineage: primary specimens, aliquots, derivatives and pools.

Children inherit their parent's participant and visit (and so its consent). The SPREC code is
computed from what was captured where the captured values determine an element, and checked
element by element when given whole.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.db import flush
from biobank.domain import sprec
from biobank.domain.lifecycle import check_transition
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import ValidationError
from biobank.models import (
    Participant,
    QuantityUnit,
    ReservedAccession,
    Specimen,
    SpecimenKind,
    SpecimenPoolSource,
    SpecimenStatus,
    Study,
    Visit,
    utcnow,
)
from biobank.services import audit
from biobank.services.consent_checks import refuse_if_withdrawn
from biobank.services.custody import Slot, occupy, resolve_destination
from biobank.services.events import EventRead, record_event, specimen_events
from biobank.services.participants import (
    get_participant_row,
    missing_visit,
    participant_visit,
)
from biobank.services.reservations import standing_reservation
from biobank.services.specimen_ids import allocate_accession_ids
from biobank.services.specimen_read import (
    SpecimenRead,
    get_specimen,
    specimen_read,
    specimens_where,
)

# Derivatives extracted in the lab; not SPREC primary types.
DERIVATIVE_TYPES = frozenset({"DNA", "RNA", "PRO", "CDN"})
TEMPERATURES = ("RT", "2-10C", "35-38C")
CLOCK_SKEW = timedelta(minutes=10)
QUANTITY_EPSILON = 1e-9


class Lineage(BaseModel):
    specimen: SpecimenRead
    ancestors: list[SpecimenRead]
    descendants: list[SpecimenRead]


class SpecimenDetail(BaseModel):
    specimen: SpecimenRead
    children: list[str]
    events: list[EventRead]


def _unit(value: QuantityUnit | str) -> QuantityUnit:
    try:
        return QuantityUnit(value)
    except ValueError:
        allowed = ", ".join(u.value for u in QuantityUnit)
        raise ValidationError(
            f"unknown unit {value!r} (allowed: {allowed})", field="unit", value=value
        ) from None


def positive_quantity(value: float, field: str = "quantity") -> float:
    """A quantity as a float above zero (to 6 decimals), or a ValidationError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a number", field=field, value=value)
    if value <= 0:
        raise ValidationError(f"{field} must be more than zero", field=field, value=value)
    return round(float(value), 6)


def specimen_type_code(value: str, *, derivative: bool = False) -> str:
    """A SPREC type code, uppercased; DNA, RNA and PRO also for a `derivative`."""
    code = value.strip().upper()
    known = sprec.is_fluid_type(code) or code in sprec.solid_types()
    if not known and not (derivative and code in DERIVATIVE_TYPES):
        raise ValidationError(
            f"unknown specimen type {value!r}: use a SPREC type code such as SER, PL1, BUF, "
            f"CEL, URN or TIS{' (or DNA, RNA, PRO)' if derivative else ''}",
            field="specimen_type",
            value=value,
        )
    return code


def temperature_code(value: str | None, field: str) -> str | None:
    """A centrifugation temperature as SPREC names it (RT, 2-10C, 35-38C; a degree sign
    is allowed), or None if none was given."""
    if value is None:
        return None
    text = value.strip().upper().replace("°", "")
    if text not in TEMPERATURES:
        raise ValidationError(
            f"{field} must be one of {', '.join(TEMPERATURES)}", field=field, value=value
        )
    return text


TIME_WORDS = {
    "collected_at": "collection time",
    "received_at": "receipt time",
    "processed_at": "processing time",
    "frozen_at": "freezing time",
}


def check_times(times: dict[str, datetime | None]) -> None:
    """Times are zoned, not in the future, and in order: collected, processed, frozen; and
    received after collected."""
    now = utcnow()
    for field, value in times.items():
        if value is None:
            continue
        if value.tzinfo is None:
            raise ValidationError(
                f"{TIME_WORDS[field]} needs a time zone", field=field, value=value
            )
        if value > now + CLOCK_SKEW:
            raise ValidationError(f"{TIME_WORDS[field]} is in the future", field=field, value=value)
    pairs = [("collected_at", "processed_at"), ("processed_at", "frozen_at")]
    pairs += [("collected_at", "frozen_at"), ("collected_at", "received_at")]
    for first, second in pairs:
        earlier, later = times.get(first), times.get(second)
        if earlier and later and later < earlier:
            raise ValidationError(
                f"{TIME_WORDS[second]} is before {TIME_WORDS[first]}", field=second, value=later
            )


class FarFromVisit(ValidationError):
    """A collection further from its visit's date than `visit_gap_days` allows: usually a
    slip (a wrong date, or the wrong visit chosen), so accession asks to be forced."""

    def __init__(
        self, *, visit: str, visit_date: date, collected_on: date, gap: int, allowed: int
    ) -> None:
        self.fact = f"collected {collected_on}, {gap:,} days from visit {visit!r} ({visit_date})"
        self.forced = f"forced past visit_gap_days ({allowed}): {self.fact}"
        self.collected_on, self.allowed = collected_on, allowed
        super().__init__(
            f"{self.fact}: more than visit_gap_days ({allowed}) allows; check the collection "
            "time and the visit, or force it (--force)",
            field="collected_at",
            value=collected_on,
        )


def far_from_visit(
    *, visit: str, visit_date: date | None, collected_at: datetime | None, allowed: int
) -> FarFromVisit | None:
    """The refusal of a collection more than `allowed` days from its visit's date (the
    collection's day where it was taken, this workstation's zone), or None. A visit or a
    collection without a date (legacy records) is never far. Accession raises it unless
    forced; an import may make it a fault of the row."""
    if visit_date is None or collected_at is None:
        return None
    collected_on = collected_at.astimezone().date()
    gap = abs((collected_on - visit_date).days)
    if gap <= allowed:
        return None
    return FarFromVisit(
        visit=visit, visit_date=visit_date, collected_on=collected_on, gap=gap, allowed=allowed
    )


def sprec_code_for(
    *,
    given: str | None,
    specimen_type: str,
    container: str | None,
    collected_at: datetime | None,
    processed_at: datetime | None,
    frozen_at: datetime | None,
    precentrifugation_temperature: str | None,
    postcentrifugation_temperature: str | None,
    centrifugation: str | None,
    second_centrifugation: str | None,
    storage: str | None,
) -> str | None:
    """The SPREC code of a tube: the one `given`, checked against its type and container, or
    one worked out from its times and processing (X where unknown); None for a solid tissue
    with none given."""
    if given:
        code = sprec.parse_sprec(given.strip().upper())
        if code.type != specimen_type:
            raise ValidationError(
                f"SPREC code {given} is for type {code.type}, not {specimen_type}",
                field="sprec_code",
                value=given,
            )
        if container and isinstance(code, sprec.FluidSprec) and code.container != container:
            raise ValidationError(
                f"SPREC code {given} names container {code.container}, not {container}",
                field="sprec_code",
                value=given,
            )
        return str(code)
    if not sprec.is_fluid_type(specimen_type):
        return None
    pre = "X"
    if collected_at and processed_at:
        pre = sprec.precentrifugation_delay(
            collected_at, processed_at, precentrifugation_temperature
        )
    post = "X"
    if processed_at and frozen_at:
        post = sprec.postcentrifugation_delay(
            processed_at, frozen_at, postcentrifugation_temperature
        )
    return sprec.fluid_code(
        type=specimen_type,
        container=container or "XXX",
        precentrifugation=pre,
        centrifugation=(centrifugation or "X").upper(),
        second_centrifugation=(second_centrifugation or "X").upper(),
        postcentrifugation=post,
        storage=(storage or "X").upper(),
    )


def _record_new(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    slot: Slot | None,
    event_type: str,
    details: dict | None = None,
    reason: str | None = None,
) -> None:
    if slot is not None:
        occupy(session, specimen, slot)  # placed as it is inserted: one INSERT, no UPDATE
    session.add(specimen)
    flush(session)
    record_event(
        session,
        actor=actor,
        specimen=specimen,
        event_type=event_type,
        to_slot=(specimen.box_id, specimen.position_row, specimen.position_col),
        quantity_change=specimen.quantity,
        reason=reason,
        details=details,
    )
    audit.record(
        session,
        actor=actor,
        action=f"specimen.{event_type}",
        entity="specimen",
        entity_id=specimen.id,
        after=audit.snapshot(specimen),
        reason=reason,
    )


def _slots(
    session: Session,
    *,
    destination: str | None,
    position: str | None,
    specimen_type: str,
    count: int,
    near: int | None = None,
) -> list[Slot | None]:
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


def accession(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    specimen_type: str,
    quantity: float,
    unit: QuantityUnit | str,
    visit: str | None = None,
    container_type: str | None = None,
    collected_at: datetime | None = None,
    received_at: datetime | None = None,
    processed_at: datetime | None = None,
    frozen_at: datetime | None = None,
    precentrifugation_temperature: str | None = None,
    postcentrifugation_temperature: str | None = None,
    centrifugation: str | None = None,
    second_centrifugation: str | None = None,
    storage: str | None = None,
    sprec_code: str | None = None,
    legacy_id: str | None = None,
    notes: str | None = None,
    destination: str | None = None,
    position: str | None = None,
    room_for_aliquots: int = 0,
    kit_id: str | None = None,
    visit_gap_days: int | None = None,
    force: bool = False,
) -> SpecimenRead:
    """Receive a primary specimen for a participant's visit, optionally placing it. A tube
    from a collection kit (`kit_id`, the scanned label) keeps the ID reserved for it. A
    collection more than `visit_gap_days` from the visit (the front ends pass their setting;
    None: not checked) is refused (`far_from_visit`) unless `force`d, and a forced one says
    so in its event and audit entry. Given `room_for_aliquots` (the aliquots `aliquot` splits
    next into the same destination), an auto-placed primary goes where they fit beside it, in
    one box when one has room for all."""
    require(actor, Permission.accession)
    owner, study, visit_row = participant_visit(session, participant, visit)
    refuse_if_withdrawn(session, participant_id=owner.id, what="accession")
    if visit is not None and visit_row is None:
        raise missing_visit(owner, visit)
    specimen_type = specimen_type_code(specimen_type)
    reserved = None
    if kit_id is not None:
        reserved = _claim(session, kit_id, owner=owner, visit=visit_row, type_code=specimen_type)
        visit_row = session.get(Visit, reserved.visit_id)
    container = container_type.strip().upper() if container_type else None
    fluid = sprec.is_fluid_type(specimen_type)
    if container and fluid and container not in sprec.allowed_values("fluid", "container"):
        raise ValidationError(
            f"unknown primary container {container_type!r} (a SPREC container code such as "
            "SST, PED, SCI or CPT)",
            field="container_type",
            value=container_type,
        )
    quantity = positive_quantity(quantity)
    unit = _unit(unit)
    received_at = received_at or utcnow()
    check_times(
        {
            "collected_at": collected_at,
            "received_at": received_at,
            "processed_at": processed_at,
            "frozen_at": frozen_at,
        }
    )
    born = owner.birth_year
    if collected_at is not None and born is not None and collected_at.astimezone().year < born:
        raise ValidationError(
            f"collection time is before {owner.code} was born ({born})",
            field="collected_at",
            value=collected_at,
        )
    far = None
    if visit_row is not None and visit_gap_days is not None:
        far = far_from_visit(
            visit=visit_row.label,
            visit_date=visit_row.visit_date,
            collected_at=collected_at,
            allowed=visit_gap_days,
        )
    if far and not force:
        raise far
    code = sprec_code_for(
        given=sprec_code,
        specimen_type=specimen_type,
        container=container,
        collected_at=collected_at,
        processed_at=processed_at,
        frozen_at=frozen_at,
        precentrifugation_temperature=temperature_code(
            precentrifugation_temperature, "precentrifugation_temperature"
        ),
        postcentrifugation_temperature=temperature_code(
            postcentrifugation_temperature, "postcentrifugation_temperature"
        ),
        centrifugation=centrifugation,
        second_centrifugation=second_centrifugation,
        storage=storage,
    )
    if legacy_id is not None:
        legacy_id = legacy_id.strip()
        if session.exec(select(Specimen.id).where(Specimen.legacy_id == legacy_id)).first():
            raise ValidationError(
                f"legacy ID {legacy_id} is already recorded", field="legacy_id", value=legacy_id
            )
    room = 1 + room_for_aliquots if position is None and room_for_aliquots > 0 else 1
    slot = _slots(
        session, destination=destination, position=position, specimen_type=specimen_type, count=room
    )[0]  # the set's first position; `aliquot` fills the others beside it (`near`)
    if reserved is not None:
        accession_id = reserved.accession_id
    else:
        (accession_id,) = allocate_accession_ids(session, prefix=study.id_prefix, count=1)
    specimen = Specimen(
        accession_id=accession_id,
        legacy_id=legacy_id,
        participant_id=owner.id,
        visit_id=visit_row.id if visit_row else None,
        kind=SpecimenKind.primary,
        specimen_type=specimen_type,
        container_type=container,
        sprec_code=code,
        collected_at=collected_at,
        received_at=received_at,
        processed_at=processed_at,
        frozen_at=frozen_at,
        precentrifugation_temperature=precentrifugation_temperature,
        postcentrifugation_temperature=postcentrifugation_temperature,
        initial_quantity=quantity,
        quantity=quantity,
        unit=unit,
        notes=notes,
    )
    _record_new(
        session,
        actor=actor,
        specimen=specimen,
        slot=slot,
        event_type="accessioned",
        reason=far.forced if far else None,
    )
    if reserved is not None:
        reserved.specimen_id = specimen.id
        session.add(reserved)
    return specimen_read(session, specimen)


def _claim(
    session: Session, kit_id: str, *, owner: Participant, visit: Visit | None, type_code: str
) -> ReservedAccession:
    """The reservation a kit tube's label names, checked against what is being accessioned."""
    code = kit_id.strip().upper()
    reserved = session.exec(
        select(ReservedAccession).where(ReservedAccession.accession_id == code)
    ).first()
    if reserved is None:
        raise ValidationError(f"{code} is not a reserved kit ID", field="kit_id", value=kit_id)
    if reserved.specimen_id is not None:
        raise ValidationError(f"{code} is already accessioned", field="kit_id", value=kit_id)
    if reserved.participant_id != owner.id:
        raise ValidationError(
            f"{code} was reserved for another participant, not {owner.code}",
            field="participant",
            value=owner.code,
        )
    if visit is not None and reserved.visit_id != visit.id:
        raise ValidationError(
            f"{code} was reserved for another visit, not {visit.label}",
            field="visit",
            value=visit.label,
        )
    if reserved.specimen_type and reserved.specimen_type != type_code:
        raise ValidationError(
            f"{code} was reserved for {reserved.specimen_type}, not {type_code}",
            field="specimen_type",
            value=type_code,
        )
    return reserved


def _check_drawable(session: Session, specimen: Specimen) -> None:
    """Available or checked out, and not set aside for a request (a reserved tube checked out
    to be shipped is someone else's material: its reservation is released first)."""
    if specimen.status not in {SpecimenStatus.available, SpecimenStatus.checked_out}:
        raise ValidationError(
            f"{specimen.accession_id} is {specimen.status.value}; nothing can be drawn from it",
            field="parent",
            value=specimen.accession_id,
        )
    held = specimen.status is SpecimenStatus.checked_out and standing_reservation(
        session, specimen.id
    )
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


def _child(parent: Specimen, accession_id: str, **fields) -> Specimen:
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
    before: dict,
    event_type: str,
    used: float,
    details: dict,
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
    participant = session.get(Participant, specimen.participant_id)
    return session.get(Study, participant.study_id).id_prefix


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
    slots = _slots(
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
        _record_new(
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
    quantity, unit = positive_quantity(quantity), _unit(unit)
    before = audit.snapshot(source)
    drawn = positive_quantity(used, "used") if used is not None else 0.0
    _check_drawable(session, source)
    if drawn:
        _draw(session, source, drawn, field="used")
    (slot,) = _slots(
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
    _record_new(
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
    (slot,) = _slots(
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
    _record_new(
        session,
        actor=actor,
        specimen=child,
        slot=slot,
        event_type="pooled_from",
        details={"sources": [s.accession_id for s, _ in rows]},
    )
    for specimen, before, used in befores:
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
    direct = session.exec(
        select(Specimen.parent_id).where(Specimen.id.in_(ids), Specimen.parent_id.is_not(None))
    ).all()
    pooled = session.exec(
        select(SpecimenPoolSource.source_id).where(SpecimenPoolSource.pool_id.in_(ids))
    ).all()
    return set(direct) | set(pooled)


def _children_of(session: Session, ids: set[int]) -> set[int]:
    direct = session.exec(select(Specimen.id).where(Specimen.parent_id.in_(ids))).all()
    pooled = session.exec(
        select(SpecimenPoolSource.pool_id).where(SpecimenPoolSource.source_id.in_(ids))
    ).all()
    return set(direct) | set(pooled)


def _walk(session: Session, start: int, step) -> list[int]:
    seen: list[int] = []
    frontier = {start}
    while frontier:
        frontier = step(session, frontier) - set(seen) - {start}
        seen += sorted(frontier)
    return seen


def lineage(session: Session, *, actor: Actor, accession: str) -> Lineage:
    """Every ancestor and every descendant, through aliquots, derivatives and pools."""
    require(actor, Permission.view_inventory)
    specimen = get_specimen(session, accession)

    def reads(ids: list[int]) -> list[SpecimenRead]:
        return [specimen_read(session, session.get(Specimen, i)) for i in ids]

    return Lineage(
        specimen=specimen_read(session, specimen),
        ancestors=reads(_walk(session, specimen.id, _parents_of)),
        descendants=reads(_walk(session, specimen.id, _children_of)),
    )


def show_specimen(session: Session, *, actor: Actor, accession: str) -> SpecimenDetail:
    """A tube with its aliquots and derivatives and its custody history."""
    require(actor, Permission.view_inventory)
    specimen = get_specimen(session, accession)
    children = session.exec(
        select(Specimen.accession_id)
        .where(Specimen.parent_id == specimen.id)
        .order_by(Specimen.accession_id)
    ).all()
    return SpecimenDetail(
        specimen=specimen_read(session, specimen),
        children=list(children),
        events=specimen_events(session, specimen),
    )


def list_specimens(session: Session, *, actor: Actor, participant: str) -> list[SpecimenRead]:
    """A participant's specimens in the order they were made (a primary before its aliquots),
    by the lean read path scans use."""
    require(actor, Permission.view_inventory)
    row = get_participant_row(session, participant)
    return specimens_where(session, Specimen.__table__.c.participant_id == row.id)
