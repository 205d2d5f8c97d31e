"""An export's columns and rows, de-identified for its mode:

- `safe_harbor` (the default): participant and specimen codes made for this export alone
  (keyed hashes of internal ids under a random key kept with the run, so a replay gives the
  same codes and two exports never do), dates reduced to the year (an observation's days from
  collection, not a date, stay), ages over 89 as 90 with `age_top_coded` saying so, no free
  text and nothing from the identity table.
- `limited`: dates kept (the data use agreement it needs is checked by `services.exports`).
- `identified`: admins only; real participant codes, accession IDs and the identity columns.

The columns are described once (`export.columns.Column`) and read by every writer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import date
from itertools import chain
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from biobank.db import one_of
from biobank.domain.vocabulary import DeidentificationMode, PhenotypeScope, PhenotypeType
from biobank.export import miabis
from biobank.export.columns import Column, Kind
from biobank.export.names import observation_column_names, phenotype_column_names
from biobank.models import ParticipantIdentity, PhenotypeVariable, Specimen, StorageUnit
from biobank.services.cohorts import Selected
from biobank.services.phenotype_at_collection import AtCollection
from biobank.tabular import chunks

BATCH = 1000  # specimens de-identified at a time (and recorded by a run: `services.exports`)
OLDEST_SHOWN_AGE = 89  # Safe Harbor: older ages are one group, shown as 90 and flagged


# The labels of coded values are MIABIS's (`export.miabis`), e.g. sex `Female`, SPREC type SER
# `Serum`; the files hold the codes. MIABIS has no "other" sex: its label is "Unknown".
MIABIS_SEX = tuple(miabis.SEXES.items())


def fixed_columns(mode: DeidentificationMode) -> list[Column]:
    safe = mode is DeidentificationMode.safe_harbor
    dated: Kind = "year" if safe else "date"
    columns = [
        Column("participant_code", "Participant (code for this export)", role="participant",
               miabis=miabis.SAMPLE_DONOR_ID),
        Column("sex", "Sex", role="participant", miabis=miabis.SEX, choices=MIABIS_SEX),
        Column("specimen_code", "Specimen (code for this export)", role="specimen",
               miabis=miabis.SAMPLE_ID),
        Column("parent_specimen_code", "Parent specimen", role="specimen"),
        Column("specimen_kind", "Primary, aliquot, derivative or pool", role="specimen"),
        Column("specimen_type", "SPREC specimen type", role="specimen",
               miabis=miabis.SAMPLE_TYPE, choices=tuple(miabis.sample_types().items())),
        Column("container_type", "SPREC primary container", role="specimen"),
        Column("sprec_code", "SPREC code", role="specimen"),
        Column("storage_temperature", "Storage temperature class", role="specimen",
               miabis=miabis.STORAGE_TEMPERATURE, description="of the storage unit holding the "
               "tube (its box, or the nearest unit above it that records one); empty when the "
               "tube is in no box"),
        Column("collected", "Collected" + (" (year)" if dated == "year" else ""), kind=dated,
               role="specimen", miabis=miabis.CREATED),
        Column("age_at_collection", "Age at collection (years" + ("; 90 above 89)" if safe
               else ")"), kind="integer", role="specimen", miabis=miabis.AGE_AT_EVENT),
    ]  # fmt: skip
    if safe:
        columns.append(Column(
            "age_top_coded", "Age over 89, shown as 90", kind="boolean", role="specimen",
            description="Safe Harbor groups every age over 89: age_at_collection is 90 for "
            "all of them"))  # fmt: skip
    columns += [
        Column("quantity", "Quantity left", kind="decimal", role="specimen"),
        Column("unit", "Unit of quantity", role="specimen"),
        Column("freeze_thaw_count", "Freeze-thaw cycles", kind="integer", role="specimen"),
    ]  # fmt: skip
    if mode is DeidentificationMode.identified:
        columns += [
            Column("mrn", "Medical record number", role="participant"),
            Column("family_name", "Family name", role="participant"),
            Column("given_name", "Given name", role="participant"),
            Column("date_of_birth", "Date of birth", kind="date", role="participant"),
        ]
    return columns


SCOPE_NOTE = {
    PhenotypeScope.participant: "per participant",
    PhenotypeScope.visit: "at collection (its visit, or the latest within the window)",
}
KINDS: dict[PhenotypeType, Kind] = {
    PhenotypeType.integer: "integer", PhenotypeType.decimal: "decimal",
    PhenotypeType.boolean: "boolean", PhenotypeType.choice: "string",
    PhenotypeType.multi_choice: "string", PhenotypeType.date: "date", PhenotypeType.text: "string",
}  # fmt: skip


def variable_columns(
    variables: list[PhenotypeVariable], mode: DeidentificationMode
) -> list[tuple[str, Column]]:
    """One column per dictionary variable, (variable name, column): named from the variable,
    in a namespace of its own (`export.names`: a variable called `quantity` is the column
    `var_quantity`, so no name a REDCap project chose can block an export); free text only
    when identified."""
    named = phenotype_column_names([v.name for v in variables])
    columns = []
    for v in variables:
        if v.value_type is PhenotypeType.text and mode is not DeidentificationMode.identified:
            continue
        kind = KINDS[v.value_type]
        if kind == "date" and mode is DeidentificationMode.safe_harbor:
            kind = "year"
        source = None if named[v.name] == v.name else f"the variable {v.name}"
        description = "; ".join(filter(None, (SCOPE_NOTE[v.scope], v.description, source)))
        columns.append((v.name, Column(
            named[v.name], v.label, kind=kind, role="phenotype", unit=v.unit,
            code_system=v.code_system, code=v.code,
            choices=tuple((c["code"], c["label"]) for c in v.choices or ()),
            multiple=v.value_type is PhenotypeType.multi_choice, description=description,
        )))  # fmt: skip
    return columns


def with_observations(
    phenotype_columns: list[tuple[str, Column]], mode: DeidentificationMode
) -> list[Column]:
    """The phenotype columns, each followed by the two saying when its value was observed:
    the day (the year under Safe Harbor) and the days from collection (not a date: kept)."""
    dated: Kind = "year" if mode is DeidentificationMode.safe_harbor else "date"
    columns = []
    for _, column in phenotype_columns:
        observed, days = observation_column_names(column.name)
        columns += [
            column,
            Column(observed, f"{column.label}: observed" + (" (year)" if dated == "year" else ""),
                   kind=dated, role="observed",
                   description=f"when the value of {column.name} was observed (a value from an "
                   "earlier visit: then; a participant's own value: its date, if it has one)"),
            Column(days, f"{column.label}: days from collection", kind="integer",
                   role="observed", unit="d",
                   description=f"days from the specimen's collection to the observation of "
                   f"{column.name} (negative: before it)"),
        ]  # fmt: skip
    return columns


def export_code(key: str, prefix: str, internal_id: int) -> str:
    """A code for one export: a keyed hash of the internal id, so it says nothing about the
    person or the tube (HIPAA 164.514(c)) and only the biobank, holding the key, links it."""
    return ExportCodes(key).code(prefix, internal_id)


# Base32 (RFC 4648) ten bits at a time: a code's 40 bits are four of these pairs.
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_BASE32_PAIRS = tuple(first + second for first in _BASE32 for second in _BASE32)


class ExportCodes:
    """`export_code` for one export's key, made once (an export asks for a code per row)."""

    def __init__(self, key: str) -> None:
        self.keyed = hmac.new(bytes.fromhex(key), digestmod="sha256")  # copied, never keyed again

    def code(self, prefix: str, internal_id: int) -> str:
        """The prefix and the first 40 bits of the MAC in Base32, as `base64.b32encode`
        writes them (tested), a third of its time: an export makes one code per row."""
        mac = self.keyed.copy()
        mac.update(f"{prefix}{internal_id}".encode())
        bits = int.from_bytes(mac.digest()[:5])
        pairs = _BASE32_PAIRS
        return (
            f"{prefix}-{pairs[bits >> 30]}{pairs[bits >> 20 & 1023]}"
            f"{pairs[bits >> 10 & 1023]}{pairs[bits & 1023]}"
        )


