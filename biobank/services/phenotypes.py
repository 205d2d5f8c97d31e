"""The phenotype values of participants and visits (the variables they are values of:
`services.phenotype_variables`).

A value's place (a visit's variable, or a participant's visit-less one, and its instance: 0,
or the filling of a form repeated within the visit, a dated observation of its own) holds a
value or a missing-data code (`services.phenotype_missing`), never both: storing a value
removes the code.
A specimen's values at collection are `services.phenotype_at_collection`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any, NamedTuple, Protocol, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from biobank.db import flush, insert_rows, new_ids, one_of
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import Spec, Stored, display, parse_value, typed
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
from biobank.services import audit
from biobank.services.participants import find_visit, get_participant_row
from biobank.services.phenotype_variables import get_variable, refuse_retired

Placed = TypeVar("Placed", PhenotypeValue, PhenotypeMissing)  # what a value's place holds


class ValueRead(BaseModel):
    variable: str
    label: str
    visit: str | None
    instance: int = 0  # 0: the visit's value; N: the Nth filling of a repeated form
    observed_on: date | None
    value: Any
    display: str
    source: str | None


class ChangeOutcome(BaseModel):
    """What storing a value did: `added`, `changed` or `same`."""

    outcome: str
    value: ValueRead


def _stored(row: PhenotypeValue) -> Stored:
    return Stored(number=row.value_number, text=row.value_text, day=row.value_date)


def _value_read(
    row: PhenotypeValue, variable: PhenotypeVariable, visit_label: str | None
) -> ValueRead:
    spec, stored = Spec.of(variable), _stored(row)
    return ValueRead(
        variable=variable.name,
        label=variable.label,
        visit=visit_label,
        instance=row.instance,
        observed_on=row.observed_on,
        value=typed(spec, stored),
        display=display(spec, stored),
        source=row.source,
    )


def store_value(
    session: Session,
    *,
    actor: Actor,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    stored: Stored,
    source: str | None,
    observed_on: date | None = None,
    instance: int = 0,
) -> ChangeOutcome:
    """Add a value, or change the one already there (audited with before and after), or
    leave an equal one alone: storing the same thing twice changes nothing. A missing-data
    code in its place is removed (audited). A visit's value is observed on the visit's date;
    a repeat instance's on its own (`observed_on`; none given: the visit's)."""
    require(actor, Permission.record_phenotypes)
    refuse_retired(variable)
    visit = place_visit(variable, visit)
    assert participant.id is not None and variable.id is not None  # stored rows
    if visit is not None and (instance == 0 or observed_on is None):
        observed_on = visit.visit_date
    remove_at(
        session, PhenotypeMissing, actor=actor, participant=participant, variable=variable,
        visit=visit, instance=instance, reason="a value recorded in its place",
    )  # fmt: skip
    row = find_at(
        session, PhenotypeValue, participant=participant, variable=variable, visit=visit,
        instance=instance,
    )  # fmt: skip
    label = visit.label if visit is not None else None
    if row is not None and _stored(row) == stored and row.observed_on == observed_on:
        return ChangeOutcome(outcome="same", value=_value_read(row, variable, label))
    before = audit.snapshot(row) if row is not None else None
    outcome = "changed" if row is not None else "added"
    if row is None:
        row = PhenotypeValue(
            participant_id=participant.id,
            visit_id=visit.id if visit is not None else None,
            variable_id=variable.id,
            instance=instance,
        )
    row.observed_on = observed_on
    row.value_number, row.value_text, row.value_date = stored.number, stored.text, stored.day
    row.source = source
    session.add(row)
    flush(session)
    audit.record(
        session,
        actor=actor,
        action=f"phenotype_value.{'add' if outcome == 'added' else 'change'}",
        entity="phenotype_value",
        entity_id=row.id,
        before=before,
        after={"participant": participant.code, "variable": variable.name, "visit": label}
        | audit.snapshot(row),
    )
    return ChangeOutcome(outcome=outcome, value=_value_read(row, variable, label))


def place_visit(variable: PhenotypeVariable, visit: Visit | None) -> Visit | None:
    """The visit of a value's place: a per-visit variable's needs one, a participant-level
    variable's is none (a visit given is not its place)."""
    if variable.scope is PhenotypeScope.participant:
        return None
    if visit is None:
        raise ValidationError(
            f"{variable.name} is recorded per visit: name the visit",
            field="visit",
            value=variable.name,
        )
    return visit


def find_at(
    session: Session,
    model: type[Placed],
    *,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    instance: int = 0,
) -> Placed | None:
    """The value (or the missing-data code: `model`) of `variable` at `visit` (or the
    participant's visit-less one) and `instance`."""
    where = [col(model.variable_id) == variable.id, col(model.instance) == instance]
    if visit is not None:
        where.append(col(model.visit_id) == visit.id)
    else:
        where += [col(model.participant_id) == participant.id, col(model.visit_id).is_(None)]
    return session.exec(select(model).where(*where)).first()


