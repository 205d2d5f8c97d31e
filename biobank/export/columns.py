"""What an export file holds: its columns, described once and read by every writer (the header,
the typed cells of XLSX and Parquet, the data dictionary, the MIABIS names, the FHIR mapping).

A row is a sequence of plain Python values, one per column in the columns' order (a tuple is
the cheapest to make and what `csv` and pyarrow read), already de-identified by the export
service: `str`, `int`, `float`, `bool`, `datetime.date` or None.

A column's label, unit, description and choice labels are plain text: REDCap keeps HTML in them
(`<b>`, `<span style=…>`, `&nbsp;`, `<br>`), which a spreadsheet, a Parquet reader or a FHIR
server would show as markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from biobank.errors import ValidationError
from biobank.html_text import plain_text

Kind = Literal["string", "integer", "decimal", "boolean", "date", "year"]
"""The type of a column's values. `year` is an int (a de-identified date)."""

Role = Literal["specimen", "participant", "phenotype", "observed"]
"""What a column describes; the FHIR writer turns every `phenotype` value into an Observation.
An `observed` column says when the phenotype value beside it was observed (its date, or its
days from collection: `export.names.observation_column_names`)."""

Row = Sequence[Any]

KINDS: tuple[str, ...] = get_args(Kind)
ROLES: tuple[str, ...] = get_args(Role)

# The fixed columns the FHIR writer reads by name (the others are free). Only the first two are
# required; `collected` is a date, or a year once dates are reduced to years.
PARTICIPANT_CODE = "participant_code"
SPECIMEN_CODE = "specimen_code"
PARENT_SPECIMEN_CODE = "parent_specimen_code"
SPECIMEN_TYPE = "specimen_type"  # the SPREC type code, e.g. SER
SPREC_CODE = "sprec_code"
COLLECTED = "collected"
QUANTITY = "quantity"
UNIT = "unit"
SEX = "sex"  # female | male | unknown | undifferentiated | other (biobank.models.Sex)
BIRTH_YEAR = "birth_year"

_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Column:
    """One column of an export. `choices` are (code, label) pairs (dicts with `code` and `label`
    are accepted too), `multiple` when a cell lists several codes joined by "|"; `miabis` is
    the header in the MIABIS file, None leaves the column out of it."""

    name: str
    label: str
    kind: Kind = "string"
    role: Role = "phenotype"
    unit: str | None = None
    code_system: str | None = None
    code: str | None = None
    choices: tuple[tuple[str, str], ...] = field(default=())
    miabis: str | None = None
    description: str | None = None
    multiple: bool = False

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValidationError(
                f"column name {self.name!r} is not snake_case", field="column", value=self.name
            )
        if self.kind not in KINDS:
            raise ValidationError(
                f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}",
                field="kind",
                value=self.kind,
            )
        if self.role not in ROLES:
            raise ValidationError(
                f"{self.name}: role {self.role!r} is not one of {', '.join(ROLES)}",
                field="role",
                value=self.role,
            )
        pairs = tuple(
            (c["code"], c["label"]) if isinstance(c, Mapping) else tuple(c) for c in self.choices
        )
        object.__setattr__(self, "choices", tuple((c, plain_text(t)) for c, t in pairs))
        for name in ("label", "unit", "description"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, plain_text(getattr(self, name)))

    def choice_label(self, code: object) -> str | None:
        return next((label for c, label in self.choices if c == code), None)


def checked(columns: Iterable[Column]) -> tuple[Column, ...]:
    """The columns once more, refused if a header would appear twice in a file."""
    columns = tuple(columns)
    if not columns:
        raise ValidationError("an export needs at least one column", field="columns")
    for attribute in ("name", "miabis"):
        seen: set[str] = set()
        for column in columns:
            header = getattr(column, attribute)
            if header is not None and header in seen:
                raise ValidationError(
                    f"two columns have the {attribute} {header!r}", field="columns", value=header
                )
            if header is not None:
                seen.add(header)
    return columns


DICTIONARY_HEADER = (
    "name",
    "label",
    "kind",
    "role",
    "unit",
    "code_system",
    "code",
    "choices",
    "miabis",
    "description",
)


VALUE_LABELS_HEADER = ("column", "code", "label", "multiple")


def value_label_rows(columns: Iterable[Column]) -> Iterator[list[Any]]:
    """One row per code of each coded column under `VALUE_LABELS_HEADER`: what a loader
    turns into labelled factors (R) or categoricals (pandas)."""
    for column in columns:
        for code, label in column.choices:
            yield [column.name, code, label, column.multiple]


def dictionary_rows(columns: Iterable[Column]) -> Iterator[list[str | None]]:
    """One row per column under `DICTIONARY_HEADER`; choices read "code=label; code=label"."""
    for column in columns:
        choices = "; ".join(f"{code}={label}" for code, label in column.choices)
        yield [
            column.name,
            column.label,
            column.kind,
            column.role,
            column.unit,
            column.code_system,
            column.code,
            choices or None,
            column.miabis,
            column.description,
        ]
