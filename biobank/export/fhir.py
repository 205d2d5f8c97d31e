"""The export as a FHIR R4 `collection` Bundle, written entry by entry so memory stays flat.

Per participant (once, however its rows are spread): a Patient known only by its export code,
and a Consent with one nested provision per consent statement. Per row: a Specimen (SPREC type
and code, SNOMED type where one is known, parent link) and an Observation for each phenotype
value. Entries are named `urn:uuid:` UUIDs derived from the export codes, so the same rows give
the same bytes. The fixed columns read by name are listed in `biobank.export.columns`.

A parent that is not itself exported still gets a minimal Specimen at the end of the bundle, so
every parent reference resolves inside it; that needs the set of specimen codes written (tens of
bytes each), the one thing this writer keeps that grows with the rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import IO, Any

from biobank.errors import ValidationError
from biobank.export import columns as fixed
from biobank.export.columns import Column, Row, checked
from biobank.export.files import Batches, Progress, Written, write_atomically

SPREC_SYSTEM = "https://doi.org/10.1089/bio.2017.0109"
SNOMED_SYSTEM = "http://snomed.info/sct"
SPECIMEN_SYSTEM = "urn:biobank:specimen"
PARTICIPANT_SYSTEM = "urn:biobank:participant"
PHENOTYPE_SYSTEM = "urn:biobank:phenotype"
STATEMENT_SYSTEM = "urn:biobank:consent-statement"

SNOMED_TYPES = {"SER": "119364003", "PL1": "119361006", "PL2": "119361006", "CEL": "404798000"}
"""SPREC sample type → SNOMED CT specimen concept, where the crosswalk is known (MIABIS)."""

CONSENT_STATES = frozenset({"granted", "refused", "withdrawn", "not_asked"})

GENDERS = {
    "female": "female", "male": "male", "unknown": "unknown", "undifferentiated": "other",
    "other": "other",
}  # fmt: skip

Named = Mapping[str, Any]
"""A row read by column name, as the resources below are made."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:biobank:export")

_CONSENT_FRAME = {
    "scope": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}
        ]
    },
    "category": [
        {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "57016-8",
                    "display": "Privacy policy acknowledgment Document",
                }
            ]
        }
    ],
    "policyRule": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "OPTIN",
                "display": "opt-in",
            }
        ]
    },
}


def write_fhir_bundle(
    path: Path,
    columns: Iterable[Column],
    rows: Iterable[Row],
    consents: Mapping[str, Mapping[str, str]],
    progress: Progress | None = None,
) -> Written:
    """`consents` maps each export participant code to {statement code: state}, the state one of
    `CONSENT_STATES`; a participant missing from it is refused (its Consent cannot be left out).
    `rows` counts the spreadsheet rows, not the entries."""
    columns = checked(columns)
    names = [c.name for c in columns]
    for required in (fixed.PARTICIPANT_CODE, fixed.SPECIMEN_CODE):
        if required not in names:
            raise ValidationError(
                f"a FHIR export needs the column {required}", field="columns", value=required
            )
    phenotypes = [c for c in columns if c.role == "phenotype"]

    def write(file: IO[str]) -> int:
        bundle = _BundleFile(file)
        participants: set[str] = set()
        specimens: set[str] = set()
        parents: dict[str, str] = {}  # parent code → its participant, until the parent is seen
        batches = Batches(rows, progress, width=len(names))
        for batch in batches:
            for number, values in enumerate(batch, start=batches.done + 1):
                row = dict(zip(names, values, strict=True))  # read by name below
                participant = _required(row, fixed.PARTICIPANT_CODE, number)
                specimen = _required(row, fixed.SPECIMEN_CODE, number)
                if participant not in participants:
                    participants.add(participant)
                    bundle.add(*_patient(participant, row, number))
                    bundle.add(*_consent(participant, consents, number))
                if specimen in specimens:
                    raise ValidationError(
                        f"specimen {specimen} appears twice", field=fixed.SPECIMEN_CODE, row=number
                    )
                subject = _ref("Patient", participant)
                bundle.add(*_specimen(specimen, subject, row))
                specimens.add(specimen)
                parents.pop(specimen, None)
                parent = row.get(fixed.PARENT_SPECIMEN_CODE)
                if parent and parent not in specimens:
                    parents[parent] = participant
                context = _context(specimen, subject, row)
                for column in phenotypes:
                    value = row.get(column.name)
                    if value is not None and value != "":
                        bundle.add(*_observation(column, value, specimen, context))
        for parent, participant in parents.items():
            bundle.add(*_parent_only(parent, participant))
        bundle.close()
        return batches.done

    return write_atomically(path, write, text=True)