def _year(value: Any) -> Any:
    return value.year if isinstance(value, date) else value


def _age(age: int | None, safe: bool) -> tuple[int | None] | tuple[int | None, bool | None]:
    """The age column(s): under Safe Harbor, ages over 89 as 90 and whether it was one."""
    if not safe:
        return (age,)
    if age is None:
        return (None, None)
    return (OLDEST_SHOWN_AGE + 1, True) if age > OLDEST_SHOWN_AGE else (age, False)


def deidentified_rows(
    session: Session,
    selected: Iterator[Selected],
    *,
    key: str,
    mode: DeidentificationMode,
    phenotype_columns: list[tuple[str, Column]],
    on_batch: Callable[[list[Selected]], None],
) -> Iterator[tuple[Any, ...]]:
    """Each selected specimen as an export row, de-identified for the mode, its values in the
    order of `fixed_columns(mode)` and `with_observations(phenotype_columns, mode)`."""
    safe = mode is DeidentificationMode.safe_harbor
    identified = mode is DeidentificationMode.identified
    codes = ExportCodes(key)
    names = [name for name, _ in phenotype_columns]  # the values are the variables'
    to_year = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "year"]
    listed = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "string"]
    # rows come participant by participant: (id, code)
    participant: tuple[int | None, str | None] = (None, None)
    stored_at = _Temperatures(session)
    for batch in chunks(selected, BATCH):
        on_batch(batch)
        temperatures = stored_at.of([s.specimen_id for s in batch])
        # specimens of one collection share their values (see `values_at_collection`): their
        # cells are made once a batch, while the batch keeps those values alive
        shown: dict[int, tuple[Any, ...]] = {}
        people, parents = {}, {}
        if identified:
            people = _identities(session, {s.participant_id for s in batch})
            parents = _accession_ids(session, {s.specimen.parent_id for s in batch} - {None})
        for s in batch:
            r = s.specimen
            if participant[0] != s.participant_id:
                participant = (s.participant_id, r.participant_code if identified
                               else codes.code("P", s.participant_id))  # fmt: skip
            row: tuple[Any, ...] = (
                participant[1],
                r.sex,
                r.accession_id if identified else codes.code("S", r.id),
                None if r.parent_id is None
                else parents[r.parent_id] if identified else codes.code("S", r.parent_id),
                r.kind,
                r.specimen_type,
                r.container_type,
                r.sprec_code,
                temperatures.get(s.specimen_id),
                _year(s.collected_on) if safe else s.collected_on,
                *_age(s.age_at_collection, safe),
                r.quantity,
                r.unit,
                r.freeze_thaw_count,
            )  # fmt: skip
            if identified:
                row += people.get(s.participant_id, IDENTITY_BLANK)
            cells = shown.get(id(s.phenotypes))
            if cells is None:
                assert isinstance(s.phenotypes, AtCollection)  # `values_at_collection`'s
                cells = shown[id(s.phenotypes)] = _phenotype_cells(
                    s.phenotypes, s.collected_on, names, to_year, listed, safe
                )
            yield row + cells