def remove_at(
    session: Session,
    model: type[Placed],
    *,
    actor: Actor,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    reason: str,
    instance: int = 0,
) -> Placed | None:
    """Remove what a place holds of `model` (a value or a missing-data code), audited with
    what it was and why; None when it holds none."""
    row = find_at(
        session, model, participant=participant, variable=variable, visit=visit, instance=instance
    )
    if row is None:
        return None
    label = visit.label if visit is not None else None
    before = {"participant": participant.code, "variable": variable.name, "visit": label}
    before |= audit.snapshot(row)
    session.delete(row)
    flush(session)
    entity = row.__table__.name
    audit.record(
        session, actor=actor, action=f"{entity}.remove", entity=entity, entity_id=row.id,
        before=before, reason=reason,
    )  # fmt: skip
    return row


def remove_value(
    session: Session,
    *,
    actor: Actor,
    participant: Participant,
    variable: PhenotypeVariable,
    visit: Visit | None,
    reason: str,
    instance: int = 0,
) -> ValueRead | None:
    """Remove a value (its source says it is gone: a cell cleared in REDCap), audited with
    what it was and `reason`; None when there is none."""
    require(actor, Permission.record_phenotypes)
    if not reason.strip():
        raise ValidationError("removing a value names its reason", field="reason")
    visit = place_visit(variable, visit)
    row = remove_at(
        session, PhenotypeValue, actor=actor, participant=participant, variable=variable,
        visit=visit, reason=reason.strip(), instance=instance,
    )  # fmt: skip
    label = visit.label if visit is not None else None
    return _value_read(row, variable, label) if row is not None else None


def add_values(
    session: Session,
    *,
    actor: Actor,
    participant: Participant,
    values: list[tuple[Visit | None, PhenotypeVariable, Stored]],
    source: str,
) -> int:
    """A participant's new values: `add_many_values`."""
    return add_many_values(
        session,
        actor=actor,
        values=[NewPhenotypeValue(participant, *value) for value in values],
        source=source,
    )


class ValueOwner(Protocol):
    """What a bulk load reads of a value's participant: its row, or those columns of it (a
    load of thousands reads no more)."""

    @property
    def id(self) -> int | None: ...
    @property
    def code(self) -> str: ...


class ValueVisit(Protocol):
    """What a bulk load reads of a value's visit: its row, or those columns of it."""

    @property
    def id(self) -> int | None: ...
    @property
    def visit_date(self) -> date: ...
    @property
    def label(self) -> str: ...


class NewPhenotypeValue(NamedTuple):
    """A value for `add_many_values`: a visit's (instance 0, observed on the visit's date) or
    a repeat instance's, observed on its own date (none: the visit's)."""

    participant: ValueOwner
    visit: ValueVisit | None
    variable: PhenotypeVariable
    stored: Stored
    instance: int = 0
    observed_on: date | None = None


# the columns `add_many_values` writes, in its rows' order
_VALUE_COLUMNS = (
    "participant_id", "visit_id", "variable_id", "instance", "observed_on", "value_number",
    "value_text", "value_date", "source", "recorded_at", "id",
)  # fmt: skip


def add_many_values(
    session: Session,
    *,
    actor: Actor,
    values: list[NewPhenotypeValue],
    source: str,
) -> int:
    """New values, of any participants, in one bulk insert (`insert_rows`: COPY on
    PostgreSQL, where an INSERT of many rows costs more to send than to store), each audited
    as `store_value` audits an addition. For bulk loads where nothing is there to change (a
    new participant): one at a time, `store_value` looks for a value (or missing-data code) to
    change and flushes for each. The unique indexes refuse a value that is there already; the
    caller knows no missing-data code is."""
    require(actor, Permission.record_phenotypes)
    table = PhenotypeValue.__table__
    ids = iter(new_ids(session, table, len(values)))  # none to read back
    recorded_at = utcnow()  # one bulk insert, one moment
    rows: list[list[Any]] = []  # of `_VALUE_COLUMNS`
    entries = []  # built before the rows are written: the audit trail has them as given
    # by `id`, each object's columns, read once: a load repeats a few thousand objects
    seen: dict[int, tuple[Any, ...]] = {id(None): (None, None, None)}
    for participant, visit, variable, stored, instance, observed in values:
        found = seen.get(id(variable))
        if found is None:
            refuse_retired(variable)
            per_participant = variable.scope is PhenotypeScope.participant
            found = seen[id(variable)] = (variable.id, variable.name, per_participant)
        variable_id, name, per_participant = found
        if (visit is None) != per_participant:
            raise ValidationError(
                f"{variable.name} is recorded per {variable.scope.value}",
                field="visit",
                value=variable.name,
            )
        found = seen.get(id(participant))
        if found is None:
            found = seen[id(participant)] = (participant.id, participant.code)
        participant_id, code = found
        found = seen.get(id(visit))
        if found is None:
            assert visit is not None  # no visit's columns are there from the start
            found = seen[id(visit)] = (visit.id, visit.visit_date, visit.label)
        visit_id, visit_date, label = found
        row_id, observed_on = next(ids), observed if instance and observed else visit_date
        number, text, day = stored.number, stored.text, stored.day
        rows.append(
            [participant_id, visit_id, variable_id, instance, observed_on, number, text, day,
             source, recorded_at, row_id]
        )  # fmt: skip
        after = {
            "participant_id": participant_id, "visit_id": visit_id, "variable_id": variable_id,
            "instance": instance, "observed_on": observed_on, "value_number": number,
            "value_text": text, "value_date": day, "source": source, "recorded_at": recorded_at,
            "id": row_id, "participant": code, "variable": name, "visit": label,
        }  # fmt: skip
        entries.append(
            {"action": "phenotype_value.add", "entity": "phenotype_value",
             "entity_id": row_id, "after": after}
        )  # fmt: skip
    insert_rows(session, table, _VALUE_COLUMNS, rows)  # the rows' values become the driver's
    audit.record_many(session, actor=actor, entries=entries)
    return len(rows)


