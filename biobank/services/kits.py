"""Collection kits: accession IDs reserved for one participant's visit and printed before the
draw, so tubes arrive labelled; scanning one at receipt accessions it under that ID."""

from __future__ import annotations

import secrets
from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.specimen_values import specimen_type_code
from biobank.errors import ValidationError
from biobank.models import Participant, ReservedAccession, Study, Visit
from biobank.services import audit
from biobank.services.participants import CODE_ALPHABET, find_visit, get_participant_row
from biobank.services.specimen_ids import allocate_accession_ids

MAX_KIT = 50


class ReservedRead(BaseModel):
    accession_id: str
    kit_code: str
    participant_code: str
    visit_label: str
    specimen_type: str | None
    reserved_at: datetime
    accessioned: bool


class KitRead(BaseModel):
    kit_code: str
    participant_code: str
    visit_label: str
    accession_ids: list[str]


def reserve_kit(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    visit: str,
    count: int,
    specimen_type: str | None = None,
) -> KitRead:
    """Reserve `count` accession IDs for a participant's visit."""
    require(actor, Permission.accession)
    if not isinstance(count, int) or not 1 <= count <= MAX_KIT:
        raise ValidationError(f"a kit has 1-{MAX_KIT} tubes", field="count", value=count)
    owner = get_participant_row(session, participant)
    visit_row = find_visit(session, owner, visit)
    type_code = specimen_type_code(specimen_type) if specimen_type else None
    assert visit_row.id is not None  # a stored visit
    prefix = session.get_one(Study, owner.study_id).id_prefix
    kit_code = "KIT-" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    ids = allocate_accession_ids(session, prefix=prefix, count=count)
    for accession_id in ids:
        session.add(
            ReservedAccession(
                accession_id=accession_id,
                kit_code=kit_code,
                participant_id=visit_row.participant_id,
                visit_id=visit_row.id,
                specimen_type=type_code,
                reserved_by_id=actor.user_id,
            )
        )
    audit.record(
        session,
        actor=actor,
        action="kit.reserve",
        entity="kit",
        entity_id=kit_code,
        after={
            "participant": owner.code,
            "visit": visit_row.label,
            "specimen_type": type_code,
            "accession_ids": ids,
        },
    )
    return KitRead(
        kit_code=kit_code,
        participant_code=owner.code,
        visit_label=visit_row.label,
        accession_ids=ids,
    )


def find_reserved(session: Session, accession_id: str) -> ReservedRead | None:
    """Whom a kit reserved this accession ID for (participant, visit, type) and whether it
    is accessioned yet; None if no kit holds it. A scan of a kit tube is answered from here."""
    row = session.exec(
        select(ReservedAccession, Participant.code, Visit.label)
        .join(Participant, col(Participant.id) == ReservedAccession.participant_id)
        .join(Visit, col(Visit.id) == ReservedAccession.visit_id)
        .where(ReservedAccession.accession_id == accession_id)
    ).first()
    if row is None:
        return None
    reserved, participant_code, visit_label = row
    return ReservedRead(
        accession_id=reserved.accession_id,
        kit_code=reserved.kit_code,
        participant_code=participant_code,
        visit_label=visit_label,
        specimen_type=reserved.specimen_type,
        reserved_at=reserved.reserved_at,
        accessioned=reserved.specimen_id is not None,
    )


def claim_kit_tube(
    session: Session, kit_id: str, *, owner: Participant, visit: Visit | None, type_code: str
) -> ReservedAccession:
    """The reservation a kit tube's label names, checked against what is being accessioned
    (the caller records the specimen on it)."""
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
