"""An export's columns and rows, de-identified for its mode:

- `safe_harbor` (the default): participant and specimen codes made for this export alone
  (keyed hashes of internal ids under a random key kept with the run, so a replay gives the
  same codes and two exports never do), dates reduced to the year, ages over 89 as "90+", no
  free text and nothing from the identity table.
- `limited`: dates kept (the data use agreement it needs is checked by `services.exports`).
- `identified`: admins only; real participant codes, accession IDs and the identity columns.

The columns are described once (`export.columns.Column`) and read by every writer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from biobank.db import one_of
from biobank.domain.vocabulary import DeidentificationMode, PhenotypeScope, PhenotypeType
from biobank.export.columns import Column, Kind
from biobank.export.names import phenotype_column_names
from biobank.models import ParticipantIdentity, PhenotypeVariable, Specimen
from biobank.services.cohorts import Selected
from biobank.tabular import chunks

BATCH = 1000  # specimens de-identified at a time (and recorded by a run: `services.exports`)
OLDEST_SHOWN_AGE = 89  # Safe Harbor: older ages are one group, "90+"


# MIABIS names for coded values (the MIABIS file writes the label; the others the code).
# MIABIS has no "other" sex (FHIR's administrative gender has): it is exported as "Unknown",
# the nearest MIABIS says without claiming a sex the record does not give.
MIABIS_SEX = (
    ("female", "Female"), ("male", "Male"), ("unknown", "Unknown"),
    ("undifferentiated", "Undifferentiated"), ("other", "Unknown"),
)  # fmt: skip
MIABIS_MATERIAL = (
    ("SER", "Serum"), ("PL1", "Plasma"), ("PL2", "Plasma"), ("BLD", "Whole blood"),
    ("URN", "Urine"), ("SAL", "Saliva"), ("DNA", "DNA"), ("RNA", "RNA"),
    ("BUF", "Buffy coat"), ("CEL", "Peripheral blood cells"),
)  # fmt: skip


def fixed_columns(mode: DeidentificationMode) -> list[Column]:
    dated: Kind = "year" if mode is DeidentificationMode.safe_harbor else "date"
    columns = [
        Column("participant_code", "Participant (code for this export)", role="participant",
               miabis="Donor ID"),
        Column("sex", "Sex", role="participant", miabis="Sex", choices=MIABIS_SEX),
        Column("specimen_code", "Specimen (code for this export)", role="specimen",
               miabis="Sample ID"),
        Column("parent_specimen_code", "Parent specimen", role="specimen"),
        Column("specimen_kind", "Primary, aliquot, derivative or pool", role="specimen"),
        Column("specimen_type", "SPREC specimen type", role="specimen", miabis="Material type",
               choices=MIABIS_MATERIAL),
        Column("container_type", "SPREC primary container", role="specimen"),
        Column("sprec_code", "SPREC code", role="specimen"),
        Column("collected", "Collected" + (" (year)" if dated == "year" else ""), kind=dated,
               role="specimen", miabis="Sample collection date"),
        Column("age_at_collection", "Age at collection (years; 90+ above 89)", role="specimen",
               miabis="Age at sampling"),
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
            description=description,
        )))  # fmt: skip
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


def _age(age: int | None, mode: DeidentificationMode) -> str | None:
    if age is None:
        return None
    if mode is DeidentificationMode.safe_harbor and age > OLDEST_SHOWN_AGE:
        return "90+"
    return str(age)


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
    order of `fixed_columns(mode)` and the phenotype columns."""
    safe = mode is DeidentificationMode.safe_harbor
    identified = mode is DeidentificationMode.identified
    codes = ExportCodes(key)
    names = [name for name, _ in phenotype_columns]  # the values are the variables'
    to_year = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "year"]
    listed = [at for at, (_, c) in enumerate(phenotype_columns) if c.kind == "string"]
    # rows come participant by participant: (id, code)
    participant: tuple[int | None, str | None] = (None, None)
    for batch in chunks(selected, BATCH):
        on_batch(batch)
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
                _year(s.collected_on) if safe else s.collected_on,
                _age(s.age_at_collection, mode),
                r.quantity,
                r.unit,
                r.freeze_thaw_count,
            )  # fmt: skip
            if identified:
                row += people.get(s.participant_id, IDENTITY_BLANK)
            cells = shown.get(id(s.phenotypes))
            if cells is None:
                cells = shown[id(s.phenotypes)] = _phenotype_cells(
                    s.phenotypes, names, to_year, listed
                )
            yield row + cells


def _phenotype_cells(
    values: dict[str, Any], names: list[str], to_year: list[int], listed: list[int]
) -> tuple[Any, ...]:
    """A specimen's phenotype columns (`names`): years for dates at `to_year`, a multi-choice
    value's codes joined by "|" at `listed`."""
    cells = list(map(values.get, names))
    for at in to_year:
        cells[at] = _year(cells[at])
    for at in listed:
        codes = cells[at]
        if isinstance(codes, list):
            cells[at] = "|".join(codes)
    return tuple(cells)


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
