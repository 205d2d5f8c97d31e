"""The read model of a specimen, built by one Core query for every caller.

Scans look specimens up all day, so this path stays lean: one SELECT with its joins (the
box's path is stored on the box), statements built once, no ORM objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any, cast

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, select

from biobank.db import driver_cursor
from biobank.domain.identifiers import check_specimen_id, misread_message
from biobank.domain.positions import position_label
from biobank.errors import ConcurrentChange, NotFound, ValidationError
from biobank.models import Participant, Specimen, StorageUnit, Visit


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
    notes: str | None = None  # free text, as typed or imported (a legacy sheet's comments)
    warnings: list[str] = Field(default_factory=list)


_OWN_COLUMNS = (
    "id", "accession_id", "legacy_id", "kind", "specimen_type", "container_type", "sprec_code",
    "collected_at", "received_at", "processed_at", "frozen_at", "initial_quantity", "quantity",
    "unit", "status", "freeze_thaw_count", "minutes_out", "version", "consent_withdrawal_id",
    "notes",
)  # fmt: skip
_JOINED = ("participant_code", "visit_label", "parent_accession_id", "box_barcode")
_ENUMS = ("kind", "unit", "status")


@cache
def _query() -> sa.Select[*tuple[Any, ...]]:
    """The read model's columns in `_OWN_COLUMNS + _JOINED` order, then what places the tube.

    Enumerations are read as their stored text (the read model's own type)."""
    specimen = Specimen.__table__
    participant, visit, box = Participant.__table__, Visit.__table__, StorageUnit.__table__
    parent = specimen.alias("parent")
    return sa.select(
        *(
            sa.type_coerce(specimen.c[name], sa.String) if name in _ENUMS else specimen.c[name]
            for name in _OWN_COLUMNS
        ),
        participant.c.code.label("participant_code"),
        visit.c.label.label("visit_label"),
        parent.c.accession_id.label("parent_accession_id"),
        box.c.barcode.label("box_barcode"),
        specimen.c.position_row,
        specimen.c.position_col,
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
def _by(column: str) -> sa.Select[*tuple[Any, ...]]:
    return _query().where(Specimen.__table__.c[column] == sa.bindparam("value"))


_NAMES = _OWN_COLUMNS + _JOINED


def _read(row: Sequence[Any]) -> SpecimenRead:
    """The read model of one row of `_query()`."""
    fields = dict(zip(_NAMES, row[: len(_NAMES)], strict=True))
    row_, col, path, cols, labels = row[len(_NAMES) :]
    if fields["box_barcode"] is not None:
        position = position_label(row_, col, cols=cols, scheme=labels)
        fields |= {"position": position, "location": f"{path} {position}"}
    else:
        fields |= {"position": None, "location": None}
    return SpecimenRead(**fields)


def find_specimen(session: Session, code: str) -> SpecimenRead | None:
    """By accession ID, or else by legacy ID; None when neither matches.

    Every scan comes here, so the query runs on the driver's own cursor: SQLAlchemy's
    statement and result layers cost several times the indexed lookup itself. The values are
    converted by the columns' own result processors, as SQLAlchemy would."""
    dialect = session.get_bind().dialect
    with driver_cursor(session) as cursor:
        for column, value in (("accession_id", code.strip().upper()), ("legacy_id", code.strip())):
            sql, positional = _driver_sql(dialect, column)
            cursor.execute(sql, (value,) if positional else {"value": value})
            row = cursor.fetchone()
            if row is not None:
                return _read(_converted(dialect, cursor.description, row))
    return None


def _driver_sql(dialect: sa.Dialect, column: str) -> tuple[str, bool]:
    """`_by(column)` as the driver's SQL text, and whether it takes its value by position
    (SQLite) rather than by name (psycopg); made once per kind of database."""
    key = (dialect.name, dialect.driver, column)
    if key not in _DRIVER_SQL:
        compiled = _by(column).compile(dialect=dialect)
        _DRIVER_SQL[key] = str(compiled), bool(compiled.positional)
    return _DRIVER_SQL[key]


_DRIVER_SQL: dict[tuple[str, str, str], tuple[str, bool]] = {}


def _converted(
    dialect: sa.Dialect, description: Sequence[Sequence[Any]], row: Sequence[Any]
) -> list[Any]:
    """A driver's row of `_query()` with each column's result processor applied (chosen once per
    kind of database, from the types the driver reports, as SQLAlchemy chooses them)."""
    key = (dialect.name, dialect.driver)
    if key not in _PROCESSORS:
        columns = zip(_query().selected_columns, description, strict=True)
        chosen = (
            (at, column.type.dialect_impl(dialect).result_processor(dialect, described[1]))
            for at, (column, described) in enumerate(columns)
        )
        _PROCESSORS[key] = tuple((at, process) for at, process in chosen if process)
    values = list(row)
    for at, process in _PROCESSORS[key]:
        values[at] = process(values[at])
    return values


_PROCESSORS: dict[tuple[str, str], tuple[tuple[int, Callable[[Any], Any]], ...]] = {}


def specimens_where(session: Session, condition: sa.ColumnElement[bool]) -> list[SpecimenRead]:
    """The specimens matching `condition` (over the specimen table), in the order made."""
    query = _query().where(condition).order_by(Specimen.__table__.c.id)
    return [_read(row) for row in session.execute(query)]


def specimen_read(session: Session, specimen: Specimen) -> SpecimenRead:
    """The read model of a row the caller holds, just written or changed. When the session
    also holds the rows it joins (participant, visit, parent, box), as it does after an
    accession, it is built from them with no SELECT; else (an aliquot, a move) it is read."""
    session.flush()
    joined = _held(session, specimen)
    if joined is None:
        return _read(session.execute(_by("id"), {"value": specimen.id}).one())
    participant, visit, parent, box = joined
    row = [_as_read(getattr(specimen, name)) for name in _OWN_COLUMNS]
    row += [participant.code, visit and visit.label, parent and parent.accession_id]
    row += [box and box.barcode, specimen.position_row, specimen.position_col]
    row += [box and box.path, box and box.grid_cols, box and box.position_labels]
    return _read(row)


# The rows a specimen's read model joins: its participant, visit, parent and box.
_Joined = tuple[Participant, Visit | None, Specimen | None, StorageUnit | None]


def _held(session: Session, specimen: Specimen) -> _Joined | None:
    """The participant, visit, parent and box of `specimen` (None where it has none), if the
    session holds every one of them; else None."""
    found: list[object] = []
    for model, key in (
        (Participant, specimen.participant_id),
        (Visit, specimen.visit_id),
        (Specimen, specimen.parent_id),
        (StorageUnit, specimen.box_id),
    ):
        row = None if key is None else session.identity_map.get(identity_key(model, key))
        if key is not None and row is None:
            return None
        found.append(row)
    return cast(_Joined, tuple(found))  # the identity map is untyped: each is of its model


def _as_read(value: Any) -> Any:
    """A value as `_query()` reads it back: enumerations as their text, times in UTC."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


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
        refuse_misread(accession, field=field)
        raise NotFound(f"no specimen {accession!r}", field=field, value=accession)
    if expected_version is not None and specimen.version != expected_version:
        raise ConcurrentChange(
            f"{specimen.accession_id} was changed at another terminal since it was read "
            f"(version {expected_version}, now {specimen.version}); reload and try again",
            field="version",
            value=expected_version,
        )
    return specimen


def refuse_misread(accession: str, *, field: str = "specimen") -> None:
    """Refuse an ID whose check character is wrong: it names no tube we issued, so the tube is
    scanned (or typed) again rather than searched for. Every command that looks a tube up by
    ID comes here (through `get_specimen`) before saying it found none."""
    code = accession.strip().upper()
    if check_specimen_id(code) == "misread":
        raise ValidationError(misread_message(code), field=field, value=accession)
