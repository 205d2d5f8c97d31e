"""Accession: receiving a primary specimen for a participant's visit; and a tube's detail.

The SPREC code is computed from what was captured where the captured values determine an
element, and checked element by element when given whole (`domain.specimen_values`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, select

from biobank.db import constraint_error, flush, insert_many
from biobank.domain import sprec
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import (
    DERIVATIVE_TYPES,
    check_times,
    far_from_visit,
    positive_quantity,
    quantity_unit,
    specimen_type_code,
    sprec_code_for,
    temperature_code,
)
from biobank.domain.vocabulary import QuantityUnit, SpecimenKind
from biobank.errors import ValidationError
from biobank.models import Specimen, SpecimenEvent, Visit, utcnow
from biobank.models.base import Table
from biobank.services import audit
from biobank.services.consent_checks import refuse_if_withdrawn
from biobank.services.events import EventRead, custody_event, specimen_events
from biobank.services.kits import claim_kit_tube
from biobank.services.participants import (
    get_participant_row,
    missing_visit,
    participant_visit,
)
from biobank.services.slots import Slot, new_tube_slots, occupy, position_of
from biobank.services.specimen_ids import allocate_accession_ids
from biobank.services.specimen_read import (
    SpecimenRead,
    get_specimen,
    specimen_read,
    specimens_where,
)
from biobank.stored_text import check_row


class SpecimenDetail(BaseModel):
    specimen: SpecimenRead
    children: list[str]
    events: list[EventRead]


def record_new_specimen(
    session: Session,
    *,
    actor: Actor,
    specimen: Specimen,
    slot: Slot | None,
    event_type: str,
    details: dict[str, object] | None = None,
    reason: str | None = None,
) -> None:
    """Save a tube just made (a primary, an aliquot, a derivative, a pool), placed at `slot`
    when it has one, with its first custody event and its audit entry."""
    if slot is not None:
        occupy(session, specimen, slot)  # placed as it is inserted: one INSERT, no UPDATE
    _insert(session, specimen)
    audit.record(session, actor=actor, action=f"specimen.{event_type}", entity="specimen",
                 entity_id=specimen.id, after=audit.snapshot(specimen), reason=reason)  # fmt: skip
    event = custody_event(
        actor=actor,
        specimen=specimen,
        event_type=event_type,
        to_slot=position_of(specimen),
        quantity_change=specimen.quantity,
        reason=reason,
        details=details,
    )
    check_row(event)
    with _refused_as_constraint():  # nothing reads it back here: written, not held
        insert_many(session, SpecimenEvent.__table__, [_values(event)])


def _insert(session: Session, specimen: Specimen) -> None:
    """Write a new tube's row by one INSERT built once, then hold it in the session as if
    read: flushing one new object costs the ORM several times the statement. Its text is
    checked, and a refused constraint reported, as a flush would; what the session had
    pending is written first, as before any flush."""
    check_row(specimen)
    flush(session)
    with _refused_as_constraint():
        specimen.id = session.execute(_insert_specimen(), _values(specimen)).scalar_one()
    make_transient_to_detached(specimen)
    session.add(specimen)


@cache
def _insert_specimen() -> sa.Insert:
    table = Specimen.__table__
    return sa.insert(table).returning(table.c.id)


def _values(row: Table) -> dict[str, Any]:
    """A new row's values of every column but its id (the database's to give)."""
    return {name: getattr(row, name) for name in _columns(row.__table__)}


@cache
def _columns(table: sa.Table) -> tuple[str, ...]:
    return tuple(c.key for c in table.columns if c.key != "id")


@contextmanager
def _refused_as_constraint() -> Iterator[None]:
    try:
        yield
    except sa.exc.IntegrityError as error:
        raise constraint_error(error) from error


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
    """Receive a primary specimen for a participant's visit, optionally placing it; or an
    extract received as such (DNA, RNA, protein or cDNA from another biobank: a derivative
    whose parent is not here, with no SPREC code of its own). A tube
    from a collection kit (`kit_id`, the scanned label) keeps the ID reserved for it. A
    collection more than `visit_gap_days` from the visit (the front ends pass their setting;
    None: not checked) is refused (`far_from_visit`) unless `force`d, and a forced one says
    so in its event and audit entry. Given `room_for_aliquots` (the aliquots `aliquot` splits
    next into the same destination), an auto-placed primary goes where they fit beside it, in
    one box when one has room for all."""
    require(actor, Permission.accession)
    owner, study, visit_row = participant_visit(session, participant, visit)
    assert owner.id is not None  # a stored participant
    refuse_if_withdrawn(session, participant_id=owner.id, what="accession")
    if visit is not None and visit_row is None:
        raise missing_visit(owner, visit)
    specimen_type = specimen_type_code(specimen_type, derivative=True)
    kind = SpecimenKind.derivative if specimen_type in DERIVATIVE_TYPES else SpecimenKind.primary
    reserved = None
    if kit_id is not None:
        reserved = claim_kit_tube(
            session, kit_id, owner=owner, visit=visit_row, type_code=specimen_type
        )
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
    unit = quantity_unit(unit)
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
    slot = new_tube_slots(
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
        kind=kind,
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
    record_new_specimen(
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