def set_value(
    session: Session,
    *,
    actor: Actor,
    participant: str,
    variable: str,
    value: object,
    visit: str | None = None,
    observed_on: date | None = None,
    source: str = "manual",
    instance: int = 0,
) -> ChangeOutcome:
    """Record one value, checked against the dictionary: a visit's own (`instance` 0), or the
    Nth observation within it, on its own date (`observed_on`)."""
    require(actor, Permission.record_phenotypes)
    person = get_participant_row(session, participant)
    entry = get_variable(session, variable)
    visit_row = find_visit(session, person, visit) if visit else None
    if observed_on is not None and observed_on > date.today():
        raise ValidationError("the observation date is in the future", field="observed_on")
    if instance < 0:
        raise ValidationError("an instance is 0 (the visit's value) or more", field="instance")
    stored = parse_value(Spec.of(entry), value)
    return store_value(
        session,
        actor=actor,
        participant=person,
        variable=entry,
        visit=visit_row,
        stored=stored,
        source=source,
        observed_on=observed_on,
        instance=instance,
    )


def participant_phenotypes(session: Session, *, actor: Actor, participant: str) -> list[ValueRead]:
    """The timeline: participant-level values first, then each visit's in date order."""
    require(actor, Permission.view_inventory)
    person = get_participant_row(session, participant)
    rows = session.execute(
        sa.select(PhenotypeValue, PhenotypeVariable, col(Visit.label))
        .join(PhenotypeVariable, col(PhenotypeVariable.id) == PhenotypeValue.variable_id)
        .outerjoin(Visit, col(Visit.id) == PhenotypeValue.visit_id)
        .where(col(PhenotypeValue.participant_id) == person.id)
        .order_by(
            col(PhenotypeValue.visit_id).is_not(None),
            col(PhenotypeValue.observed_on).is_not(None),  # undated first on every engine
            col(PhenotypeValue.observed_on),
            col(PhenotypeValue.visit_id),
            col(PhenotypeValue.instance),
            col(PhenotypeVariable.id),
        )
    ).all()
    return [_value_read(value, variable, label) for value, variable, label in rows]


class StoredValue(NamedTuple):
    """A value as stored, with whose it is (see `stored_values`)."""

    participant_id: int
    visit_id: int | None
    variable_id: int
    stored: Stored
    instance: int = 0
    observed_on: date | None = None


def stored_values(
    session: Session,
    *,
    variables: Iterable[int],
    participants: Iterable[int] | None = None,
    visits: Iterable[int] | None = None,
    participant_level: bool = False,
) -> Iterator[StoredValue]:
    """The values stored of the `variables` (ids), of the `participants` or the `visits` given
    (ids); with `participant_level`, only the values of no visit. In no particular order."""
    query = sa.select(
        col(PhenotypeValue.participant_id),
        col(PhenotypeValue.visit_id),
        col(PhenotypeValue.variable_id),
        col(PhenotypeValue.value_number),
        col(PhenotypeValue.value_text),
        col(PhenotypeValue.value_date),
        col(PhenotypeValue.instance),
        col(PhenotypeValue.observed_on),
    ).where(one_of(session, col(PhenotypeValue.variable_id), variables))
    if participants is not None:
        query = query.where(one_of(session, col(PhenotypeValue.participant_id), participants))
    if visits is not None:
        query = query.where(one_of(session, col(PhenotypeValue.visit_id), visits))
    if participant_level:
        query = query.where(col(PhenotypeValue.visit_id).is_(None))
    for (
        participant_id,
        visit_id,
        variable_id,
        number,
        text,
        day,
        instance,
        observed,
    ) in session.execute(query):
        yield StoredValue(
            participant_id, visit_id, variable_id, Stored(number, text, day), instance, observed
        )
