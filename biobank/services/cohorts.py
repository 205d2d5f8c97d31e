"""Selecting a cohort: the specimens a query (`biobank.domain.cohort`) names, their participants'
consent asked for the export's uses as of a date, counted before anything is written.

Specimen and participant filters run in the database; phenotype conditions are evaluated on
each specimen's values at collection (`services.phenotypes.values_at_collection`) or on every
value ever recorded, a participant at a time, so memory stays flat however large the cohort.
A specimen without a value for a compared variable does not match (except `exists`, which asks
exactly that). Consent is asked through the one rule (`consent_checks.consent_decisions`):
a specimen whose participant is not allowed every use is left out and counted by reason.
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.domain.cohort import CohortQuery, Condition, Group, load_query, narrowed
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import READERS, Spec, parse_value, typed
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.models import (
    ExportRunSpecimen,
    Participant,
    PhenotypeVariable,
    SavedQuery,
    Sex,
    Specimen,
    SpecimenStatus,
    StorageUnit,
    Study,
    User,
    Visit,
    utcnow,
)
from biobank.services import audit
from biobank.services.consent_checks import consent_decisions, judged_today, known_uses
from biobank.services.phenotypes import (
    DEFAULT_WINDOW_DAYS,
    Collected,
    stored_time,
    stored_values,
    values_at_collection,
    variables_by_name,
)
from biobank.services.specimens import specimen_type_code
from biobank.services.storage import get_unit, subtree_range
from biobank.services.studies import get_study

CHUNK_SPECIMENS = 5000  # whole participants at a time, about this many specimens
COMPARE = {
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
    excluded_specimens: Counter = field(default_factory=Counter)  # reason -> specimens
    excluded_participants: Counter = field(default_factory=Counter)  # reason -> participants
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


class CohortPreview(BaseModel):
    specimens: int
    participants: int
    matched_before_consent: int
    excluded_by_consent: int
    exclusions: dict[str, dict[str, int]]
    uses: list[str]
    as_of: date
    query: CohortQuery


class SavedQueryRead(BaseModel):
    name: str
    description: str | None
    query: CohortQuery
    created_by: str | None
    updated_at: Any


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
        if c.op in ("in", "not in"):
            value = [_coerce(spec, v, c.variable) for v in c.value]
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
) -> sa.Select:
    """Specimen and participant filters the database answers, participant by participant.
    `reserved_by_run`: the specimens that export run reserved count as they were before."""
    statuses = Specimen.status.in_([SpecimenStatus(s) for s in query.statuses])
    if reserved_by_run is not None:
        reserved = sa.select(ExportRunSpecimen.specimen_id).where(
            ExportRunSpecimen.export_run_id == reserved_by_run
        )
        statuses = sa.or_(
            statuses,
            sa.and_(Specimen.status == SpecimenStatus.reserved, Specimen.id.in_(reserved)),
        )
    stmt = (
        sa.select(  # `CohortRow`'s fields, in its order
            Specimen.id,
            Specimen.participant_id,
            Specimen.visit_id,
            stored_time(Specimen.collected_at),
            Visit.visit_date,
            stored_time(Specimen.received_at),
            Participant.birth_year,
            Participant.code.label("participant_code"),
            as_text(Participant.sex),
            Specimen.accession_id,
            Specimen.parent_id,
            as_text(Specimen.kind),
            Specimen.specimen_type,
            Specimen.container_type,
            Specimen.sprec_code,
            Specimen.quantity,
            as_text(Specimen.unit),
            Specimen.freeze_thaw_count,
        )
        .join(Participant, Participant.id == Specimen.participant_id)
        .outerjoin(Visit, Visit.id == Specimen.visit_id)
        .where(statuses)
        .order_by(Specimen.participant_id, Specimen.id)  # participant by participant: `Tally`
    )
    if query.specimen_types:
        stmt = stmt.where(Specimen.specimen_type.in_(query.specimen_types))
    if query.collected_from is not None or query.collected_to is not None:
        stmt = stmt.where(_may_be_collected_between(query.collected_from, query.collected_to))
    if query.min_quantity is not None:
        stmt = stmt.where(Specimen.quantity >= query.min_quantity)
    if query.max_freeze_thaws is not None:
        stmt = stmt.where(Specimen.freeze_thaw_count <= query.max_freeze_thaws)
    if query.sex:
        stmt = stmt.where(Participant.sex.in_([Sex(s) for s in query.sex]))
    if query.study:
        studies = sa.select(Study.id).where(Study.code == query.study)
        stmt = stmt.where(Participant.study_id.in_(studies))
    if query.storage:
        unit = get_unit(session, query.storage)
        low, high = subtree_range(unit)
        boxes = sa.select(StorageUnit.id).where(
            sa.or_(
                StorageUnit.id == unit.id,
                sa.and_(StorageUnit.sort_key >= low, StorageUnit.sort_key < high),
            )
        )
        stmt = stmt.where(Specimen.box_id.in_(boxes))
    return stmt


def as_text(column: sa.ColumnElement) -> sa.Label:
    """A coded column read as its text (the enum's value), under its own name."""
    return sa.type_coerce(column, sa.String).label(column.key)


def _may_be_collected_between(start: date | None, end: date | None) -> sa.ColumnElement:
    """The collection-date filter, coarsely, in the database: times are stored in UTC and a
    local calendar day lies within a day either side of the UTC one, so this margin drops no
    specimen that `_collected_fits` (the exact rule, on `Collected.of`'s day) would keep."""

    def within(column, margin: timedelta) -> sa.ColumnElement:
        def bound(day: date) -> date | datetime:
            return datetime.combine(day, time(), UTC) if margin else day

        low = [column >= bound(start - margin)] if start else []
        high = [column < bound(end + timedelta(days=1) + margin)] if end else []
        return sa.and_(column.is_not(None), *low, *high)

    day = timedelta(days=1)
    drawn_unknown = Specimen.collected_at.is_(None)
    return sa.or_(
        within(Specimen.collected_at, day),
        sa.and_(drawn_unknown, within(Visit.visit_date, timedelta(0))),
        sa.and_(drawn_unknown, Visit.visit_date.is_(None), within(Specimen.received_at, day)),
    )


def count_candidates(
    session: Session, query: CohortQuery, reserved_by_run: int | None = None
) -> int:
    """How many specimens pass the database's filters: the length of a progress bar."""
    query = prepare(session, query).query
    stmt = _base_query(session, query, reserved_by_run).order_by(None)
    return session.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()


def _chunks(session: Session, stmt: sa.Select) -> Iterator[list[CohortRow]]:
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
    by_id = {v.id: v for v in variables}
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
    if c.op == "in":
        return value in c.value
    if c.op == "not in":
        return value not in c.value
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
) -> Iterator[Selected]:
    """The specimens of the cohort, participant by participant, with every variable's value at
    collection; `tally` counts them and the consent exclusions as they go by, `progress` hears
    how many candidates (see `count_candidates`) each step went through."""
    prepared = prepare(session, query)
    uses = known_uses(session, uses)
    query, tally = prepared.query, tally if tally is not None else Tally()
    variables = list(prepared.variables.values())
    ever_variables = [prepared.variables[n] for n in _ever_variables(prepared.conditions)]
    for chunk in _chunks(session, _base_query(session, query, reserved_by_run)):
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


