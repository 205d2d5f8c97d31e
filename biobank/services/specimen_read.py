"""The read model of a specimen, built by one Core query for every caller.

Scans look specimens up all day, so this path stays lean: one SELECT with its joins (the
box's path is stored on the box), statements built once, no ORM objects.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from biobank.errors import ConcurrentChange, NotFound
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
    consent_withdrawal_id: int | None = None
    warnings: list[str] = Field(default_factory=list)


_OWN_COLUMNS = (
    "id", "accession_id", "legacy_id", "kind", "specimen_type", "container_type", "sprec_code",
    "collected_at", "received_at", "processed_at", "frozen_at", "initial_quantity", "quantity",
    "unit", "status", "freeze_thaw_count", "minutes_out", "position_row", "position_col",
    "version", "consent_withdrawal_id",
)  # fmt: skip


@cache
def _query() -> sa.Select:
    specimen = Specimen.__table__
    participant, visit, box = Participant.__table__, Visit.__table__, StorageUnit.__table__
    parent = specimen.alias("parent")
    return sa.select(
        *(specimen.c[name] for name in _OWN_COLUMNS),
        participant.c.code.label("participant_code"),
        visit.c.label.label("visit_label"),
        parent.c.accession_id.label("parent_accession_id"),
        box.c.barcode.label("box_barcode"),
        box.c.path.label("box_path"),
        box.c.grid_cols.label("box_cols"),
        box.c.position_labels.label("box_labels"),
    ).select_from(
        specimen.join(participant, participant.c.id == specimen.c.participant_id)
        .outerjoin(visit, visit.c.id == specimen.c.visit_id)
        .outerjoin(parent, parent.c.id == specimen.c.parent_id)
        .outerjoin(box, box.c.id == specimen.c.box_id)
    )


@cache
def _by(column: str) -> sa.Select:
    return _query().where(Specimen.__table__.c[column] == sa.bindparam("value"))


def _read(row: sa.Row) -> SpecimenRead:
    data = row._mapping
    position = location = None
    if data["box_barcode"] is not None:
        position = position_label(
            data["position_row"], data["position_col"], cols=data["box_cols"],
            scheme=data["box_labels"],
        )  # fmt: skip
        location = f"{data['box_path']} {position}"
    return SpecimenRead(
        **{
            name: data[name]
            for name in _OWN_COLUMNS
            if name not in {"position_row", "position_col"}
        }
        | {
            "kind": data["kind"].value,
            "unit": data["unit"].value,
            "status": data["status"].value,
            "participant_code": data["participant_code"],
            "visit_label": data["visit_label"],
            "parent_accession_id": data["parent_accession_id"],
            "box_barcode": data["box_barcode"],
            "position": position,
            "location": location,
        }
    )


def find_specimen(session: Session, code: str) -> SpecimenRead | None:
    """By accession ID, or else by legacy ID; None when neither matches."""
    for column, value in (("accession_id", code.strip().upper()), ("legacy_id", code.strip())):
        row = session.execute(_by(column), {"value": value}).first()
        if row is not None:
            return _read(row)
    return None


def specimens_where(session: Session, condition: sa.ColumnElement[bool]) -> list[SpecimenRead]:
    """The specimens matching `condition` (over the specimen table), in the order made."""
    query = _query().where(condition).order_by(Specimen.__table__.c.id)
    return [_read(row) for row in session.execute(query)]


def specimen_read(session: Session, specimen: Specimen) -> SpecimenRead:
    session.flush()
    return _read(session.execute(_by("id"), {"value": specimen.id}).one())


def get_specimen(
    session: Session,
    accession: str,
    *,
    field: str = "specimen",
    expected_version: int | None = None,
) -> Specimen:
    """The row to change, by accession ID (or, failing that, by legacy ID). With the version
    a screen showed, a change made elsewhere since is refused rather than overwritten."""
    text = accession.strip().upper()
    specimen = session.exec(select(Specimen).where(Specimen.accession_id == text)).first()
    if specimen is None:
        specimen = session.exec(
            select(Specimen).where(Specimen.legacy_id == accession.strip())
        ).first()
    if specimen is None:
        raise NotFound(f"no specimen {accession!r}", field=field, value=accession)
    if expected_version is not None and specimen.version != expected_version:
        raise ConcurrentChange(
            f"{specimen.accession_id} was changed at another terminal since it was read "
            f"(version {expected_version}, now {specimen.version}); reload and try again",
            field="version",
            value=expected_version,
        )
    return specimen
