"""An export as FHIR R4 resources, made as the rows stream by: what the Bundle (`export.fhir`)
and the Bulk Data files (`export.fhir_ndjson`) both write.

The rows give the specimens (their phenotype columns, each value as at a tube's collection, are
the tables'); what FHIR says of a participant comes from their record (`ParticipantRecord`,
read by the export service for the participants of each batch of rows, de-identified as the
rows are), where each value is once. Per participant, once: a Patient known only by its export code
(with the US Core race and ethnicity extensions where the values map), a Condition per coded
diagnosis date (onset: that date), an Observation per recorded value (a participant's own values
once, a visit's once per visit, each dated the day it was observed, never the day a specimen was
drawn), and a Consent: the document signed and its version, the day signed, and a permit or deny
per statement. Per row: a Specimen, typed in SNOMED CT where the MIABIS mapping has a code, its
SPREC code an extension.

Resource ids are UUIDs derived from the export codes, so the same rows give the same bytes. A
parent not itself exported still gets a minimal Specimen at the end, so every parent reference
resolves; that needs the codes of the specimens and participants written (tens of bytes each),
what this keeps that grows with the rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import orjson

from biobank.errors import ValidationError
from biobank.export import columns as fixed
from biobank.export.columns import Column, Row, checked
from biobank.export.fhir_terms import (
    CONDITION_CATEGORY_SYSTEM,
    SNOMED_SYSTEM,
    SPREC_SYSTEM,
    UCUM_SYSTEM,
    VERIFICATION_SYSTEM,
    icd10,
    observation_category,
    patient_extension,
    specimen_type,
    ucum,
)
from biobank.export.files import Batches, Progress

SPECIMEN_SYSTEM = "urn:biobank:specimen"
PARTICIPANT_SYSTEM = "urn:biobank:participant"
PHENOTYPE_SYSTEM = "urn:biobank:phenotype"
STATEMENT_SYSTEM = "urn:biobank:consent-statement"
DOCUMENT_SYSTEM = "urn:biobank:consent-document"
SPREC_EXTENSION = "urn:biobank:fhir:extension:sprec-code"

CONSENT_STATES = frozenset({"granted", "refused", "withdrawn", "not_asked"})

GENDERS = {
    "female": "female", "male": "male", "unknown": "unknown", "undifferentiated": "other",
    "other": "other",
}  # fmt: skip

Day = date | int
"""A date, or its year alone once dates are reduced to years (Safe Harbor)."""


@dataclass(frozen=True)
class Variable:
    """A dictionary variable as FHIR codes it: its export column (name, label, kind after
    de-identification, unit, code, choices), its own name, whose it is, its category."""

    name: str
    column: Column
    per_participant: bool
    category: str | None = None


class Observed(NamedTuple):
    """One recorded value. `visit` is the visit's code for this export (None: the
    participant's own value); `instance` tells apart a form filled in several times. A tuple:
    an export makes one per value."""

    variable: Variable
    value: Any
    observed: Day | None
    visit: str | None = None
    instance: int = 0


class StatementConsent(NamedTuple):
    statement: str
    state: str  # one of CONSENT_STATES
    since: Day | None = None  # the day of the act that set it


@dataclass(frozen=True)
class ConsentRecord:
    """A participant's consent as of the export: each statement's state and, once signed, the
    document in force (the latest signed), when it was signed, and the first signature."""

    statements: tuple[StatementConsent, ...]
    document: str | None = None
    version: str | None = None
    title: str | None = None
    signed: Day | None = None
    first_signed: Day | None = None


@dataclass(frozen=True)
class ParticipantRecord:
    values: tuple[Observed, ...]
    consent: ConsentRecord


Records = Callable[[Sequence[str]], Mapping[str, ParticipantRecord]]
"""The records of these participant export codes (those it has no record of left out)."""

Reference = Callable[[str, str], str]
"""How a resource (type, id) is referred to: `urn:uuid:…` inside a Bundle, `Type/id` in Bulk
Data files."""

Made = tuple[str, str, dict[str, Any]]
"""A resource made: its type, its id, the resource (with `id`)."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:biobank:export").bytes

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


