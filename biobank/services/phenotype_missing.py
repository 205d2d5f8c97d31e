"""Values missing with reason: a value's place (a visit's variable, or a participant's
visit-less one) holding, instead of a value, the code of why there is none, such as REDCap's
missing-data codes (NASK: not asked, UNK: unknown, NA: not applicable).

The codes live in a table of their own (`PhenotypeMissing`), so that what reads values (cohort
queries, exports, values at collection) never takes a code for data. A place holds a value or
a code, never both: recording a code removes the value there, and `phenotypes.store_value`
removes the code; each removal is audited with what it was and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col

from biobank.db import flush, one_of
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import PhenotypeScope
from biobank.errors import ValidationError
from biobank.models import (
    Participant,
    PhenotypeMissing,
    PhenotypeValue,
    PhenotypeVariable,
    Visit,
    utcnow,
)
from biobank.services import audit, phenotype_variables, phenotypes
from biobank.services.participants import get_participant_row

CODE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")  # what REDCap allows a missing-data code


class MissingRead(BaseModel):
    variable: str
    label: str
    visit: str | None
    instance: int = 0  # as `phenotypes.ValueRead`'s
    code: str
    source: str | None


class MissingOutcome(BaseModel):
    """What recording a code did: `added`, `changed` or `same`."""

    outcome: str
    missing: MissingRead


def check_code(code: str, *, field: str = "code") -> str:
    """A missing-data code as REDCap allows one: 1-32 letters, digits, '_', '.' or '-'."""
    code = code.strip()
    if not CODE.match(code):
        raise ValidationError(
            "a missing-data code is 1-32 letters, digits, '_', '.' or '-'",
            field=field,
            value=code,
        )
    return code


def _read(row: PhenotypeMissing, variable: PhenotypeVariable, visit: str | None) -> MissingRead:
    return MissingRead(
        variable=variable.name,
        label=variable.label,
        visit=visit,
        instance=row.instance,
        code=row.code,
        source=row.source,
    )


def record_missing(
    session: Session,
    *,
    actor: Actor,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    code: str,
    source: str | None,
    reason: str | None = None,
    instance: int = 0,
) -> MissingOutcome:
    """Record that a value is missing and why (`code`): the value there is removed, a code
    there changed, each audited; the same code again changes nothing."""
    require(actor, Permission.record_phenotypes)
    phenotype_variables.refuse_retired(variable)
    visit = phenotypes.place_visit(variable, visit)
    code = check_code(code)
    label = visit.label if visit is not None else None
    phenotypes.remove_at(
        session, PhenotypeValue, actor=actor, participant=participant, variable=variable,
        visit=visit, instance=instance, reason=reason or f"missing: {code}",
    )  # fmt: skip
    row = phenotypes.find_at(
        session, PhenotypeMissing, participant=participant, variable=variable, visit=visit,
        instance=instance,
    )  # fmt: skip
    if row is not None and row.code == code:
        return MissingOutcome(outcome="same", missing=_read(row, variable, label))
    before = audit.snapshot(row) if row is not None else None
    if row is None:
        assert participant.id is not None and variable.id is not None  # stored rows
        row = PhenotypeMissing(
            participant_id=participant.id,
            visit_id=visit.id if visit is not None else None,
            variable_id=variable.id,
            instance=instance,
            code=code,
        )
    row.code, row.source, row.recorded_at = code, source, utcnow()
    session.add(row)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action=f"phenotype_missing.{'add' if before is None else 'change'}",
        entity="phenotype_missing",
        entity_id=row.id,
        before=before,
        after={"participant": participant.code, "variable": variable.name, "visit": label}
        | audit.snapshot(row),
        reason=reason,
    )
    outcome = "added" if before is None else "changed"
    return MissingOutcome(outcome=outcome, missing=_read(row, variable, label))


def remove_missing(
    session: Session,
    *,
    actor: Actor,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    reason: str,
    instance: int = 0,
) -> MissingRead | None:
    """Remove a missing-data code (its source no longer says it), audited with what it was
    and `reason`; None when there is none."""
    require(actor, Permission.record_phenotypes)
    if not reason.strip():
        raise ValidationError("removing a missing-data code names its reason", field="reason")
    visit = phenotypes.place_visit(variable, visit)
    row = phenotypes.remove_at(
        session, PhenotypeMissing, actor=actor, participant=participant, variable=variable,
        visit=visit, reason=reason.strip(), instance=instance,
    )  # fmt: skip
    return _read(row, variable, visit.label if visit else None) if row is not None else None


def add_missing(
    session: Session,
    *,
    actor: Actor,
    participant: phenotypes.ValueOwner,
    codes: list[tuple[phenotypes.ValueVisit | None, PhenotypeVariable, str, int]],
    source: str,
) -> int:
    """A participant's new missing-data codes (visit, variable, code, instance) in one
    statement, each audited as `record_missing` audits an addition: for bulk loads where the
    places hold nothing (the unique indexes refuse a code there already; the caller knows no
    value is)."""
    require(actor, Permission.record_phenotypes)
    rows = []
    for visit, variable, code, instance in codes:
        phenotype_variables.refuse_retired(variable)
        if (visit is None) != (variable.scope is PhenotypeScope.participant):
            raise ValidationError(
                f"{variable.name} is recorded per {variable.scope.value}",
                field="visit",
                value=variable.name,
            )
        rows.append(
            {
                "participant_id": participant.id,
                "visit_id": visit.id if visit else None,
                "variable_id": variable.id,
                "instance": instance,
                "code": check_code(code),
                "source": source,
                "recorded_at": utcnow(),
            }
        )
    if not rows:
        return 0
    table = PhenotypeMissing.__table__
    key = (table.c.visit_id, table.c.variable_id, table.c.instance)
    inserted = session.execute(sa.insert(table).returning(table.c.id, *key), rows)
    ids = {tuple(found[1:]): found[0] for found in inserted}
    entries = []
    for row, (visit, variable, _, _) in zip(rows, codes, strict=True):
        row_id = ids[row["visit_id"], row["variable_id"], row["instance"]]
        after = {"participant": participant.code, "variable": variable.name, "id": row_id}
        after["visit"] = visit.label if visit else None
        entries.append(
            {"action": "phenotype_missing.add", "entity": "phenotype_missing",
             "entity_id": row_id, "after": after | row}
        )  # fmt: skip
    audit.record_many(session, actor=actor, entries=entries)
    return len(rows)


class StoredMissing(NamedTuple):
    """A missing-data code as stored, with whose it is (see `stored_missing`)."""

    participant_id: int
    visit_id: int | None
    variable_id: int
    code: str
    instance: int = 0


def stored_missing(
    session: Session,
    *,
    variables: Iterable[int],
    participants: Iterable[int] | None = None,
    visits: Iterable[int] | None = None,
    participant_level: bool = False,
) -> Iterator[StoredMissing]:
    """The codes stored of the `variables` (ids), of the `participants` or the `visits` given
    (ids); with `participant_level`, only those of no visit. In no particular order."""
    query = sa.select(
        col(PhenotypeMissing.participant_id),
        col(PhenotypeMissing.visit_id),
        col(PhenotypeMissing.variable_id),
        col(PhenotypeMissing.code),
        col(PhenotypeMissing.instance),
    ).where(one_of(session, col(PhenotypeMissing.variable_id), variables))
    if participants is not None:
        query = query.where(one_of(session, col(PhenotypeMissing.participant_id), participants))
    if visits is not None:
        query = query.where(one_of(session, col(PhenotypeMissing.visit_id), visits))
    if participant_level:
        query = query.where(col(PhenotypeMissing.visit_id).is_(None))
    for participant_id, visit_id, variable_id, code, instance in session.execute(query):
        yield StoredMissing(participant_id, visit_id, variable_id, code, instance)


def participant_missing(session: Session, *, actor: Actor, participant: str) -> list[MissingRead]:
    """The places a participant's values are missing with reason, ordered as the timeline
    (`phenotypes.participant_phenotypes`): participant-level first, then each visit's by date."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    rows = session.execute(
        sa.select(PhenotypeMissing, PhenotypeVariable, col(Visit.label))
        .join(PhenotypeVariable, col(PhenotypeVariable.id) == PhenotypeMissing.variable_id)
        .outerjoin(Visit, col(Visit.id) == PhenotypeMissing.visit_id)
        .where(col(PhenotypeMissing.participant_id) == person.id)
        .order_by(
            col(PhenotypeMissing.visit_id).is_not(None),
            col(Visit.visit_date),
            col(PhenotypeMissing.visit_id),
            col(PhenotypeMissing.instance),
            col(PhenotypeVariable.id),
        )
    ).all()
    return [_read(row, variable, label) for row, variable, label in rows]
