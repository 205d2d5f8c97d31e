"""A specimen's phenotype at collection: what links a tube to the participant's values.

"The value at a specimen's collection" is the value of the specimen's own visit (of a form
filled in several times within it, a repeat instance's: the latest observed) or, failing that,
the latest value observed on or before the collection date within a window (settings:
`phenotype_window_days`); a participant-level value (sex-like facts, classification, diagnosis
date) applies to every specimen of the participant.

Each value comes with the day it was observed (`AtCollection.observed`): a visit's value its
observation's (its visit's date, or a repeat instance's own), a value borrowed from an earlier
visit the day it was observed then, a participant-level value its own date if it has one.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import one_of
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import READERS
from biobank.domain.vocabulary import PhenotypeScope
from biobank.errors import ValidationError
from biobank.models import PhenotypeValue, PhenotypeVariable, Specimen, Visit
from biobank.services.specimen_read import get_specimen

DEFAULT_WINDOW_DAYS = 90

Pair = tuple[Any, date | None]
"""A value and the day it was observed."""

CollectionDates = tuple[int, int, int | None, datetime | None, date | None, datetime | None]
"""What dates a specimen's collection (a row of `collection_dates_query`): the specimen, its
participant and visit, the time drawn, the visit's date and the time received."""


class AtCollection(dict[str, Any]):
    """A specimen's values at collection by variable name (a dict, read as one) and `observed`:
    by variable name, the day each value was observed (None when it has none)."""

    __slots__ = ("observed",)

    def __init__(self, values: dict[str, Any], observed: dict[str, date | None]) -> None:
        super().__init__(values)
        self.observed = observed


class Collected(NamedTuple):
    """A specimen as the linkage sees it (a tuple: an export makes one per specimen)."""

    specimen_id: int
    participant_id: int
    visit_id: int | None
    collected_on: date | None

    @classmethod
    def of(cls, row: CollectionDates) -> Collected:
        """The day drawn, else its visit's date, else the
        day received. A time counts on this workstation's calendar, where it was entered
        (SQLite cannot cast a timestamp to a date, so the day is taken here)."""
        specimen_id, participant_id, visit_id, collected_at, visit_date, received_at = row
        day: date | None
        if collected_at is not None:
            day = _local_day(collected_at)
        elif visit_date is not None:
            day = visit_date
        else:
            day = _local_day(received_at) if received_at is not None else None
        return cls(specimen_id, participant_id, visit_id, day)


def stored_time(
    column: sa.SQLColumnExpression[datetime | None],
) -> sa.ColumnElement[datetime | None]:
    """A stored time read as the driver gives it (see `_local_day`), without the model
    type's per-value conversion to an aware UTC time: a cohort reads one per specimen."""
    return sa.type_coerce(column, sa.DateTime(timezone=True))


def _local_day(moment: datetime) -> date:
    """The day on this workstation's calendar of a stored time, which is UTC (and comes
    without a zone from SQLite)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().date()


def collection_dates_query() -> sa.Select[
    int | None, int, int | None, datetime | None, date | None, datetime | None
]:
    """What dates each specimen's collection (`CollectionDates`, see `Collected.of`)."""
    return sa.select(
        col(Specimen.id),
        col(Specimen.participant_id),
        col(Specimen.visit_id),
        stored_time(col(Specimen.collected_at)),
        col(Visit.visit_date),
        stored_time(col(Specimen.received_at)),
    ).outerjoin(Visit, col(Visit.id) == Specimen.visit_id)


