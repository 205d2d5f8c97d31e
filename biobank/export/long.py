"""The long shape: the specimens' own columns in one table and their phenotype values in
another, one row per specimen and variable with the value (as text, typed by the dictionary),
its unit, the day it was observed and the days from collection: the layout REDCap users and
tidy tools expect. Participant-level values are repeated for each specimen, as in the wide
table. Both tables are made from the wide rows, so they say exactly what the wide file says.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from biobank.export.columns import PARTICIPANT_CODE, SPECIMEN_CODE, Column, Kind, Row
from biobank.export.names import observation_column_names

VALUES_STEM = "phenotype_values"
"""The long table's file name, before the format's extension."""

LONG_NAMES = ("variable", "value", "value_unit", "observed", "days_from_collection")
"""The long table's own columns (after the participant and specimen codes)."""


@dataclass(frozen=True)
class LongShape:
    """How the wide columns split: the specimens' columns, and the long table's."""

    specimen_columns: list[Column]
    value_columns: list[Column]
    _specimen_places: tuple[int, ...]
    _code_places: tuple[int, int]
    _phenotypes: tuple[tuple[str, str | None, int, int, int], ...]
    """Each phenotype column: name, unit, and where its value, observed day and days are."""

    def specimens(self, rows: Iterable[Row]) -> Iterator[Row]:
        places = self._specimen_places
        for row in rows:
            yield tuple(map(row.__getitem__, places))

    def values(self, rows: Iterable[Row]) -> Iterator[Row]:
        participant_at, specimen_at = self._code_places
        phenotypes = self._phenotypes
        for row in rows:
            codes = (row[participant_at], row[specimen_at])
            for name, unit, value_at, observed_at, days_at in phenotypes:
                value = row[value_at]
                if value is not None:
                    yield (*codes, name, str(value), unit, row[observed_at], row[days_at])


def long_shape(columns: Sequence[Column], dated: Kind) -> LongShape:
    """The two tables of `columns` (the wide ones, each phenotype column with its observation
    columns), observation days written as `dated` (date, or year)."""
    at = {c.name: place for place, c in enumerate(columns)}
    own = [(place, c) for place, c in enumerate(columns) if c.role not in ("phenotype", "observed")]
    phenotypes = [c for c in columns if c.role == "phenotype"]
    codes = [c for c in columns if c.name in (PARTICIPANT_CODE, SPECIMEN_CODE)]
    value_columns = [
        *codes,
        Column("variable", "Phenotype variable (a column of dictionary.csv)", role="phenotype",
               choices=tuple((c.name, c.label) for c in phenotypes)),
        Column("value", "Value, as text (its type: the variable's kind in dictionary.csv)",
               role="phenotype"),
        Column("value_unit", "Unit of the value", role="phenotype"),
        Column("observed", "Observed" + (" (year)" if dated == "year" else ""), kind=dated,
               role="observed", description="when the value was observed (a value from an "
               "earlier visit: then; a participant's own value: its date, if it has one)"),
        Column("days_from_collection", "Days from collection", kind="integer", role="observed",
               unit="d", description="days from the specimen's collection to the observation "
               "(negative: before it)"),
    ]  # fmt: skip
    return LongShape(
        specimen_columns=[c for _, c in own],
        value_columns=value_columns,
        _specimen_places=tuple(place for place, _ in own),
        _code_places=(at[PARTICIPANT_CODE], at[SPECIMEN_CODE]),
        _phenotypes=tuple(
            (c.name, c.unit, at[c.name], *(at[n] for n in observation_column_names(c.name)))
            for c in phenotypes
        ),
    )