def _phenotype_cells(
    values: AtCollection,
    collected_on: date | None,
    names: list[str],
    to_year: list[int],
    listed: list[int],
    safe: bool,
) -> tuple[Any, ...]:
    """A specimen's phenotype columns (`names`), each followed by when it was observed and
    its days from collection: years for dates at `to_year`, a multi-choice value's codes
    joined by "|" at `listed`, observation days as years when `safe`."""
    cells = list(map(values.get, names))
    for at in to_year:
        cells[at] = _year(cells[at])
    for at in listed:
        codes = cells[at]
        if isinstance(codes, list):
            cells[at] = "|".join(codes)
    # only the values there are (a few of the dictionary's, mostly) have a day
    seen = {name: day for name, day in values.observed.items() if day is not None}
    lags = {} if collected_on is None else {n: (d - collected_on).days for n, d in seen.items()}
    shown: dict[str, date | int] = {n: d.year for n, d in seen.items()} if safe else dict(seen)
    observed, days = map(shown.get, names), map(lags.get, names)
    return tuple(chain.from_iterable(zip(cells, observed, days, strict=True)))


IDENTITY_FIELDS = ("mrn", "family_name", "given_name", "date_of_birth")
IDENTITY_BLANK = (None,) * len(IDENTITY_FIELDS)


def _identities(session: Session, participant_ids: set[int]) -> dict[int, tuple[Any, ...]]:
    """The identity columns of these participants (identified exports only)."""
    fields = [getattr(ParticipantIdentity, f) for f in IDENTITY_FIELDS]
    query = sa.select(col(ParticipantIdentity.participant_id), *fields).where(
        one_of(session, col(ParticipantIdentity.participant_id), participant_ids)
    )
    return {pid: tuple(values) for pid, *values in session.execute(query)}


def _accession_ids(session: Session, specimen_ids: set[int]) -> dict[int, str]:
    """The accession IDs of these specimens (the parents an identified export names)."""
    query = sa.select(col(Specimen.id), col(Specimen.accession_id)).where(
        one_of(session, col(Specimen.id), specimen_ids)
    )
    return dict(session.execute(query).all())


class _Temperatures:
    """The temperature class each specimen is stored at: its box's, or that of the nearest
    unit above the box that records one. Each unit is read once an export (a cohort's
    specimens sit in few boxes)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._units: dict[int, tuple[int | None, str | None]] = {}  # id → (parent, class)

    def of(self, specimen_ids: list[int]) -> dict[int, str]:
        """The class of each of these specimens that is in a box under a unit with one."""
        query = sa.select(col(Specimen.id), col(Specimen.box_id)).where(
            one_of(self._session, col(Specimen.id), specimen_ids),
            col(Specimen.box_id).is_not(None),
        )
        boxes: dict[int, int] = {specimen: box for specimen, box in self._session.execute(query)}
        self._read(set(boxes.values()))
        classes = {specimen: self._class(box) for specimen, box in boxes.items()}
        return {specimen: shown for specimen, shown in classes.items() if shown is not None}

    def _read(self, unit_ids: set[int]) -> None:
        """These units and, where one records no class, the units above it, not read yet."""
        while new := unit_ids - self._units.keys():
            query = sa.select(
                col(StorageUnit.id), col(StorageUnit.parent_id), col(StorageUnit.temperature_class)
            ).where(one_of(self._session, col(StorageUnit.id), new))
            for unit, parent, temperature in self._session.execute(query):
                self._units[unit] = (parent, temperature)
            unit_ids = {
                parent
                for parent, temperature in map(self._units.__getitem__, new)
                if not temperature and parent is not None
            }

    def _class(self, unit: int | None) -> str | None:
        while unit is not None:
            parent, temperature = self._units[unit]
            if temperature:
                return temperature
            unit = parent
        return None