def resource_id(kind: str, *codes: str) -> str:
    """The RFC 4122 name-based (version 5) UUID of the resource's codes, as `uuid.uuid5` makes
    it (tested) without building a `UUID`: an export makes one per resource and reference. The
    version is the 13th hex digit; the variant, the top bits of the 17th."""
    text = hashlib.sha1(_NAMESPACE + "/".join((kind, *codes)).encode()).hexdigest()
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class Resources:
    """The resources of `rows`, made batch by batch (`Batches`): iterate once. `done` counts
    the rows read so far."""

    def __init__(
        self,
        columns: Iterable[Column],
        rows: Iterable[Row],
        records: Records,
        reference: Reference,
        progress: Progress | None = None,
    ) -> None:
        columns = checked(columns)
        self._names = [c.name for c in columns]
        for required in (fixed.PARTICIPANT_CODE, fixed.SPECIMEN_CODE):
            if required not in self._names:
                raise ValidationError(
                    f"a FHIR export needs the column {required}", field="columns", value=required
                )
        self._batches = Batches(rows, progress, width=len(self._names))
        self._records = records
        self._reference = reference
        self._concepts: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
        """Each variable's Observation category and code, made once (by its name)."""

    @property
    def done(self) -> int:
        return self._batches.done

    def _ref(self, kind: str, *codes: str) -> dict[str, str]:
        return {"reference": self._reference(kind, resource_id(kind, *codes))}

    def __iter__(self) -> Iterator[Made]:
        participants: set[str] = set()
        specimens: set[str] = set()
        parents: dict[str, str] = {}  # parent code → its participant, until the parent is seen
        participant_at = self._names.index(fixed.PARTICIPANT_CODE)
        # the fixed columns read by name below, where they are: not the phenotype columns
        read = [(n, at) for at, n in enumerate(self._names) if n in _READ]
        subject: tuple[str | None, dict[str, str]] = (None, {})  # the last row's patient
        for batch in self._batches:
            new = list(dict.fromkeys(
                str(r[participant_at]) for r in batch if r[participant_at] not in participants
            ))  # fmt: skip
            records = self._records(new) if new else {}
            for number, values in enumerate(batch, start=self._batches.done + 1):
                row = {name: values[at] for name, at in read}
                participant = _required(row, fixed.PARTICIPANT_CODE, number)
                specimen = _required(row, fixed.SPECIMEN_CODE, number)
                if subject[0] != participant:  # rows come participant by participant
                    subject = (participant, self._ref("Patient", participant))
                if participant not in participants:
                    record = records.get(participant)
                    if record is None:
                        raise ValidationError(
                            f"no consent given for participant {participant}",
                            field="consents", value=participant, row=number,
                        )  # fmt: skip
                    participants.add(participant)
                    yield from self._participant(participant, subject[1], row, record, number)
                if specimen in specimens:
                    raise ValidationError(
                        f"specimen {specimen} appears twice", field=fixed.SPECIMEN_CODE, row=number
                    )
                yield self._specimen(specimen, subject[1], row)
                specimens.add(specimen)
                parents.pop(specimen, None)
                parent = row.get(fixed.PARENT_SPECIMEN_CODE)
                if parent and parent not in specimens:
                    parents[parent] = participant
        for parent, participant in parents.items():
            yield self._parent_only(parent, participant)

    def _participant(
        self,
        participant: str,
        subject: dict[str, str],
        row: Mapping[str, Any],
        record: ParticipantRecord,
        number: int,
    ) -> Iterator[Made]:
        extensions, diagnoses, observed = [], [], []
        for value in record.values:
            variable = value.variable
            extension = (
                patient_extension(variable.name, value.value) if variable.per_participant else None
            )
            if extension is not None:
                extensions.append(extension)
            elif _diagnosis(variable):
                diagnoses.append(value)
            else:
                observed.append(value)
        yield self._patient(participant, row, extensions, number)
        for value in diagnoses:
            yield self._condition(participant, subject, value)
        for value in observed:
            yield self._observation(participant, subject, value)
        yield self._consent(participant, subject, record.consent)

    def _patient(
        self, participant: str, row: Mapping[str, Any], extensions: list[dict[str, Any]],
        number: int,
    ) -> Made:  # fmt: skip
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": resource_id("Patient", participant),
        }
        if extensions:
            patient["extension"] = extensions
        patient["identifier"] = [{"system": PARTICIPANT_SYSTEM, "value": participant}]
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
        return "Patient", patient["id"], patient

    def _condition(self, participant: str, subject: dict[str, str], value: Observed) -> Made:
        """A coded diagnosis date: the diagnosis, its onset that date."""
        column = value.variable.column
        assert column.code is not None  # `_diagnosis`
        coding = [{"system": SNOMED_SYSTEM, "code": column.code}]
        mapped = icd10(column.code)
        if mapped is not None:
            coding.append(mapped)
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "id": resource_id("Condition", participant, column.name),
            "verificationStatus": {
                "coding": [{"system": VERIFICATION_SYSTEM, "code": "confirmed"}]
            },
            "category": [
                {"coding": [{"system": CONDITION_CATEGORY_SYSTEM, "code": "problem-list-item"}]}
            ],
            "code": {"coding": coding, "text": column.label},
            "subject": subject,
        }
        if value.value is not None:
            condition["onsetDateTime"] = _date_time(value.value)
        return "Condition", condition["id"], condition

    def _observation(self, participant: str, subject: dict[str, str], value: Observed) -> Made:
        variable = value.variable
        column = variable.column
        key = (participant, column.name, value.visit or "", str(value.instance))
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": resource_id("Observation", *key),
            "status": "final",
        }
        concepts = self._concepts.get(column.name)
        if concepts is None:
            concepts = self._concepts[column.name] = _concepts(variable)
        category, code = concepts
        if category is not None:
            observation["category"] = [category]
        observation["code"] = code
        observation["subject"] = subject
        if value.observed is not None:
            observation["effectiveDateTime"] = _date_time(value.observed)
        observation.update(_value(column, value.value))
        return "Observation", observation["id"], observation

    def _consent(self, participant: str, subject: dict[str, str], record: ConsentRecord) -> Made:
        provisions = []
        for statement in sorted(record.statements, key=lambda s: s.statement):
            if statement.state not in CONSENT_STATES:
                raise ValidationError(
                    f"consent state {statement.state!r} of {participant}/{statement.statement} "
                    f"is not one of {', '.join(sorted(CONSENT_STATES))}",
                    field="consents",
                    value=statement.state,
                )
            provision: dict[str, Any] = {
                "type": "permit" if statement.state == "granted" else "deny"
            }
            if statement.since is not None:
                provision["period"] = {"start": _date_time(statement.since)}
            provision["purpose"] = [{"system": STATEMENT_SYSTEM, "code": statement.statement}]
            provisions.append(provision)
        granted = any(s.state == "granted" for s in record.statements)
        consent: dict[str, Any] = {
            "resourceType": "Consent",
            "id": resource_id("Consent", participant),
            "status": "active" if granted else "inactive",
            **_CONSENT_FRAME,
            "patient": subject,
        }
        if record.signed is not None:
            consent["dateTime"] = _date_time(record.signed)
        if record.document is not None:
            consent["sourceReference"] = {
                "identifier": {
                    "system": DOCUMENT_SYSTEM,
                    "value": f"{record.document}|{record.version}",
                },
                "display": f"{record.title or record.document}, version {record.version}",
            }
        root: dict[str, Any] = {}
        if record.first_signed is not None:
            root["period"] = {"start": _date_time(record.first_signed)}
        if provisions:
            # R4: the root rule carries no type; each statement is a nested permit or deny.
            root["provision"] = provisions
        if root:
            consent["provision"] = root
        return "Consent", consent["id"], consent

    def _specimen(self, specimen: str, subject: dict[str, str], row: Mapping[str, Any]) -> Made:
        resource: dict[str, Any] = {
            "resourceType": "Specimen",
            "id": resource_id("Specimen", specimen),
        }
        sprec = row.get(fixed.SPREC_CODE)
        kind = row.get(fixed.SPECIMEN_TYPE) or (sprec.split("-", 1)[0] if sprec else None)
        if sprec or kind:
            resource["extension"] = [
                {"url": SPREC_EXTENSION, "valueCoding": {"system": SPREC_SYSTEM,
                                                         "code": sprec or kind}}
            ]  # fmt: skip
        resource["identifier"] = [{"system": SPECIMEN_SYSTEM, "value": specimen}]
        if kind:
            resource["type"] = specimen_type(kind)
        resource["subject"] = subject
        parent = row.get(fixed.PARENT_SPECIMEN_CODE)
        if parent:
            resource["parent"] = [self._ref("Specimen", parent)]
        collected = row.get(fixed.COLLECTED)
        if collected is not None and collected != "":
            resource["collection"] = {"collectedDateTime": _date_time(collected)}
        quantity = row.get(fixed.QUANTITY)
        if quantity is not None:
            # What the tube holds now, which is what is handed over (collection.quantity would
            # be the amount originally drawn).
            resource["container"] = [{"specimenQuantity": _quantity(quantity, row.get(fixed.UNIT))}]
        return "Specimen", resource["id"], resource

    def _parent_only(self, parent: str, participant: str) -> Made:
        resource: dict[str, Any] = {
            "resourceType": "Specimen",
            "id": resource_id("Specimen", parent),
            "identifier": [{"system": SPECIMEN_SYSTEM, "value": parent}],
            "subject": self._ref("Patient", participant),
            "note": [{"text": "Parent of exported specimens; not itself part of this export."}],
        }
        return "Specimen", resource["id"], resource


