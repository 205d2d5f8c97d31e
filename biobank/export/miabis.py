"""An export's rows under MIABIS's names and values: the attributes of BBMRI-ERIC's MIABIS
component specifications Sample, Sample donor and Event, each enumerated value one of the
standard's list (`biobank/reference/miabis.json`, naming its source). No MIABIS 2.0 term is
needed: every attribute written is a component's.

An export column becomes an attribute when it carries its name (`Column.miabis`): the donor and
sample IDs (the export's codes), Sex, Sample type (the SPREC type through the MIABIS sample-type
mapping, `biobank/reference/sample_types.json`; a type it does not map is "Other"), Sample
storage temperature (the storage unit's temperature class; none recorded, or one outside the
list, is "Other"), Sample creation date and time (the collection date, or its year once dates
are reduced), and Age at event (the age at collection; under Safe Harbor an age over 89 reads
90, as in the export's other files). The others are made here: Sample content diagnosis (the ICD-10
code of each diagnosis the participant has a date of: a SNOMED CT-coded date the ICD-10 table
maps, so SLE is M32 unless the registry codes a subtype), Use & Access conditions (the
statements the participant has granted as of the export, where MIABIS has a condition for
them), Sample source (Human), and the sampling event's Event ID and Age at event unit (years),
which MIABIS requires beside an age (the event's ID is the sample's with "-C", for
collection). Several values in one cell are joined by "|". Like every CSV cell, a value that
starts like a formula is written after an apostrophe: the storage temperatures below zero
("'-60 °C to -85 °C") too.

Not written, having no component attribute: the parent specimen, quantity, freeze-thaw count,
SPREC code and phenotype values (they are in the export's other files)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from functools import cache
from importlib.resources import files
from typing import Any

from biobank.errors import ValidationError
from biobank.export.columns import Column, Row
from biobank.export.fhir_resources import ConsentRecord, Records
from biobank.export.fhir_terms import SNOMED_SYSTEM, icd10

SAMPLE_DONOR_ID = "Sample donor ID"
SEX = "Sex"
SAMPLE_ID = "Sample ID"
SAMPLE_TYPE = "Sample type"
STORAGE_TEMPERATURE = "Sample storage temperature"
CREATED = "Sample creation date and time"
CONTENT_DIAGNOSIS = "Sample content diagnosis"
USE_AND_ACCESS = "Use & Access conditions"
SAMPLE_SOURCE = "Sample source"
EVENT_ID = "Event ID"
AGE_AT_EVENT = "Age at event"
AGE_AT_EVENT_UNIT = "Age at event unit"

HEADER = (
    SAMPLE_DONOR_ID, SEX, SAMPLE_ID, SAMPLE_TYPE, STORAGE_TEMPERATURE, CREATED,
    CONTENT_DIAGNOSIS, USE_AND_ACCESS, SAMPLE_SOURCE, EVENT_ID, AGE_AT_EVENT, AGE_AT_EVENT_UNIT,
)  # fmt: skip
"""Every attribute the file may have, in its order."""

FROM_COLUMNS = frozenset({SAMPLE_DONOR_ID, SEX, SAMPLE_ID, SAMPLE_TYPE, STORAGE_TEMPERATURE,
                          CREATED, AGE_AT_EVENT})  # fmt: skip
REQUIRED = (SAMPLE_DONOR_ID, SEX, SAMPLE_ID, SAMPLE_TYPE)  # cardinality 1

OTHER = "Other"
HUMAN = "Human"
YEARS = "years"
SEPARATOR = "|"

SEXES = {
    "female": "Female", "male": "Male", "unknown": "Unknown",
    "undifferentiated": "Undifferentiated",
    "other": "Unknown",  # MIABIS has no "other" sex: the nearest it says without claiming one
}  # fmt: skip

CONDITIONS = {
    "COMMERCIAL": "Commercial use",
    "DATA_SHARING": "Collaboration",  # shared with researchers outside the institution
    "GENETIC": "Genetic data use",
}
"""The MIABIS Use & Access condition of each consent statement (the lupus core's codes) that
has one, in the list's order; future research and re-contact have none."""


@cache
def _reference(name: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(
        files("biobank").joinpath(f"reference/{name}.json").read_text("utf-8")
    )
    return table


@cache
def sample_types() -> dict[str, str]:
    """The MIABIS sample type of each SPREC type code the mapping gives one of the list
    (`biobank/reference/sample_types.json`, shared with FHIR)."""
    listed = set(_reference("miabis")["values"][SAMPLE_TYPE])
    mapped = _reference("sample_types")["types"]
    return {code: mapped[code]["miabis"] for code in sorted(mapped)
            if mapped[code]["miabis"] in listed}  # fmt: skip


def sample_type(sprec_type: str | None) -> str:
    """The MIABIS sample type of a SPREC type code, "Other" where the mapping has none."""
    return sample_types().get(sprec_type or "", OTHER)


_DEGREES = re.compile(r"(?P<sign>[-+\u2212]?)(?P<number>\d+(?:\.\d+)?)°?C?")


def storage_temperature(temperature_class: str | None) -> str:
    """The MIABIS storage temperature of a storage unit's temperature class as the inventory
    spells it ("-80C", "-20 °C", "4C", "RT", "LN2", "LN2 vapour", "LN2 liquid"); none recorded,
    or one outside every range of the list, is "Other". Liquid nitrogen of unrecorded phase is
    "<-135 °C", true of both."""
    text = (temperature_class or "").upper().replace(" ", "")
    if text.startswith(("LN", "LIQUIDNITROGEN")):
        if "VAP" in text:
            return "Liquid nitrogen vapor-phase"
        if "LIQ" in text.removeprefix("LIQUIDNITROGEN"):
            return "Liquid nitrogen liquid-phase"
        return "<-135 °C"
    if text in ("RT", "ROOMTEMPERATURE", "AMBIENT"):
        return "RT"
    found = _DEGREES.fullmatch(text)
    if found is None:
        return OTHER
    degrees = float(found["number"]) * (-1 if found["sign"] in ("-", "\u2212") else 1)
    for low, high, value in (
        (15, 25, "RT"), (2, 10, "2 °C to 10°C"), (-35, -18, "-18 °C to -35 °C"),
        (-85, -60, "-60 °C to -85 °C"), (-273, -135, "<-135 °C"),
    ):  # fmt: skip
        if low <= degrees <= high:
            return value
    return OTHER


def _date_and_time(value: object) -> object:
    """ISO 8601, partial (the year alone) once dates are reduced."""
    return value.isoformat() if isinstance(value, date) else value


def _sex(code: object) -> str:
    return SEXES.get(code, "Unknown") if isinstance(code, str) else "Unknown"


_SHOWN: dict[str, Callable[[Any], Any]] = {
    SEX: _sex,
    SAMPLE_TYPE: sample_type,
    STORAGE_TEMPERATURE: storage_temperature,
    CREATED: _date_and_time,
}


class MiabisRows:
    """The MIABIS file of an export's columns: its `header`, and `rows` turning each batch of
    export rows into MIABIS rows. `records` gives each participant's consent (asked once a
    batch, for the batch's participants)."""

    def __init__(self, columns: Sequence[Column], records: Records) -> None:
        named = {c.miabis: at for at, c in enumerate(columns) if c.miabis}
        unknown = sorted(set(named) - FROM_COLUMNS)
        if unknown:
            raise ValidationError(
                f"{unknown[0]!r} is not a MIABIS attribute an export column can carry "
                f"({', '.join(sorted(FROM_COLUMNS))})",
                field="columns",
                value=unknown[0],
            )
        missing = [name for name in REQUIRED if name not in named]
        if missing:
            raise ValidationError(
                f"a MIABIS file needs a column for {', '.join(missing)}", field="columns"
            )
        self._records = records
        self._donor = named[SAMPLE_DONOR_ID]
        self._sample = named[SAMPLE_ID]
        self._age = named.get(AGE_AT_EVENT)
        self._diagnoses = [
            (at, coding["code"])
            for at, c in enumerate(columns)
            if c.kind in ("date", "year") and c.code_system == SNOMED_SYSTEM and c.code
            and (coding := icd10(c.code)) is not None
        ]  # fmt: skip
        self.header = [
            name
            for name in HEADER
            if name in named
            or name in (CONTENT_DIAGNOSIS, USE_AND_ACCESS, SAMPLE_SOURCE)
            or (name in (EVENT_ID, AGE_AT_EVENT_UNIT) and self._age is not None)
        ]
        self._places = [named.get(name) for name in self.header]

    def rows(self, batch: Sequence[Row]) -> Iterable[list[Any]]:
        consents = self._records(list(dict.fromkeys(row[self._donor] for row in batch)))
        conditions = {code: _conditions(record.consent) for code, record in consents.items()}
        for row in batch:
            made = {
                CONTENT_DIAGNOSIS: SEPARATOR.join(
                    dict.fromkeys(code for at, code in self._diagnoses if row[at] is not None)
                )
                or None,
                USE_AND_ACCESS: conditions.get(row[self._donor]),
                SAMPLE_SOURCE: HUMAN,
            }
            if self._age is not None:
                aged = row[self._age] is not None
                made[EVENT_ID] = f"{row[self._sample]}-C" if aged else None
                made[AGE_AT_EVENT_UNIT] = YEARS if aged else None
            yield [
                made[name] if at is None else _shown(name, row[at])
                for name, at in zip(self.header, self._places, strict=True)
            ]


def _shown(attribute: str, value: Any) -> Any:
    shown = _SHOWN.get(attribute)
    return value if shown is None else shown(value)


def _conditions(consent: ConsentRecord) -> str | None:
    """The Use & Access conditions of the statements granted, in the order of `CONDITIONS`."""
    granted = {s.statement for s in consent.statements if s.state == "granted"}
    return SEPARATOR.join(c for code, c in CONDITIONS.items() if code in granted) or None
