"""Selecting a cohort: the specimens a query (`biobank.domain.cohort`) names, their participants'
consent asked for the export's uses as of a date, counted as they stream by (`Tally`). What is
done with them is the caller's: an export (`services.exports`) or a count (`cohort_counts`).

Specimen and participant filters run in the database; phenotype conditions are evaluated on
each specimen's values at collection (`services.phenotype_at_collection`) or on every
value ever recorded, a participant at a time, so memory stays flat however large the cohort.
A specimen without a value for a compared variable does not match (except `exists`, which asks
exactly that). Consent is asked through the one rule (`consent_checks.consent_decisions`):
a specimen whose participant is not allowed every use is left out and counted by reason.
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from biobank.domain.cohort import CohortQuery, Condition, Group
from biobank.domain.phenotypes import READERS, Spec, parse_value, typed
from biobank.domain.specimen_values import specimen_type_code
from biobank.domain.vocabulary import Sex, ShipmentItemStatus, SpecimenStatus
from biobank.errors import NotFound, ValidationError
from biobank.models import (
    ExportRunSpecimen,
    Participant,
    PhenotypeVariable,
    Shipment,
    ShipmentItem,
    Specimen,
    StorageUnit,
    Study,
    Visit,
)
from biobank.services.cohort_prefilter import narrowing
from biobank.services.consent_checks import consent_decisions, known_uses
from biobank.services.phenotype_at_collection import (
    DEFAULT_WINDOW_DAYS,
    Collected,
    stored_time,
    values_at_collection,
)
from biobank.services.phenotype_variables import variables_by_name
from biobank.services.phenotypes import stored_values
from biobank.services.storage import get_unit, subtree_range
from biobank.services.studies import get_study

CHUNK_SPECIMENS = 5000  # whole participants at a time, about this many specimens
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


class CohortRow(NamedTuple):
    """A row of `_base_query`: first what `Collected.of` reads, then what an export writes. A
    plain tuple: an export reads a dozen of its fields per specimen, and an SQLAlchemy row's
    fields cost several times a tuple's."""

    id: int
    participant_id: int
    visit_id: int | None
    collected_at: datetime | None
    visit_date: date | None
    received_at: datetime | None
    birth_year: int | None
    participant_code: str
    sex: str
    accession_id: str
    parent_id: int | None
    kind: str
    specimen_type: str
    container_type: str | None
    sprec_code: str | None
    quantity: float
    unit: str
    freeze_thaw_count: int


class Selected(NamedTuple):
    """One specimen of the cohort and what an export needs of it."""

    specimen_id: int
    participant_id: int
    collected_on: date | None
    age_at_collection: int | None
    phenotypes: dict[str, Any]  # every dictionary variable's value at collection
    specimen: CohortRow


@dataclass
class Tally:
    """Counts kept while a cohort streams by. Specimens come participant by participant, so a
    participant is counted where their run begins: no set of a cohort's ids is held. One
    tally counts one `select_cohort` stream."""

    specimens: int = 0
    participants: int = 0
    matched_before_consent: int = 0
    excluded_specimens: Counter[str] = field(default_factory=Counter)  # reason -> specimens
    excluded_participants: Counter[str] = field(default_factory=Counter)  # reason -> participants
    _last_selected: int | None = None
    _last_excluded: int | None = None

    def selected(self, participant_id: int) -> None:
        self.specimens += 1
        if participant_id != self._last_selected:
            self.participants += 1
            self._last_selected = participant_id

    def excluded(self, participant_id: int, reason: str) -> None:
        """One specimen left out; a participant has one reason (consent is theirs)."""
        self.excluded_specimens[reason] += 1
        if participant_id != self._last_excluded:
            self.excluded_participants[reason] += 1
            self._last_excluded = participant_id

    def exclusions(self) -> dict[str, dict[str, int]]:
        return {
            reason: {"specimens": count, "participants": self.excluded_participants[reason]}
            for reason, count in sorted(self.excluded_specimens.items())
        }


# --- Checking a query against the dictionary -------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    query: CohortQuery
    variables: dict[str, PhenotypeVariable]  # every variable, by name (values at collection)
    specs: dict[str, Spec]
    conditions: Group | None


def _coerce(spec: Spec, value: Any, variable: str) -> Any:
    """A condition's value as the variable's values are typed (a choice label becomes its
    code), checked like any value of that variable but without its range."""
    loose = Spec(name=variable, value_type=spec.value_type, choices=spec.choices, unit=spec.unit)
    try:
        return typed(loose, parse_value(loose, value))
    except ValidationError as error:
        raise ValidationError(error.message, field="where", value=value) from None