_READ = frozenset({
    fixed.PARTICIPANT_CODE, fixed.SPECIMEN_CODE, fixed.PARENT_SPECIMEN_CODE, fixed.SPECIMEN_TYPE,
    fixed.SPREC_CODE, fixed.COLLECTED, fixed.QUANTITY, fixed.UNIT, fixed.SEX, fixed.BIRTH_YEAR,
})  # fmt: skip


def _diagnosis(variable: Variable) -> bool:
    """A participant's date coded in SNOMED CT dates a diagnosis (the lupus core's `dx_date`:
    55464009, SLE): a Condition, not an Observation."""
    column = variable.column
    return (
        variable.per_participant
        and column.kind in ("date", "year")
        and column.code_system == SNOMED_SYSTEM
        and bool(column.code)
    )


def _concepts(variable: Variable) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A variable's Observation category (None: it has none) and code: its own code, after the
    standard one where the dictionary gives it."""
    column = variable.column
    coding = [{"system": PHENOTYPE_SYSTEM, "code": column.name, "display": column.label}]
    if column.code_system and column.code:
        coding.insert(0, {"system": column.code_system, "code": column.code})
    return observation_category(variable.category), {"coding": coding, "text": column.label}


def _required(row: Mapping[str, Any], name: str, number: int) -> str:
    value = row.get(name)
    if value is None or value == "":
        raise ValidationError(f"{name} is empty", field=name, row=number)
    return str(value)


def _date_time(value: object) -> str:
    """FHIR dateTime: a date in ISO form, or a year alone (de-identified)."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _quantity(value: Any, unit: str | None) -> dict[str, Any]:
    """A Quantity: UCUM-coded where the unit maps (no unit: UCUM's unity, "1"); a unit the table
    does not know stays as text alone, never a guessed code."""
    quantity: dict[str, Any] = {"value": value}
    if not unit:
        return quantity | {"system": UCUM_SYSTEM, "code": "1"}
    quantity["unit"] = unit
    code = ucum(unit)
    if code is not None:
        quantity |= {"system": UCUM_SYSTEM, "code": code}
    return quantity


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
        return {"valueQuantity": _quantity(value, column.unit)}
    label = column.choice_label(value)
    if label is not None:
        choice = {"system": f"{PHENOTYPE_SYSTEM}:{column.name}", "code": value, "display": label}
        return {"valueCodeableConcept": {"coding": [choice], "text": label}}
    return {"valueString": str(value)}


_CHECKER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
)  # resources are trees made here: no cycle to look for


def json_bytes(value: Any) -> bytes:
    """One resource (or entry) as compact JSON in UTF-8, by orjson; NaN or infinity, which JSON
    cannot hold, is refused. orjson writes those as null, so a text with a null in it (rare: the
    resources made here leave out what is empty) is encoded again by the standard encoder,
    which refuses them."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise ValidationError(f"FHIR export: {error}", field="value") from None
    if b"null" in text:
        try:
            _CHECKER.encode(value)
        except ValueError as error:
            raise ValidationError(f"FHIR export: {error}", field="value") from None
    return text


def json_text(value: Any) -> str:
    """`json_bytes` as text."""
    return json_bytes(value).decode()
