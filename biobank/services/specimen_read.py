"""The read model of a specimen, and finding one by accession ID."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlmodel import Session, select

from biobank.errors import NotFound
from biobank.models import Participant, Specimen, StorageUnit, Visit
from biobank.positions import position_label


class SpecimenRead(BaseModel):
    id: int
    accession_id: str
    legacy_id: str | None
    participant_code: str
    visit_label: str | None
    parent_accession_id: str | None
    kind: str
    specimen_type: str
    container_type: str | None
    sprec_code: str | None
    collected_at: datetime | None
    received_at: datetime | None
    processed_at: datetime | None
    frozen_at: datetime | None
    initial_quantity: float
    quantity: float
    unit: str
    status: str
    freeze_thaw_count: int
    minutes_out: int
    box_barcode: str | None
    position: str | None
    location: str | None
    version: int
    warnings: list[str] = Field(default_factory=list)


def get_specimen(session: Session, accession: str, *, field: str = "specimen") -> Specimen:
    """By accession ID (or, failing that, by legacy ID)."""
    text = accession.strip().upper()
    specimen = session.exec(select(Specimen).where(Specimen.accession_id == text)).first()
    if specimen is None:
        specimen = session.exec(
            select(Specimen).where(Specimen.legacy_id == accession.strip())
        ).first()
    if specimen is None:
        raise NotFound(f"no specimen {accession!r}", field=field, value=accession)
    return specimen


def specimen_read(session: Session, specimen: Specimen) -> SpecimenRead:
    from biobank.services.storage import unit_path

    participant = session.get(Participant, specimen.participant_id)
    visit = session.get(Visit, specimen.visit_id) if specimen.visit_id else None
    parent = session.get(Specimen, specimen.parent_id) if specimen.parent_id else None
    box = session.get(StorageUnit, specimen.box_id) if specimen.box_id else None
    position = None
    if box is not None:
        position = position_label(
            specimen.position_row,
            specimen.position_col,
            cols=box.grid_cols,
            scheme=box.position_labels,
        )
    return SpecimenRead(
        id=specimen.id,
        accession_id=specimen.accession_id,
        legacy_id=specimen.legacy_id,
        participant_code=participant.code,
        visit_label=visit.label if visit else None,
        parent_accession_id=parent.accession_id if parent else None,
        kind=specimen.kind.value,
        specimen_type=specimen.specimen_type,
        container_type=specimen.container_type,
        sprec_code=specimen.sprec_code,
        collected_at=specimen.collected_at,
        received_at=specimen.received_at,
        processed_at=specimen.processed_at,
        frozen_at=specimen.frozen_at,
        initial_quantity=specimen.initial_quantity,
        quantity=specimen.quantity,
        unit=specimen.unit.value,
        status=specimen.status.value,
        freeze_thaw_count=specimen.freeze_thaw_count,
        minutes_out=specimen.minutes_out,
        box_barcode=box.barcode if box else None,
        position=position,
        location=f"{unit_path(session, box)} {position}" if box else None,
        version=specimen.version,
    )