def _prepare_group(group: Group, specs: dict[str, Spec]) -> Group:
    conditions: list[Condition | Group] = []
    for c in group.conditions:
        if isinstance(c, Group):
            conditions.append(_prepare_group(c, specs))
            continue
        if c.variable not in specs:
            raise NotFound(
                f"no phenotype variable {c.variable!r} (see `biobank phenotype dictionary`)",
                field="where",
                value=c.variable,
            )
        spec = specs[c.variable]
        if c.op in ("<", "<=", ">", ">=") and spec.value_type.value in (
            "boolean", "choice", "multi_choice", "text",
        ):  # fmt: skip
            raise ValidationError(
                f"{c.variable} is {spec.value_type.value}: compare it with =, != or in",
                field="where",
                value=c.op,
            )
        value = c.value
        if isinstance(value, list):  # `in` and `not in`, the operators of a list
            value = [_coerce(spec, v, c.variable) for v in value]
        elif c.op != "exists":
            value = _coerce(spec, c.value, c.variable)
        # by its current name: a query written before a rename still runs
        conditions.append(c.model_copy(update={"variable": spec.name, "value": value}))
    return Group(match=group.match, conditions=conditions)


def prepare(session: Session, query: CohortQuery) -> _Prepared:
    """Check every name and value of a query; a bad one is refused, naming it."""
    for status in query.statuses:
        try:
            SpecimenStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in SpecimenStatus)
            raise ValidationError(
                f"{status!r} is not a status ({allowed})", field="statuses", value=status
            ) from None
    for sex in query.sex:
        try:
            Sex(sex)
        except ValueError:
            allowed = ", ".join(s.value for s in Sex)
            raise ValidationError(
                f"{sex!r} is not a sex ({allowed})", field="sex", value=sex
            ) from None
    types = [specimen_type_code(t, derivative=True) for t in query.specimen_types]
    if query.storage:
        get_unit(session, query.storage)
    if query.study:
        query = query.model_copy(update={"study": get_study(session, query.study).code})
    known = variables_by_name(session)  # current and former names; never retired ones
    variables = {v.name: v for v in known.values()}
    specs = {name: Spec.of(v) for name, v in known.items()}
    conditions = _prepare_group(query.phenotypes, specs) if query.phenotypes else None
    query = query.model_copy(update={"specimen_types": types})
    return _Prepared(query=query, variables=variables, specs=specs, conditions=conditions)


# --- Running it --------------------------------------------------------------------------------


def _base_query(
    session: Session, query: CohortQuery, reserved_by_run: int | None = None
) -> sa.Select[*tuple[Any, ...]]:
    """Specimen and participant filters the database answers, participant by participant.
    `reserved_by_run`: the specimens that export run reserved count as they were before."""
    statuses: sa.ColumnElement[bool] = col(Specimen.status).in_(
        [SpecimenStatus(s) for s in query.statuses]
    )
    if reserved_by_run is not None:
        reserved = sa.select(col(ExportRunSpecimen.specimen_id)).where(
            col(ExportRunSpecimen.export_run_id) == reserved_by_run
        )
        statuses = sa.or_(
            statuses,
            sa.and_(
                col(Specimen.status) == SpecimenStatus.reserved, col(Specimen.id).in_(reserved)
            ),
        )
    stmt: sa.Select[*tuple[Any, ...]] = (
        sa.select(  # `CohortRow`'s fields, in its order
            col(Specimen.id),
            col(Specimen.participant_id),
            col(Specimen.visit_id),
            stored_time(col(Specimen.collected_at)),
            col(Visit.visit_date),
            stored_time(col(Specimen.received_at)),
            col(Participant.birth_year),
            col(Participant.code).label("participant_code"),
            as_text(col(Participant.sex), "sex"),
            col(Specimen.accession_id),
            col(Specimen.parent_id),
            as_text(col(Specimen.kind), "kind"),
            col(Specimen.specimen_type),
            col(Specimen.container_type),
            col(Specimen.sprec_code),
            col(Specimen.quantity),
            as_text(col(Specimen.unit), "unit"),
            col(Specimen.freeze_thaw_count),
        )
        .join(Participant, col(Participant.id) == Specimen.participant_id)
        .outerjoin(Visit, col(Visit.id) == Specimen.visit_id)
        .where(statuses)
        .order_by(col(Specimen.participant_id), col(Specimen.id))  # by participant: `Tally`
    )
    if query.specimen_types:
        stmt = stmt.where(col(Specimen.specimen_type).in_(query.specimen_types))
    if query.collected_from is not None or query.collected_to is not None:
        stmt = stmt.where(_may_be_collected_between(query.collected_from, query.collected_to))
    if query.min_quantity is not None:
        stmt = stmt.where(col(Specimen.quantity) >= query.min_quantity)
    if query.max_freeze_thaws is not None:
        stmt = stmt.where(col(Specimen.freeze_thaw_count) <= query.max_freeze_thaws)
    if query.sex:
        stmt = stmt.where(col(Participant.sex).in_([Sex(s) for s in query.sex]))
    if query.study:
        studies = sa.select(col(Study.id)).where(col(Study.code) == query.study)
        stmt = stmt.where(col(Participant.study_id).in_(studies))
    if query.shipment:
        sent = (
            sa.select(col(ShipmentItem.specimen_id))
            .join(Shipment, col(Shipment.id) == ShipmentItem.shipment_id)
            .where(
                col(Shipment.code) == query.shipment.strip().upper(),
                col(ShipmentItem.status) != ShipmentItemStatus.withdrawn,
            )
        )
        stmt = stmt.where(col(Specimen.id).in_(sent))
    if query.storage:
        unit = get_unit(session, query.storage)
        low, high = subtree_range(unit)
        boxes = sa.select(col(StorageUnit.id)).where(
            sa.or_(
                col(StorageUnit.id) == unit.id,
                sa.and_(col(StorageUnit.sort_key) >= low, col(StorageUnit.sort_key) < high),
            )
        )
        stmt = stmt.where(col(Specimen.box_id).in_(boxes))
    return stmt