class _BundleFile:
    """The Bundle's JSON opened at once and its entries appended one per line."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._entries = 0
        file.write('{"resourceType":"Bundle","type":"collection"')

    def add(self, full_url: str, resource: dict[str, Any]) -> None:
        self._file.write(',"entry":[\n' if self._entries == 0 else ",\n")
        self._file.write(_json({"fullUrl": full_url, "resource": resource}))
        self._entries += 1

    def close(self) -> None:
        # FHIR JSON has no empty arrays: a bundle without entries has no `entry` at all.
        self._file.write("\n]}\n" if self._entries else "}\n")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json(value: Any) -> str:
    try:
        return _ENCODER.encode(value)
    except ValueError as error:  # NaN or infinity, which JSON cannot hold
        raise ValidationError(f"FHIR export: {error}", field="value") from None


def _url(kind: str, *codes: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join((kind, *codes)))}"


def _ref(kind: str, *codes: str) -> dict[str, str]:
    return {"reference": _url(kind, *codes)}


def _required(row: Named, name: str, number: int) -> str:
    value = row.get(name)
    if value is None or value == "":
        raise ValidationError(f"{name} is empty", field=name, row=number)
    return str(value)


def _date_time(value: object) -> str:
    """FHIR dateTime: a date in ISO form, or a year alone (de-identified)."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _patient(participant: str, row: Named, number: int) -> tuple[str, dict[str, Any]]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": PARTICIPANT_SYSTEM, "value": participant}],
    }
    sex = row.get(fixed.SEX)
    if sex:
        gender = GENDERS.get(str(sex).lower())
        if gender is None:
            raise ValidationError(
                f"sex {sex!r} is not one of {', '.join(GENDERS)}",
                field=fixed.SEX,
                value=sex,
                row=number,
            )
        patient["gender"] = gender
    birth_year = row.get(fixed.BIRTH_YEAR)
    if birth_year is not None and birth_year != "":
        patient["birthDate"] = str(birth_year)
    return _url("Patient", participant), patient


def _consent(
    participant: str, consents: Mapping[str, Mapping[str, str]], number: int
) -> tuple[str, dict[str, Any]]:
    statements = consents.get(participant)
    if statements is None:
        raise ValidationError(
            f"no consent given for participant {participant}",
            field="consents",
            value=participant,
            row=number,
        )
    provisions = []
    for statement, state in sorted(statements.items()):
        if state not in CONSENT_STATES:
            raise ValidationError(
                f"consent state {state!r} of {participant}/{statement} is not one of "
                f"{', '.join(sorted(CONSENT_STATES))}",
                field="consents",
                value=state,
            )
        provisions.append(
            {
                "type": "permit" if state == "granted" else "deny",
                "purpose": [{"system": STATEMENT_SYSTEM, "code": statement}],
            }
        )
    granted = "granted" in statements.values()
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active" if granted else "inactive",
        **_CONSENT_FRAME,
        "patient": _ref("Patient", participant),
    }
    if provisions:
        # R4: the root rule carries no type; each statement is a nested permit or deny.
        consent["provision"] = {"provision": provisions}
    return _url("Consent", participant), consent


