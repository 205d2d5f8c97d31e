"""A cohort's breakdowns before export: specimens and participants per stratum — sex, age band
at collection, specimen type, visit, or a dictionary variable's value at collection — counted
as the cohort streams by.

In de-identified modes a small cell (fewer than `small_cell`, the site's setting, 5 unless
set) shows as suppressed, never its count; when a breakdown would suppress a single cell, the
next smallest is suppressed too, so the cohort's total cannot give the small one away. The
identified mode, an admin's, shows every count.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col

from biobank.errors import ValidationError
from biobank.models import PhenotypeVariable, Visit
from biobank.services.cohorts import Selected

FIXED = ("sex", "age-band", "type", "visit")
NONE = "(none)"


class Stratum(BaseModel):
    value: str
    specimens: int | None  # None: a small cell, suppressed
    participants: int | None


class Breakdown(BaseModel):
    by: str
    strata: list[Stratum]


def check_strata(by: list[str], variables: dict[str, PhenotypeVariable]) -> list[str]:
    """The breakdowns asked for, each a fixed one or a variable of the dictionary."""
    wanted = []
    for name in by:
        key = name.strip().lower()
        if key not in FIXED and key not in variables:
            raise ValidationError(
                f"cannot break down by {name!r}: use {', '.join(FIXED)} or a variable name",
                field="by",
                value=name,
            )
        wanted.append(key)
    return list(dict.fromkeys(wanted))


def age_band(age: int | None) -> str:
    """Ten-year bands, the last 90+ (Safe Harbor's top code)."""
    if age is None:
        return NONE
    if age >= 90:
        return "90+"
    low = age // 10 * 10
    return f"{low}-{low + 9}"


class StrataCounter:
    """Counts a cohort's specimens and participants per stratum of each breakdown."""

    def __init__(self, by: list[str]) -> None:
        self.by = by
        self.specimens: dict[str, dict[str, int]] = {name: defaultdict(int) for name in by}
        self.people: dict[str, dict[str, set[int]]] = {name: defaultdict(set) for name in by}
        self.visits: set[int] = set()

    def variables(self) -> list[str]:
        """The dictionary variables it breaks down by (their values at collection)."""
        return [name for name in self.by if name not in FIXED]

    def add(self, selected: Selected) -> None:
        for name in self.by:
            for value in self._values(name, selected):
                self.specimens[name][value] += 1
                self.people[name][value].add(selected.participant_id)

    def _values(self, name: str, s: Selected) -> list[str]:
        if name == "sex":
            return [s.specimen.sex]
        if name == "age-band":
            return [age_band(s.age_at_collection)]
        if name == "type":
            return [s.specimen.specimen_type]
        if name == "visit":
            if s.specimen.visit_id is None:
                return [NONE]
            self.visits.add(s.specimen.visit_id)
            return [f"visit:{s.specimen.visit_id}"]
        value: Any = s.phenotypes.get(name)
        if value is None:
            return [NONE]
        values = value if isinstance(value, list) else [value]
        return [str(v) for v in values] or [NONE]

    def breakdowns(self, session: Session, *, small_cell: int, suppress: bool) -> list[Breakdown]:
        labels = self._visit_labels(session)
        found = []
        for name in self.by:
            counts: dict[str, int] = defaultdict(int)
            people: dict[str, set[int]] = defaultdict(set)
            for value, count in self.specimens[name].items():  # a label's visits: one cell
                label = labels.get(value, value)
                counts[label] += count
                people[label] |= self.people[name][value]
            cells = {label: (count, len(people[label])) for label, count in counts.items()}
            found.append(Breakdown(by=name, strata=_suppressed(cells, small_cell, suppress)))
        return found

    def _visit_labels(self, session: Session) -> dict[str, str]:
        if not self.visits:
            return {}
        rows = session.execute(
            sa.select(col(Visit.id), col(Visit.label)).where(col(Visit.id).in_(self.visits))
        )
        return {f"visit:{visit_id}": label for visit_id, label in rows}


def _suppressed(
    cells: dict[str, tuple[int, int]], small_cell: int, suppress: bool
) -> list[Stratum]:
    """The strata, largest first, small cells suppressed (see the module)."""
    ordered = sorted(cells.items(), key=lambda kv: (-kv[1][0], kv[0]))
    hidden = {v for v, (n, people) in ordered if suppress and min(n, people) < small_cell}
    if len(hidden) == 1 and len(ordered) > 1:
        smallest_other = min((kv for kv in ordered if kv[0] not in hidden), key=lambda kv: kv[1])
        hidden.add(smallest_other[0])
    return [
        Stratum(value=value, specimens=None, participants=None)
        if value in hidden
        else Stratum(value=value, specimens=n, participants=people)
        for value, (n, people) in ordered
    ]