def resolve_query(
    session: Session, *, actor: Actor, query: CohortQuery | None, saved: str | None
) -> tuple[CohortQuery, SavedQueryRead | None]:
    """The query a request names: a saved one narrowed by the filters given beside it
    (`cohort.narrowed`: never wider, never ignored), or the filters alone."""
    if saved is None or not saved.strip():
        return query or CohortQuery(), None
    kept = get_saved_query(session, actor=actor, name=saved)
    return (kept.query if query is None else narrowed(kept.query, query)), kept


def _count(
    session: Session, query: CohortQuery, uses: list[str], as_of: date, window_days: int,
    listed: list[tuple[str, str]] | None = None,
) -> CohortPreview:  # fmt: skip
    tally = Tally()
    for selected in select_cohort(
        session, query=query, uses=uses, as_of=as_of, window_days=window_days, tally=tally
    ):
        if listed is not None:
            listed.append((selected.specimen.accession_id, selected.specimen.participant_code))
    return CohortPreview(
        specimens=tally.specimens,
        participants=tally.participants,
        matched_before_consent=tally.matched_before_consent,
        excluded_by_consent=sum(tally.excluded_specimens.values()),
        exclusions=tally.exclusions(),
        uses=known_uses(session, uses),
        as_of=as_of,
        query=query,
    )