def _specimen_type(row: Named) -> dict[str, Any] | None:
    sprec = row.get(fixed.SPREC_CODE)
    kind = row.get(fixed.SPECIMEN_TYPE) or (sprec.split("-", 1)[0] if sprec else None)
    if not kind:
        return None
    coding = [{"system": SPREC_SYSTEM, "code": kind}]
    if kind in SNOMED_TYPES:
        coding.append({"system": SNOMED_SYSTEM, "code": SNOMED_TYPES[kind]})
    if sprec:
        coding.append({"system": SPREC_SYSTEM, "code": sprec})
    return {"coding": coding, "text": kind}


def _specimen(specimen: str, subject: dict[str, str], row: Named) -> tuple[str, dict[str, Any]]:
    resource: dict[str, Any] = {
        "resourceType": "Specimen",
        "identifier": [{"system": SPECIMEN_SYSTEM, "value": specimen}],
    }
    kind = _specimen_type(row)
    if kind:
        resource["type"] = kind
    resource["subject"] = subject
    parent = row.get(fixed.PARENT_SPECIMEN_CODE)
    if parent:
        resource["parent"] = [_ref("Specimen", parent)]
    collected = row.get(fixed.COLLECTED)
    if collected is not None and collected != "":
        resource["collection"] = {"collectedDateTime": _date_time(collected)}
    quantity = row.get(fixed.QUANTITY)
    if quantity is not None:
        # What the tube holds now, which is what is handed over (collection.quantity would be
        # the amount originally drawn).
        amount: dict[str, Any] = {"value": quantity}
        if row.get(fixed.UNIT):
            amount["unit"] = row[fixed.UNIT]
        resource["container"] = [{"specimenQuantity": amount}]
    return _url("Specimen", specimen), resource


def _parent_only(parent: str, participant: str) -> tuple[str, dict[str, Any]]:
    resource = {
        "resourceType": "Specimen",
        "identifier": [{"system": SPECIMEN_SYSTEM, "value": parent}],
        "subject": _ref("Patient", participant),
        "note": [{"text": "Parent of exported specimens; not itself part of this export."}],
    }
    return _url("Specimen", parent), resource


def _context(specimen: str, subject: dict[str, str], row: Named) -> dict[str, Any]:
    """What every Observation of one row shares: subject, time of collection, specimen."""
    context: dict[str, Any] = {"subject": subject}
    collected = row.get(fixed.COLLECTED)
    if collected is not None and collected != "":
        context["effectiveDateTime"] = _date_time(collected)
    context["specimen"] = _ref("Specimen", specimen)
    return context


def _observation(
    column: Column, value: Any, specimen: str, context: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    coding = [{"system": PHENOTYPE_SYSTEM, "code": column.name, "display": column.label}]
    if column.code_system and column.code:
        coding.insert(0, {"system": column.code_system, "code": column.code})
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": coding, "text": column.label},
        **context,
        **_value(column, value),
    }
    return _url("Observation", specimen, column.name), resource


def _value(column: Column, value: Any) -> dict[str, Any]:
    """value[x] by kind: a number with a unit (or any decimal) is a Quantity, a choice code a
    CodeableConcept, a date or year a dateTime; other text (a multi-choice "a|b") a string."""
    if column.kind == "boolean":
        return {"valueBoolean": value}
    if column.kind in ("date", "year"):
        return {"valueDateTime": _date_time(value)}
    if column.kind == "integer" and not column.unit:
        return {"valueInteger": value}
    if column.kind in ("integer", "decimal"):
        quantity: dict[str, Any] = {"value": value}
        if column.unit:
            quantity["unit"] = column.unit
        return {"valueQuantity": quantity}
    label = column.choice_label(value)
    if label is not None:
        choice = {"system": f"{PHENOTYPE_SYSTEM}:{column.name}", "code": value, "display": label}
        return {"valueCodeableConcept": {"coding": [choice], "text": label}}
    return {"valueString": str(value)}