def as_text(column: sa.SQLColumnExpression[Any], name: str) -> sa.Label[str]:
    """A coded column read as its text (the enum's value), under its name."""
    return sa.type_coerce(column, sa.String).label(name)


def _may_be_collected_between(start: date | None, end: date | None) -> sa.ColumnElement[bool]:
    """The collection-date filter, coarsely, in the database: times are stored in UTC and a
    local calendar day lies within a day either side of the UTC one, so this margin drops no
    specimen that `_collected_fits` (the exact rule, on `Collected.of`'s day) would keep."""

    def within(column: sa.SQLColumnExpression[Any], margin: timedelta) -> sa.ColumnElement[bool]:
        def bound(day: date) -> date | datetime:
            return datetime.combine(day, time(), UTC) if margin else day

        low = [column >= bound(start - margin)] if start else []
        high = [column < bound(end + timedelta(days=1) + margin)] if end else []
        return sa.and_(column.is_not(None), *low, *high)

    day = timedelta(days=1)
    drawn_unknown = col(Specimen.collected_at).is_(None)
    visit_date = col(Visit.visit_date)
    return sa.or_(
        within(col(Specimen.collected_at), day),
        sa.and_(drawn_unknown, within(visit_date, timedelta(0))),
        sa.and_(drawn_unknown, visit_date.is_(None), within(col(Specimen.received_at), day)),
    )


def count_candidates(
    session: Session, query: CohortQuery, reserved_by_run: int | None = None
) -> int:
    """How many specimens pass the database's filters: the length of a progress bar."""
    prepared = prepare(session, query)
    stmt = _base_query(session, prepared.query, reserved_by_run).order_by(None)
    narrowed = narrowing(prepared.conditions, prepared.variables)
    if narrowed is not None:
        stmt = stmt.where(narrowed)
    return session.exec(select(func.count()).select_from(stmt.subquery())).one()


def _chunks(session: Session, stmt: sa.Select[*tuple[Any, ...]]) -> Iterator[list[CohortRow]]:
    """The rows in runs of whole participants, about CHUNK_SPECIMENS at a time."""
    # Core rows straight from the connection: the ORM result layer costs ~2 s a 100k cohort.
    rows = session.connection().execute(stmt.execution_options(yield_per=CHUNK_SPECIMENS))
    chunk: list[CohortRow] = []
    for row in map(CohortRow._make, rows):
        if len(chunk) >= CHUNK_SPECIMENS and row.participant_id != chunk[-1].participant_id:
            yield chunk
            chunk = []
        chunk.append(row)
    if chunk:
        yield chunk


def _ever(
    session: Session, participant_ids: list[int], variables: list[PhenotypeVariable]
) -> dict[tuple[int, str], list[Any]]:
    """Every value each participant ever had of the variables."""
    found: dict[tuple[int, str], list[Any]] = defaultdict(list)
    if not variables:
        return found
    by_id = {v.id: v for v in variables if v.id is not None}  # stored rows: all have one
    for value in stored_values(session, variables=by_id, participants=participant_ids):
        variable, stored = by_id[value.variable_id], value.stored
        read = READERS[variable.value_type]
        found[(value.participant_id, variable.name)].append(
            read(stored.number, stored.text, stored.day)
        )
    return found


