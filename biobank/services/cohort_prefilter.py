"""Phenotype conditions narrowed in the database before they are judged in Python.

A specimen meets a condition on its value at collection (or on any value ever recorded) only if
its participant has some value of the variable that meets it: a condition's value at collection
is one of the participant's values. So each condition gives a necessary test the database can
answer — the participant has a stored value that meets it — and the cohort's candidates are
narrowed to the participants that pass, before the exact rule (`cohorts._matches`) judges the
rest, a participant at a time. `all` groups narrow by each of their conditions, `any` groups
by the union of theirs; a condition no test can state (a multi-choice's codes) narrows nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from biobank.domain.cohort import Condition, Group
from biobank.domain.vocabulary import PhenotypeType
from biobank.models import PhenotypeValue, PhenotypeVariable, Specimen

SQL_COMPARE: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


def _column(kind: PhenotypeType) -> Any:
    """The column a variable's values are stored in (see `PhenotypeValue`)."""
    if kind is PhenotypeType.date:
        return col(PhenotypeValue.value_date)
    if kind in (PhenotypeType.choice, PhenotypeType.text):
        return col(PhenotypeValue.value_text)
    return col(PhenotypeValue.value_number)


def _stored(kind: PhenotypeType, value: Any) -> Any:
    """A condition's typed value as the column holds it (a yes/no as 1/0)."""
    if kind is PhenotypeType.boolean:
        return 1.0 if value else 0.0
    if isinstance(value, date | str):
        return value
    return float(value)


def _test(c: Condition, variable: PhenotypeVariable) -> sa.ColumnElement[bool] | None:
    """The participants with a stored value meeting `c` (None: no test states it)."""
    kind = variable.value_type
    if kind is PhenotypeType.multi_choice:
        return None
    where = [col(PhenotypeValue.variable_id) == variable.id]
    column = _column(kind)
    if c.op in ("in", "not in"):
        assert isinstance(c.value, list)
        listed = [_stored(kind, v) for v in c.value]
        where.append(column.in_(listed) if c.op == "in" else column.not_in(listed))
    elif c.op != "exists":
        where.append(SQL_COMPARE[c.op](column, _stored(kind, c.value)))
    holders = sa.select(col(PhenotypeValue.participant_id)).where(*where)
    return col(Specimen.participant_id).in_(holders)


def narrowing(
    group: Group | None, variables: dict[str, PhenotypeVariable]
) -> sa.ColumnElement[bool] | None:
    """The database's test of a query's prepared conditions (None: it narrows nothing)."""
    if group is None:
        return None
    tests = [
        narrowing(c, variables) if isinstance(c, Group) else _test(c, variables[c.variable])
        for c in group.conditions
    ]
    if group.match == "all":
        kept = [t for t in tests if t is not None]
        return sa.and_(*kept) if kept else None
    if any(t is None for t in tests):
        return None
    return sa.or_(*[t for t in tests if t is not None])