def preview_cohort(
    session: Session,
    *,
    actor: Actor,
    query: CohortQuery | None = None,
    saved: str | None = None,
    uses: list[str],
    as_of: date | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> CohortPreview:
    """The counts a PI sees before exporting: specimens, participants, and who consent left
    out, by reason, as of today. Nothing is written."""
    require(actor, Permission.query)
    as_of = judged_today(as_of, what="a cohort preview")
    query, _ = resolve_query(session, actor=actor, query=query, saved=saved)
    return _count(session, query, uses, as_of, window_days)


class ConsentReport(CohortPreview):
    """What consent allowed on an earlier day: counts, and the internal IDs when listed."""

    reason: str
    specimens_listed: list[dict[str, str]] | None = None


def allowed_on(
    session: Session,
    *,
    actor: Actor,
    as_of: date,
    uses: list[str],
    reason: str,
    query: CohortQuery | None = None,
    saved: str | None = None,
    listed: bool = False,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> ConsentReport:
    """The admins' answer to "what did consent allow on that day?" (an audit, a complaint, a
    regulator's question): counts, and with `listed` the accession IDs and participant codes,
    but never data files; audited with its reason."""
    require(actor, Permission.view_audit)
    if not reason or not reason.strip():
        raise ValidationError("a report of what consent allowed names its reason", field="reason")
    if as_of > date.today():
        raise ValidationError(
            f"{as_of} is in the future: consent is known up to today", field="as_of",
            value=as_of.isoformat(),
        )  # fmt: skip
    query, _ = resolve_query(session, actor=actor, query=query, saved=saved)
    found: list[tuple[str, str]] | None = [] if listed else None
    counts = _count(session, query, uses, as_of, window_days, found)
    audit.record(
        session, actor=actor, action="consent.allowed_on", entity="cohort", entity_id="-",
        after=counts.model_dump(mode="json") | {"listed": listed}, reason=reason.strip(),
    )  # fmt: skip
    return ConsentReport(
        **counts.model_dump(),
        reason=reason.strip(),
        specimens_listed=None if found is None
        else [{"accession_id": a, "participant_code": p} for a, p in found],
    )  # fmt: skip


# --- Saved queries -------------------------------------------------------------------------------


def _saved_read(session: Session, row: SavedQuery) -> SavedQueryRead:
    creator = session.get(User, row.created_by_id) if row.created_by_id else None
    return SavedQueryRead(
        name=row.name,
        description=row.description,
        query=load_query(row.query),
        created_by=creator.username if creator else None,
        updated_at=row.updated_at,
    )


def save_query(
    session: Session,
    *,
    actor: Actor,
    name: str,
    query: CohortQuery,
    description: str | None = None,
    replace: bool = False,
) -> SavedQueryRead:
    """Keep a query under a name; replacing one is audited with what it was."""
    require(actor, Permission.query)
    name = name.strip()
    if not name or len(name) > 120:
        raise ValidationError("a query name is 1-120 characters", field="name", value=name)
    prepare(session, query)
    row = session.exec(select(SavedQuery).where(SavedQuery.name == name)).first()
    if row is not None and not replace:
        raise AlreadyExists(
            f"a saved query {name!r} exists (replace it with --replace)", field="name", value=name
        )
    action = "saved_query.add" if row is None else "saved_query.replace"
    row = row or SavedQuery(name=name, created_by_id=actor.user_id)
    with audit.audited(session, row, actor=actor, action=action, entity="saved_query"):
        row.query = query.model_dump(mode="json")
        row.description = description.strip() if description else None
        row.updated_at = utcnow()
    return _saved_read(session, row)


def get_saved_query(session: Session, *, actor: Actor, name: str) -> SavedQueryRead:
    """A saved query by name, to look at or to run again as it was saved."""
    require(actor, Permission.query)
    row = session.exec(select(SavedQuery).where(SavedQuery.name == name.strip())).first()
    if row is None:
        raise NotFound(f"no saved query {name!r}", field="name", value=name)
    return _saved_read(session, row)


def list_saved_queries(session: Session, *, actor: Actor) -> list[SavedQueryRead]:
    """Every saved query, by name: what can be run again without writing it out."""
    require(actor, Permission.query)
    rows = session.exec(select(SavedQuery).order_by(SavedQuery.name)).all()
    return [_saved_read(session, r) for r in rows]