def values_at_collection(
    session: Session,
    *,
    specimens: Iterable[Collected],
    variables: Iterable[PhenotypeVariable],
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> dict[int, AtCollection]:
    """For each specimen, each variable's typed value at collection (absent when none) and the
    day it was observed. Specimens of one collection share theirs: read it, do not change it."""
    specimens, variables = list(specimens), list(variables)
    if not specimens or not variables:
        return {s.specimen_id: AtCollection({}, {}) for s in specimens}
    # Plain lookups made once: the loops below run per value and per specimen.
    kinds = {
        v.id: (v.name, READERS[v.value_type], v.scope is PhenotypeScope.participant)
        for v in variables
    }
    participants = sorted({s.participant_id for s in specimens})
    # participant -> its own values, visit -> that visit's values: (value, observed on) each
    fixed: dict[int, dict[str, Pair]] = defaultdict(dict)
    own: dict[int, dict[str, Pair]] = defaultdict(dict)
    # (participant-level, participant or visit, variable) -> of a place whose value taken is a
    # repeat instance's, that one's (observed, instance): its own value (instance 0) comes
    # first, then the latest observed instance
    ranks: dict[tuple[bool, int, str], tuple[date, int]] = {}
    # participant -> day -> what was observed that day (of a variable seen twice that day, the
    # last value read)
    dated: dict[int, dict[date, dict[str, Any]]] = defaultdict(dict)
    for start in range(0, len(participants), 1000):
        chunk = participants[start : start + 1000]
        rows = session.connection().execute(  # Core rows: no ORM result layer per value
            sa.select(
                col(PhenotypeValue.participant_id),
                col(PhenotypeValue.visit_id),
                col(PhenotypeValue.variable_id),
                col(PhenotypeValue.observed_on),
                col(PhenotypeValue.value_number),
                col(PhenotypeValue.value_text),
                col(PhenotypeValue.value_date),
                col(PhenotypeValue.instance),
            ).where(
                one_of(session, col(PhenotypeValue.participant_id), chunk),
                one_of(session, col(PhenotypeValue.variable_id), kinds),
            )
        )
        for pid, visit_id, var_id, observed_on, number, text, day, instance in rows:
            name, read, per_participant = kinds[var_id]
            value = read(number, text, day)
            at = pid if per_participant else visit_id  # the value's place: whose it is
            if at is not None:
                holder = fixed[pid] if per_participant else own[at]
                taken = True
                if instance or ranks:  # rare: a repeat instance's, or a place that had one
                    place, rank = (per_participant, at, name), (observed_on or date.min, instance)
                    if not instance:
                        ranks.pop(place, None)
                    elif ranks[place] > rank if place in ranks else name in holder:
                        taken = False  # the place's own value, or a later instance's, holds
                    else:
                        ranks[place] = rank
                if taken:
                    holder[name] = (value, observed_on)
            if per_participant:
                continue
            if observed_on is not None:
                on_day = dated[pid].get(observed_on)
                if on_day is None:
                    on_day = dated[pid][observed_on] = {}
                on_day[name] = value
    days = {pid: sorted(by_day) for pid, by_day in dated.items()}  # each participant's, in order
    window = timedelta(days=window_days)
    result: dict[int, AtCollection] = {}
    # Specimens of one visit drawn the same day have the same values: one dict serves them all.
    found_for: dict[tuple[int, int | None, date | None], AtCollection] = {}
    for s in specimens:
        key = (s.participant_id, s.visit_id, s.collected_on)
        found = found_for.get(key)
        if found is None:
            pairs = dict(fixed.get(s.participant_id, ()))
            if s.visit_id is not None:
                pairs.update(own.get(s.visit_id, ()))
            found = found_for[key] = AtCollection(
                {name: value for name, (value, _) in pairs.items()},
                {name: day for name, (_, day) in pairs.items()},
            )
            if s.collected_on is not None and s.participant_id in days:
                # only what the specimen's own visit lacks falls back to an earlier
                # observation: the latest within the window, day by day back from collection
                observed, by_day = days[s.participant_id], dated[s.participant_id]
                earliest = s.collected_on - window
                at = bisect.bisect_right(observed, s.collected_on)
                seen = found.observed
                while at and observed[at - 1] >= earliest:
                    at -= 1
                    day = observed[at]
                    for name, value in by_day[day].items():
                        if name not in found:
                            found[name] = value
                            seen[name] = day
        result[s.specimen_id] = found
    return result


def specimen_phenotypes(
    session: Session,
    *,
    actor: Actor,
    accession: str,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> AtCollection:
    """One specimen's phenotype at collection, by variable name (aliquots share theirs)."""
    require(actor, Permission.view_inventory)
    if window_days < 0:
        raise ValidationError("the window is zero or more days", field="window_days")
    specimen = get_specimen(session, accession)
    query = collection_dates_query().where(col(Specimen.id) == specimen.id)
    collected = Collected.of(session.execute(query).one())
    variables = session.exec(select(PhenotypeVariable).order_by(col(PhenotypeVariable.id))).all()
    return values_at_collection(
        session,
        specimens=[collected],
        variables=variables,
        window_days=window_days,
    )[collected.specimen_id]