def _holds(c: Condition, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, list):  # a multi-choice value: any of its codes
        return any(_holds(c, v) for v in value)
    if c.op == "exists":
        return True
    if isinstance(c.value, list):  # `in` and `not in`, the operators of a list
        found = value in c.value
        return found if c.op == "in" else not found
    try:
        return COMPARE[c.op](value, c.value)
    except TypeError:
        return False


def _matches(group: Group, at_collection: dict[str, Any], ever: dict[str, list[Any]]) -> bool:
    results = (
        _matches(c, at_collection, ever)
        if isinstance(c, Group)
        else (
            any(_holds(c, v) for v in ever.get(c.variable, []))
            if c.when == "ever"
            else _holds(c, at_collection.get(c.variable))
        )
        for c in group.conditions
    )
    return all(results) if group.match == "all" else any(results)


def _ever_variables(group: Group | None) -> set[str]:
    if group is None:
        return set()
    names: set[str] = set()
    for c in group.conditions:
        if isinstance(c, Group):
            names |= _ever_variables(c)
        elif c.when == "ever":
            names.add(c.variable)
    return names


def select_cohort(
    session: Session,
    *,
    query: CohortQuery,
    uses: list[str],
    as_of: date,
    window_days: int = DEFAULT_WINDOW_DAYS,
    tally: Tally | None = None,
    progress: Callable[[int], None] | None = None,
    reserved_by_run: int | None = None,
    values_of: Collection[str] | None = None,
) -> Iterator[Selected]:
    """The specimens of the cohort, participant by participant, with every variable's value at
    collection (or only those `values_of` names, beside the conditions' own: a count needs no
    more); `tally` counts them and the consent exclusions as they go by, `progress` hears how
    many candidates (see `count_candidates`) each step went through. The conditions narrow
    the candidates in the database first (`cohort_prefilter`)."""
    prepared = prepare(session, query)
    uses = known_uses(session, uses)
    query, tally = prepared.query, tally if tally is not None else Tally()
    variables = list(prepared.variables.values())
    if values_of is not None:
        wanted = set(values_of) | (
            prepared.conditions.variables() if prepared.conditions else set()
        )
        variables = [v for v in variables if v.name in wanted]
    ever_variables = [prepared.variables[n] for n in _ever_variables(prepared.conditions)]
    candidates = _base_query(session, query, reserved_by_run)
    narrowed = narrowing(prepared.conditions, prepared.variables)
    if narrowed is not None:
        candidates = candidates.where(narrowed)
    for chunk in _chunks(session, candidates):
        if progress:
            progress(len(chunk))
        kept = []  # (collection, age at it, row) of the specimens the dates and ages let by
        for row in chunk:
            c = Collected.of(row[:6])
            age = _age(c, row.birth_year)
            if _collected_fits(query, c.collected_on) and _age_fits(query, age):
                kept.append((c, age, row))
        if not kept:
            continue
        participant_ids = sorted({c.participant_id for c, _, _ in kept})
        at_collection = values_at_collection(
            session, specimens=[c for c, _, _ in kept], variables=variables,
            window_days=window_days,
        )  # fmt: skip
        ever = _ever(session, participant_ids, ever_variables)
        decisions = consent_decisions(
            session, participant_ids=participant_ids, uses=uses, as_of=as_of
        )
        refused = {pid: d.reason() for pid, d in decisions.items() if not d.allowed}
        for c, age, row in kept:
            values = at_collection[c.specimen_id]
            if prepared.conditions is not None:
                mine = {v.name: ever.get((c.participant_id, v.name), []) for v in ever_variables}
                if not _matches(prepared.conditions, values, mine):
                    continue
            tally.matched_before_consent += 1
            reason = refused.get(c.participant_id)
            if reason is not None:
                tally.excluded(c.participant_id, reason)
                continue
            tally.selected(c.participant_id)
            yield Selected(c.specimen_id, c.participant_id, c.collected_on, age, values, row)


def _age(c: Collected, birth_year: int | None) -> int | None:
    """Whole years at collection, from the birth year (all the registry keeps outside PHI)."""
    if birth_year is None or c.collected_on is None:
        return None
    return c.collected_on.year - birth_year


def _collected_fits(query: CohortQuery, day: date | None) -> bool:
    if query.collected_from is None and query.collected_to is None:
        return True
    if day is None:
        return False
    return (query.collected_from is None or day >= query.collected_from) and (
        query.collected_to is None or day <= query.collected_to
    )


def _age_fits(query: CohortQuery, age: int | None) -> bool:
    if query.min_age is None and query.max_age is None:
        return True
    if age is None:
        return False
    return (query.min_age is None or age >= query.min_age) and (
        query.max_age is None or age <= query.max_age
    )
