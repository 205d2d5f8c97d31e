"""Importing a REDCap project: its data dictionary and a "raw" longitudinal records export (one
row per record per event), mapped by a small TOML file (`biobank/reference/redcap_mapping.toml`
unless another is given) onto participants, visits, phenotype values, consent and the PHI
identity table.

Dictionary fields become phenotype variables (a field named like a variable already in the
dictionary, now or before an admin renamed it, is matched to it, its choice codes mapped by
label; the values of a retired variable are left out with a notice, since the project usually
keeps the field an admin retired here); events become visits; the
demographic fields the mapping names become the participant; consent fields become signed
consent documents; fields marked `Identifier? = y` go only to the identity table.

As with the legacy inventory import, checking reads both files whole and reports every fault
(file, row, line, field, value, reason) before anything is written, and works out what the
import would add, change and leave alone, looking the database up a thousand rows at a time.
Writing then goes through the services each record belongs to, in the caller's one
transaction, skipping what is already there: importing the same files again changes nothing,
and a changed value is changed with its before and after in the audit trail.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from importlib.resources import files
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import Field as ModelField
from sqlmodel import Session, select

from biobank import redcap
from biobank.db import flush, insert_many, prepare_bulk_writing
from biobank.errors import ValidationError
from biobank.inputs import read_toml
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentDocumentStatement,
    ConsentStatement,
    Participant,
    ParticipantConsent,
    ParticipantIdentity,
    PhenotypeScope,
    PhenotypeType,
    PhenotypeValue,
    PhenotypeVariable,
    Sex,
    Study,
    Visit,
    utcnow,
)
from biobank.permissions import Actor, Permission, require
from biobank.phenotypes import Spec, Stored, parse_value
from biobank.services import audit, consent, participants, phenotypes
from biobank.services.legacy_import import BATCH_ROWS, MAX_LISTED_FAULTS, refuse_a_faulty_plan
from biobank.services.legacy_import import Fault as SheetFault
from biobank.services.studies import get_study
from biobank.tabular import chunks, new_spool, open_source, spool_batch, unspool
from biobank.visits import by_canonical_label, canonical_visit_label

SOURCE = "redcap"
EVENT_COLUMN = "redcap_event_name"
REPEAT_COLUMNS = ("redcap_repeat_instrument", "redcap_repeat_instance")
IGNORED_COLUMNS = frozenset({"redcap_data_access_group", "redcap_survey_identifier"})
IDENTITY_LIMITS = {"mrn": 64, "family_name": 200, "given_name": 200, "date_of_birth": None}
HIDDEN = "(hidden)"  # what a fault shows of an identifier's value
DEFAULT_MAPPING = "reference/redcap_mapping.toml"
# A REDCap type a variable of another type still takes: every integer is a decimal.
WIDER = {(PhenotypeType.integer, PhenotypeType.decimal)}


_NewValue = tuple[str, str | None, str, Stored, bool]  # participant, visit, variable, value, new?


# --- The mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentMapping:
    document: str  # its code; each version is a document
    title: str
    version: str  # the field of the version signed
    signed_on: str  # the field of the date signed
    statements: dict[str, str]  # field → statement code, in the order the form asks them


@dataclass(frozen=True)
class RedcapMapping:
    """Which REDCap fields are what (build it with `redcap_mapping`, which checks it)."""

    record_id: str
    visit_date: str
    sex: str | None = None
    birth_year: str | None = None
    participant_forms: frozenset[str] = frozenset()
    visit_labels: dict[str, str] = field(default_factory=dict)  # event → label
    identity: dict[str, str] = field(default_factory=dict)  # identity column → field
    consent: ConsentMapping | None = None
    file: str = "redcap_mapping.toml"

    def roles(self) -> dict[str, str]:
        """Field → what the mapping makes of it (none of these is a phenotype variable)."""
        roles = {self.record_id: "record ID", self.visit_date: "visit date"}
        roles |= {self.sex: "sex", self.birth_year: "birth year"}
        roles |= {name: f"identity {column}" for column, name in self.identity.items()}
        if self.consent:
            roles |= {
                self.consent.version: "consent version",
                self.consent.signed_on: "consent date",
            }
            roles |= {name: f"consent {code}" for name, code in self.consent.statements.items()}
        roles.pop(None, None)
        return roles


def redcap_mapping(path: Path | None = None) -> RedcapMapping:
    """The shipped mapping; a file given replaces the keys and tables it sets."""
    text = files("biobank").joinpath(DEFAULT_MAPPING).read_text("utf-8")
    settings = tomllib.loads(text) | (read_toml(path) if path is not None else {})
    where = path.name if path is not None else "redcap_mapping.toml"

    def fail(key: str, reason: str, value: object = None) -> ValidationError:
        return ValidationError(f"{where}: {key} {reason}", field="mapping", value=value or key)

    known = {f for f in RedcapMapping.__dataclass_fields__ if f != "file"}
    for key in settings.keys() - known:
        raise fail(key, f"is not a setting (settings: {', '.join(sorted(known))})")

    def name(key: str, value: object, *, required: bool = True) -> str | None:
        if value in (None, "") and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "must name a REDCap field", value)
        return value.strip().lower()

    def table(key: str, value: object) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise fail(key, "must be a table of names", value)
        return {str(k).strip(): v.strip() for k, v in value.items()}

    forms = settings.get("participant_forms", [])
    if not isinstance(forms, list) or not all(isinstance(f, str) for f in forms):
        raise fail("participant_forms", "must be a list of form names", forms)
    identity = {
        c: name(f"identity.{c}", f)
        for c, f in table("identity", settings.get("identity", {})).items()
    }
    for column in identity.keys() - IDENTITY_LIMITS.keys():
        raise fail(
            f"identity.{column}", f"is not an identity column ({', '.join(IDENTITY_LIMITS)})"
        )
    mapping = RedcapMapping(
        record_id=name("record_id", settings.get("record_id")),
        visit_date=name("visit_date", settings.get("visit_date")),
        sex=name("sex", settings.get("sex"), required=False),
        birth_year=name("birth_year", settings.get("birth_year"), required=False),
        participant_forms=frozenset(f.strip().lower() for f in forms),
        visit_labels=table("visit_labels", settings.get("visit_labels", {})),
        identity=identity,
        consent=_consent_mapping(settings.get("consent", {}), fail, name),
        file=where,
    )
    fields = [
        f for f in [mapping.record_id, mapping.visit_date, mapping.sex, mapping.birth_year] if f
    ]
    fields += list(identity.values())
    if mapping.consent:
        fields += [mapping.consent.version, mapping.consent.signed_on, *mapping.consent.statements]
    twice = sorted({f for f in fields if fields.count(f) > 1})
    if twice:
        raise fail("", f"names the field {twice[0]} for two things", twice[0])
    return mapping


def _consent_mapping(given: object, fail, name) -> ConsentMapping | None:
    if not isinstance(given, dict):
        raise fail("consent", "must be a table", given)
    if not given:
        return None  # `[consent]` left empty: no consent in this project
    unknown = given.keys() - {"document", "title", "version", "signed_on", "statements"}
    for key in unknown:
        raise fail(
            f"consent.{key}", "is not a setting (document, title, version, signed_on, statements)"
        )
    statements = given.get("statements")
    if not isinstance(statements, dict) or not statements:
        raise fail("consent.statements", "must map yes/no fields to consent statements", statements)
    document = given.get("document")
    if not isinstance(document, str) or not document.strip():
        raise fail("consent.document", "must be the consent document's code", document)
    return ConsentMapping(
        document=document.strip().upper(),
        title=str(given.get("title") or document).strip(),
        version=name("consent.version", given.get("version")),
        signed_on=name("consent.signed_on", given.get("signed_on")),
        statements={
            name(f"consent.statements.{f}", f): str(code).strip().upper()
            for f, code in statements.items()
        },
    )


# --- The report ---------------------------------------------------------------------------


class Fault(SheetFault):
    """A fault of the dictionary, the records or the mapping (`file`); `column` names the
    REDCap field (or the dictionary's column); `row` counts the file's data rows from 1."""

    file: str


class Counts(BaseModel):
    added: int = 0
    changed: int = 0
    unchanged: int = 0

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class RedcapReport(BaseModel):
    dictionary: str
    records: str
    study: str
    encoding: str
    delimiter: str
    fields: int = 0
    rows: int = 0
    faulty_rows: int = 0
    fault_count: int = 0
    faults: list[Fault] = []  # the first MAX_LISTED_FAULTS
    notices: list[str] = []
    participants: Counts = ModelField(default_factory=Counts)
    identities: Counts = ModelField(default_factory=Counts)
    visits: Counts = ModelField(default_factory=Counts)
    variables: Counts = ModelField(default_factory=Counts)  # added, or matched (unchanged)
    values: Counts = ModelField(default_factory=Counts)
    consents: Counts = ModelField(default_factory=Counts)
    documents: list[str] = []  # consent document versions created, "CODE version"


# --- What checking found ------------------------------------------------------------------


@dataclass
class _Target:
    """A field that is a phenotype variable: found (`variable`), or made from `definition`;
    `codes` turns REDCap's choice codes into the variable's."""

    field: redcap.Field
    definition: phenotypes.VariableRead
    variable: PhenotypeVariable | None
    codes: dict[str, str]

    @property
    def spec(self) -> Spec:
        return Spec.of(self.variable or self.definition)


@dataclass(frozen=True)
class _Fact:
    """One thing the file says of a participant, and where it first says it."""

    row: int
    line: int
    column: str
    raw: str
    value: Any


@dataclass
class _Signature:
    row: int
    line: int
    version: str
    signed_on: date
    answers: dict[str, bool]  # statement → answer
    columns: dict[str, str]  # statement → field
    stored: dict[str, bool] | None = None  # the same signature, already recorded


@dataclass
class _Person:
    row: int  # its first row
    id: int | None = None  # None: to be created
    study_id: int | None = None
    sex: Sex | None = None  # as stored
    birth_year: int | None = None
    facts: dict[str, _Fact] = field(default_factory=dict)  # "sex", "mrn", "other:f", "value:v"
    signatures: dict[tuple[str, date], _Signature] = field(default_factory=dict)
    identity: ParticipantIdentity | None = None
    outcome: str = "unchanged"
    new_values: list[tuple[str, bool]] = field(default_factory=list)  # (variable, added)


@dataclass
class _PlannedVisit:
    row: int
    line: int
    visit_date: date | None  # as the file gives it
    id: int | None = None
    stored_date: date | None = None


@dataclass
class _Row:
    row: int
    line: int
    code: str | None = None
    event: str = ""
    label: str | None = None
    visit_date: date | None = None
    facts: dict[str, _Fact] = field(default_factory=dict)
    values: dict[str, tuple[Stored, str]] = field(default_factory=dict)  # visit-scope
    signature: _Signature | None = None
    faults: list[tuple[str | None, str | None, str]] = field(default_factory=list)


@dataclass
class RedcapPlan:
    """What checking found: the report, and what writing needs."""

    report: RedcapReport
    study: Study
    mapping: RedcapMapping
    targets: dict[str, _Target]
    people: dict[str, _Person]
    visits: dict[tuple[str, str], _PlannedVisit]
    documents: dict[str, tuple[date, list[str]]]  # new version → effective date, statements
    spool: IO[bytes]  # batches of (rows, participants, visits, [_NewValue]), pickled


def check_redcap(
    session: Session,
    *,
    actor: Actor,
    dictionary: Path,
    records: Path,
    study: str | None = None,
    mapping: RedcapMapping | None = None,
) -> RedcapPlan:
    """Read and check both files, against each other and the database; write nothing.

    The plan's report lists every fault and what the import would do; `write_redcap`
    writes a plan that has no fault."""
    require(actor, Permission.import_data)
    return _Checker(
        session, dictionary, records, _study(session, study), mapping or redcap_mapping()
    ).run()


def _study(session: Session, code: str | None) -> Study:
    """The study named, else the only one there is."""
    if code:
        return get_study(session, code)
    found = session.exec(select(Study).order_by(Study.code).limit(2)).all()
    if len(found) == 1:
        return found[0]
    reason = "there is no study yet" if not found else "there are several studies"
    raise ValidationError(f"name the study to import into with --study ({reason})", field="study")


class _Checker:
    def __init__(
        self,
        session: Session,
        dictionary: Path,
        records: Path,
        study: Study,
        mapping: RedcapMapping,
    ):
        self.session = session
        self.study = study
        self.mapping = mapping
        notices: list[str] = []
        self.dictionary_source = open_source(dictionary, notices, "data dictionary")
        self.source = open_source(records, notices, "records export")
        self.report = RedcapReport(
            dictionary=dictionary.name,
            records=records.name,
            study=study.code,
            encoding=self.source.encoding,
            delimiter=self.source.delimiter,
            notices=notices,
        )
        self.fields: dict[str, redcap.Field] = {}
        self.known: dict[str, PhenotypeVariable] = {}  # by name and former name, retired too
        self.targets: dict[str, _Target] = {}
        self.others: list[redcap.Field] = []  # identifiers for the identity table's `other`
        self.phi: set[str] = set()  # fields whose values faults do not show
        self.sexes: dict[str, Sex] = {}  # REDCap code → sex
        self.sex_field: redcap.Field | None = None
        self.birth_field: redcap.Field | None = None
        self.skipped: set[str] = set()  # columns of fields without values or with faults
        self.stored_documents: dict[str, tuple[date, list[str]]] = {}
        self.statements: dict[str, str] = {}  # consent statement → its (yes/no) field
        self.stored_visits: dict[tuple[str, str], tuple[int, date]] = {}
        self.visit_clashes: dict[tuple[str, str], str] = {}  # stored visits that are one
        self.found: dict[str, list] = {}
        self.consent = mapping.consent
        self.columns: dict[str, int] = {}
        self.people: dict[str, _Person] = {}
        self.visits: dict[tuple[str, str], _PlannedVisit] = {}
        self.stored_values: dict[tuple[int, int], Stored] = {}  # (visit, variable) of a batch
        self.documents: dict[str, tuple[date, list[str]]] = {}
        self.faulty: set[int] = set()
        self.spool = new_spool()

    def run(self) -> RedcapPlan:
        if not (self.read_dictionary() and self.read_records()):
            self.report.notices.append("the records were not checked: fix the faults above first")
        self.summarise()
        return RedcapPlan(
            report=self.report,
            study=self.study,
            mapping=self.mapping,
            targets=self.targets,
            people=self.people,
            visits=self.visits,
            documents=self.documents,
            spool=self.spool,
        )

    def fault(
        self, file: str, row: int | None, line: int | None, column: str | None, value, reason: str
    ):
        self.report.fault_count += 1
        if row is not None:
            self.faulty.add(row)
        if column in self.phi and value:
            value, reason = HIDDEN, _hidden(reason, value)
        if len(self.report.faults) < MAX_LISTED_FAULTS:
            self.report.faults.append(
                Fault(file=file, row=row, line=line, column=column, value=value, reason=reason)
            )

    # --- The dictionary and the mapping ---

    def read_dictionary(self) -> bool:
        """Each field's role; False when the records cannot be read without a fix."""
        found = redcap.read_dictionary(self.dictionary_source.records())
        name = self.report.dictionary
        for p in found.problems:
            self.fault(name, None, p.line, p.field, p.value, p.reason)
        self.fields = found.fields
        self.skipped = set(found.skipped) | set(found.faulty)
        self.report.fields = len(found.fields)
        if found.skipped:
            self.report.notices.append(
                f"fields without values (descriptive, file): {', '.join(found.skipped)}"
            )
        mapping, roles = self.mapping, self.mapping.roles()
        for form in sorted(mapping.participant_forms - found.forms):
            self.report.notices.append(
                f"the mapping's participant form {form!r} is not in the dictionary"
            )
        usable = self.role_field(mapping.record_id, "record_id", required=True) is not None
        usable &= (
            self.role_field(mapping.visit_date, "visit_date", PhenotypeType.date, required=True)
            is not None
        )
        sex = self.sex_field = self.role_field(mapping.sex, "sex", PhenotypeType.choice)
        for code, label in sex.choices if sex else ():
            match = next((s for s in Sex if s.value == label.casefold()), None)
            if match is None:
                allowed = ", ".join(s.value for s in Sex)
                self.fault(
                    name,
                    None,
                    sex.line,
                    sex.name,
                    label,
                    f"{sex.name}: the choice {code}, {label} is not a sex ({allowed})",
                )
            else:
                self.sexes[code] = match
        self.birth_field = self.role_field(mapping.birth_year, "birth_year", PhenotypeType.integer)
        for column, field_name in mapping.identity.items():
            wanted = PhenotypeType.date if column == "date_of_birth" else None
            if self.role_field(field_name, f"identity.{column}", wanted):
                self.phi.add(field_name)
        self.read_consent_fields()
        self.known = phenotypes.variables_by_name(self.session, include_retired=True)
        for f in found.fields.values():
            if f.name in roles:
                if f.identifier and f.name not in self.phi:
                    self.report.notices.append(
                        f"{f.name} is marked as an identifier; the mapping takes it as the "
                        f"{roles[f.name]}"
                    )
            elif f.identifier:
                self.others.append(f)
                self.phi.add(f.name)
            else:
                self.target(f)
        self.report.variables.added = sum(t.variable is None for t in self.targets.values())
        self.report.variables.unchanged = len(self.targets) - self.report.variables.added
        return usable

    def role_field(
        self,
        name: str | None,
        key: str,
        wanted: PhenotypeType | None = None,
        *,
        required: bool = False,
    ) -> redcap.Field | None:
        """The dictionary's field the mapping names for `key`, if it is there and fits."""
        if name is None:
            return None
        found = self.fields.get(name)
        if found is None:
            if required:
                self.fault(
                    self.mapping.file,
                    None,
                    None,
                    key,
                    name,
                    f"no field {name!r} in the data dictionary",
                )
            else:
                self.report.notices.append(
                    f"no field {name!r} ({key} in the mapping) in the dictionary; not imported"
                )
            return None
        fits = wanted is None or found.value_type is wanted
        if key == "birth_year":
            fits = found.value_type in (PhenotypeType.integer, PhenotypeType.date)
        if not fits:
            self.fault(
                self.report.dictionary,
                None,
                found.line,
                name,
                found.field_type,
                f"{name} ({key} in the mapping) must be of type {wanted.value}, "
                f"not {found.value_type.value}",
            )
            return None
        return found

    def read_consent_fields(self) -> None:
        given = self.consent
        if given is None:
            return
        present = [
            f for f in (given.version, given.signed_on, *given.statements) if f in self.fields
        ]
        if not present:
            self.report.notices.append(
                "the dictionary has none of the mapping's consent fields; consent not imported"
            )
            self.consent = None
            return
        self.role_field(given.version, "consent.version", required=True)
        self.role_field(given.signed_on, "consent.signed_on", PhenotypeType.date, required=True)
        self.statements = {
            code: name
            for name, code in given.statements.items()
            if self.role_field(name, f"consent.statements.{name}", PhenotypeType.boolean)
        }
        known = set(self.session.exec(select(ConsentStatement.code)).all())
        for name, code in given.statements.items():
            if code not in known:
                reason = f"no consent statement {code} (known: {', '.join(sorted(known))})"
                self.fault(
                    self.mapping.file, None, None, f"consent.statements.{name}", code, reason
                )
        self.stored_documents = self.load_documents(given.document)

    def load_documents(self, code: str) -> dict[str, tuple[date, list[str]]]:
        documents: dict[str, tuple[date, list[str]]] = {}
        rows = self.session.execute(
            sa.select(ConsentDocument.version, ConsentDocument.effective_on, ConsentStatement.code)
            .join(
                ConsentDocumentStatement, ConsentDocumentStatement.document_id == ConsentDocument.id
            )
            .join(ConsentStatement, ConsentStatement.id == ConsentDocumentStatement.statement_id)
            .where(ConsentDocument.code == code)
            .order_by(ConsentDocument.id, ConsentDocumentStatement.position)
        )
        for version, effective_on, statement in rows:
            documents.setdefault(version, (effective_on, []))[1].append(statement)
        return documents

    def target(self, f: redcap.Field) -> None:
        """The variable a field's values go to: matched by name (or a former name), else made
        from the field; none for a retired one."""
        variable = self.known.get(f.name)
        name = self.report.dictionary
        if variable is not None:
            if variable.retired_at is not None:
                self.report.notices.append(
                    f"{f.name}: the variable {variable.name} is retired; its values are not "
                    "imported"
                )
                return
            twin = next((t.field.name for t in self.targets.values() if t.variable is variable), "")
            if twin:
                reason = f"{f.name} and {twin} are both the variable {variable.name} (renamed)"
                self.fault(name, None, f.line, f.name, f.name, reason)
                return
            if variable.name != f.name:
                self.report.notices.append(f"{f.name} is the variable {variable.name} (renamed)")
        if variable is None:
            scope = (
                PhenotypeScope.participant
                if f.form in self.mapping.participant_forms
                else PhenotypeScope.visit
            )
            definition = phenotypes.VariableRead(
                name=f.name,
                label=f.label,
                value_type=f.value_type,
                scope=scope,
                min_value=f.min_value,
                max_value=f.max_value,
                choices=[{"code": c, "label": label} for c, label in f.choices] or None,
                category=f.form[:64],
                description=f.note,
            )
            try:
                phenotypes.check_definition(definition)
            except ValidationError as error:
                self.fault(name, None, f.line, f.name, error.value, error.message)
                return
            self.targets[f.name] = _Target(f, definition, None, {c: c for c, _ in f.choices})
            return
        have = PhenotypeType(variable.value_type)
        if have is not f.value_type and (f.value_type, have) not in WIDER:
            reason = (
                f"the variable {f.name} is of type {have.value} here; the dictionary makes "
                f"it {f.value_type.value}"
            )
            self.fault(name, None, f.line, f.name, f.field_type, reason)
            return
        codes: dict[str, str] = {}
        stored = [(c["code"], c["label"]) for c in variable.choices or ()]
        for code, label in f.choices:
            wanted = label.casefold()
            match = next((c for c, lab in stored if lab.casefold() == wanted), None) or next(
                (c for c, _ in stored if c.casefold() == wanted), None
            )
            if match is None:
                allowed = ", ".join(f"{c} ({lab})" for c, lab in stored)
                reason = (
                    f"{f.name}: the choice {code}, {label} is none of the variable's ({allowed})"
                )
                self.fault(name, None, f.line, f.name, f"{code}, {label}", reason)
            codes[code] = match or code
        self.targets[f.name] = _Target(f, phenotypes.variable_read(variable), variable, codes)

    # --- The records ---

    def read_records(self) -> bool:
        records = self.source.records()
        header = next(records, None)
        if header is None:
            self.fault(self.report.records, None, None, None, None, "the file is empty")
            return False
        if not self.read_header(*header):
            return False
        for batch in chunks(enumerate(records, start=1), BATCH_ROWS):
            self.check_batch(batch, width=len(header[1]))
        return True

    def read_header(self, line: int, cells: list[str]) -> bool:
        """Each column's place (a column unknown or named twice is a fault, and the rows are
        still checked); False when a column the rows need is missing."""
        file = self.report.records
        known = {EVENT_COLUMN, *REPEAT_COLUMNS, *IGNORED_COLUMNS, *self.skipped}
        known |= {column for f in self.fields.values() for column in f.columns}
        for form in {f.form for f in self.fields.values()}:
            known |= {f"{form}_complete", f"{form}_timestamp"}
        for index, cell in enumerate(cells):
            column = cell.strip().lower()
            if not column:
                continue
            if column in self.columns:
                self.fault(file, None, line, column, cell, "two columns have this name")
            elif column not in known:
                self.fault(file, None, line, column, cell, "not a field of the data dictionary")
            self.columns.setdefault(column, index)
        missing = [
            c for c in (self.mapping.record_id, EVENT_COLUMN, self.mapping.visit_date)
            if c not in self.columns
        ]  # fmt: skip
        for column in missing:
            self.fault(file, None, line, column, None, f"no column {column!r}")
        return not missing

    def check_batch(self, batch: list, *, width: int) -> None:
        rows = [self.read_row(row, line, cells, width) for row, (line, cells) in batch]
        self.look_up({r.code for r in rows if r.code})
        self.stored_values = {}
        self.load_values(
            [
                self.stored_visits[k][0]
                for r in rows
                if (k := (r.code, r.label)) in self.stored_visits
            ]
        )
        written: list[_NewValue] = []
        for r in rows:
            if r.code and r.label:
                self.register(r, written)
            for column, value, reason in r.faults:
                self.fault(self.report.records, r.row, r.line, column, value, reason)
        self.report.rows = batch[-1][0]
        if not self.report.fault_count:  # once a row is faulty, nothing will be written
            visits = [(r.code, r.label) for r in rows]  # no fault: each row is a new visit
            people = [r.code for r in rows if self.people[r.code].row == r.row]  # first rows
            spool_batch(self.spool, (len(batch), people, visits, written))

    def read_row(self, row: int, line: int, cells: list[str], width: int) -> _Row:
        """Every cell of one row checked against its field; faults collected, none raised."""
        r = _Row(row, line)

        def cell(column: str) -> str:
            index = self.columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        def read(f: redcap.Field) -> Any:
            raw = cell(f.name)
            if not raw:
                return None
            try:
                return redcap.read_cell(f, raw)
            except ValidationError as error:
                reason = error.message
                if f.name in self.phi:  # it may quote the cell as read (1,5 → 1.5)
                    reason = _hidden(reason, error.value)
                r.faults.append((f.name, raw, reason))
                return None

        def fact(key: str, f: redcap.Field, value: Any) -> None:
            if value is not None:
                r.facts[key] = _Fact(row, line, f.name, cell(f.name), value)

        if any(c.strip() for c in cells[width:]):
            reason = f"{len(cells)} values for {width} columns (quote values holding "
            r.faults.append((None, None, reason + f"the delimiter {self.source.delimiter!r})"))
        for column in REPEAT_COLUMNS:
            if cell(column):
                r.faults.append(
                    (column, cell(column), "repeating instruments and events are not imported")
                )
        r.code = self.read_code(cell(self.mapping.record_id), r)
        r.event = cell(EVENT_COLUMN)
        r.label = self.read_event(r.event, r)
        r.visit_date = read(self.fields[self.mapping.visit_date])
        if self.sex_field is not None:
            code = read(self.sex_field)
            fact("sex", self.sex_field, self.sexes.get(code) if code is not None else None)
        if self.birth_field is not None:
            year = read(self.birth_field)
            fact("birth_year", self.birth_field, year.year if isinstance(year, date) else year)
        for column, name in self.mapping.identity.items():
            if name in self.phi:
                value = read(self.fields[name])
                fact(column, self.fields[name], self.identity_value(column, value, cell(name), r))
        for f in self.others:
            if read(f) is not None:
                fact(f"other:{f.name}", f, cell(f.name))
        for target in self.targets.values():
            self.read_value(target, cell, r)
        if self.consent is not None:
            r.signature = self.read_signature(cell, read, r)
        return r

    def read_code(self, raw: str, r: _Row) -> str | None:
        name = self.mapping.record_id
        if not raw:
            r.faults.append((name, raw, "a record ID is required"))
            return None
        code = raw.upper()
        if not participants.PARTICIPANT_CODE.match(code):
            r.faults.append((name, raw, "a participant code is 3-32 characters: A-Z, 0-9 and '-'"))
            return None
        return code

    def read_event(self, raw: str, r: _Row) -> str | None:
        if not raw:
            r.faults.append((EVENT_COLUMN, raw, "an event name is required"))
            return None
        try:
            name = self.mapping.visit_labels.get(raw) or redcap.event_name(raw)
        except ValidationError as error:
            reason = error.message + " (or an event of the mapping's [visit_labels])"
            r.faults.append((EVENT_COLUMN, raw, reason))
            return None
        label = canonical_visit_label(name)
        if len(label) > 64:
            r.faults.append((EVENT_COLUMN, raw, "a visit label is 1-64 characters"))
            return None
        return label

    def identity_value(self, column: str, value: Any, raw: str, r: _Row) -> Any:
        """A date of birth as a date; the other columns as written (an MRN keeps its zeros)."""
        limit = IDENTITY_LIMITS[column]
        if value is None or limit is None:
            return value
        if len(raw) > limit:
            name = self.mapping.identity[column]
            r.faults.append((name, raw, f"{name}: longer than {limit} characters"))
            return None
        return raw

    def read_value(self, target: _Target, cell, r: _Row) -> None:
        f = target.field
        try:
            if f.value_type is PhenotypeType.multi_choice:
                raw = ",".join(cell(c) for c in f.columns)
                value: Any = redcap.read_checkboxes(f, {c: cell(c) for c in f.columns})
                value = [target.codes[c] for c in value] or None
            else:
                raw = cell(f.name)
                value = redcap.read_cell(f, raw) if raw else None
                if f.value_type is PhenotypeType.choice and value is not None:
                    value = target.codes[value]
            if value is None:
                return
            stored = parse_value(target.spec, value)
        except ValidationError as error:
            column = error.field if error.field in f.columns else f.name
            r.faults.append((column, raw if column == f.name else error.value, error.message))
            return
        if (target.variable or target.definition).scope is PhenotypeScope.participant:
            r.facts[f"value:{f.name}"] = _Fact(r.row, r.line, f.name, raw, stored)
        else:
            r.values[f.name] = (stored, raw)

    def read_signature(self, cell, read, r: _Row) -> _Signature | None:
        given = self.consent
        statements = self.statements
        answers = {}
        for code, name in statements.items():
            answer = read(self.fields[name])
            if answer is not None:
                answers[code] = answer
        version, signed_raw = cell(given.version), cell(given.signed_on)
        if not (version or signed_raw or answers):
            return None
        signed_on = read(self.fields[given.signed_on]) if given.signed_on in self.fields else None
        if not version:
            r.faults.append(
                (given.version, version, "a consent needs the version of the form signed")
            )
        elif len(version) > 32:
            r.faults.append((given.version, version, "a version is 1-32 characters"))
        if not signed_raw:
            r.faults.append((given.signed_on, signed_raw, "a consent needs the date it was signed"))
        if not version or len(version) > 32 or signed_on is None:
            return None
        version = consent.document_version(version)
        return _Signature(r.row, r.line, version, signed_on, answers, statements)

    def look_up(self, codes: set[str]) -> None:
        """What the database knows of a batch's participants: the participant, its visits and
        (for the batch's visits) their values of the variables imported."""
        new = codes - self.people.keys()
        found = self.session.execute(
            sa.select(
                Participant.code,
                Participant.id,
                Participant.study_id,
                Participant.sex,
                Participant.birth_year,
            ).where(Participant.code.in_(new))
        ).all()
        self.found = {code: row for code, *row in found}
        by_id = {row[1]: row[0] for row in found}
        stored: dict[str, dict[str, tuple[int, date]]] = {}
        for participant_id, label, visit_id, visit_date in self.session.execute(
            sa.select(Visit.participant_id, Visit.label, Visit.id, Visit.visit_date).where(
                Visit.participant_id.in_(by_id)
            )
        ):
            stored.setdefault(by_id[participant_id], {})[label] = (visit_id, visit_date)
        for code, visits in stored.items():  # the rows' labels are canonical: stored ones too
            for label, visit in by_canonical_label(visits, owner=code).items():
                if isinstance(visit, ValidationError):
                    self.visit_clashes[code, label] = visit.message
                else:
                    self.stored_visits[code, label] = visit

    def register(self, r: _Row, written: list) -> None:
        """Add a row's participant, visit, facts and values to the plan, with the faults
        that only the rows together (or the database) show."""
        person = self.people.get(r.code)
        if person is None:
            person = self.people[r.code] = _Person(r.row)
            if r.code in self.found:
                person.id, person.study_id, person.sex, person.birth_year = self.found[r.code]
        if person.study_id not in (None, self.study.id):
            other = self.session.get(Study, person.study_id).code
            r.faults.append(
                (
                    self.mapping.record_id,
                    r.code,
                    f"participant {r.code} is in study {other}, not {self.study.code}",
                )
            )
            return
        key = (r.code, r.label)
        if key in self.visit_clashes:
            r.faults.append((EVENT_COLUMN, r.event, self.visit_clashes[key]))
            return
        visit = self.visits.get(key)
        if visit is not None:
            reason = f"row {visit.row} has the same record and event ({r.code}, {r.label})"
            r.faults.append((EVENT_COLUMN, r.event, reason))
            return
        visit_id, stored_date = self.stored_visits.get(key, (None, None))
        date_field = self.mapping.visit_date
        said = any(column == date_field for column, _, _ in r.faults)  # a date that is wrong
        if visit_id is None and r.visit_date is None and not said:
            reason = f"visit {r.label} of {r.code} is new: it needs its date"
            r.faults.append((date_field, "", reason))
        visit = self.visits[key] = _PlannedVisit(r.row, r.line, r.visit_date, visit_id, stored_date)
        for name, given in r.facts.items():
            first = person.facts.setdefault(name, given)
            if first.value != given.value:
                shown = HIDDEN if given.column in self.phi else repr(first.raw)
                r.faults.append((given.column, given.raw, f"row {first.row} gives {shown}"))
        signature = r.signature
        if signature is not None:
            first = person.signatures.setdefault(
                (signature.version, signature.signed_on), signature
            )
            if first.answers != signature.answers:
                reason = (
                    f"row {first.row} gives other answers for {signature.version} "
                    f"signed {signature.signed_on}"
                )
                r.faults.append((self.consent.version, signature.version, reason))
        self.count_values(r, visit, written)

    def count_values(self, r: _Row, visit: _PlannedVisit, written: list) -> None:
        counts = self.report.values
        for name, (stored, _) in r.values.items():
            target = self.targets[name]
            before = (
                self.stored_values.get((visit.id, target.variable.id))
                if visit.id and target.variable
                else None
            )
            counts.count(_outcome(before, stored))
            if before != stored:
                written.append((r.code, r.label, name, stored, before is None))

    def load_values(self, visit_ids: list[int]) -> None:
        variables = [t.variable.id for t in self.targets.values() if t.variable is not None]
        for visit_id, variable_id, number, text, day in self.session.execute(
            sa.select(
                PhenotypeValue.visit_id,
                PhenotypeValue.variable_id,
                PhenotypeValue.value_number,
                PhenotypeValue.value_text,
                PhenotypeValue.value_date,
            ).where(
                PhenotypeValue.visit_id.in_(visit_ids), PhenotypeValue.variable_id.in_(variables)
            )
        ):
            self.stored_values[visit_id, variable_id] = Stored(number, text, day)

    # --- What only the whole file shows ---

    def summarise(self) -> None:
        self.check_people()
        self.check_signatures()
        report = self.report
        report.faults.sort(key=lambda f: (f.file == report.records, f.file, f.line or 0))
        report.faulty_rows = len(self.faulty)
        if report.fault_count > len(report.faults):
            report.notices.append(f"{len(report.faults)} of {report.fault_count} faults listed")

    def person_fault(self, fact: _Fact, reason: str) -> None:
        self.fault(self.report.records, fact.row, fact.line, fact.column, fact.raw, reason)

    def check_people(self) -> None:
        """Identity (MRNs unique, dates that fit), birth year against visits, and what each
        participant's facts add or change."""
        stored = {p.id: p for p in self.people.values() if p.id is not None}
        for chunk in chunks(stored, BATCH_ROWS):
            for identity in self.session.exec(
                select(ParticipantIdentity).where(ParticipantIdentity.participant_id.in_(chunk))
            ):
                stored[identity.participant_id].identity = identity
        mrns: dict[str, str] = {}
        for code, person in self.people.items():
            mrn = person.facts.get("mrn")
            if mrn is None:
                continue
            first = mrns.setdefault(mrn.value, code)
            if first != code:
                self.person_fault(mrn, f"record {first} has the same MRN")
            if mrn.value.upper() in code:
                self.person_fault(mrn, "a participant code must not contain the MRN")
        for chunk in chunks(mrns, BATCH_ROWS):
            for participant_id, mrn in self.session.execute(
                sa.select(ParticipantIdentity.participant_id, ParticipantIdentity.mrn).where(
                    ParticipantIdentity.mrn.in_(chunk)
                )
            ):
                person = self.people[mrns[mrn]]
                if participant_id != person.id:
                    self.person_fault(person.facts["mrn"], "another participant has this MRN")
        participant_values = self.stored_participant_values()
        by_visit = defaultdict(list)
        for (code, _), visit in self.visits.items():
            by_visit[code].append(visit)
        for code, person in self.people.items():
            self.check_person(code, person, by_visit[code], participant_values)

    def check_person(
        self, code: str, person: _Person, visits: list[_PlannedVisit], participant_values
    ) -> None:
        facts = person.facts
        born = facts.get("birth_year")
        birth_year = born.value if born else person.birth_year
        dob = facts.get("date_of_birth")
        stored_dob = person.identity.date_of_birth if person.identity else None
        date_of_birth = dob.value if dob else stored_dob
        try:
            participants.check_person_dates(
                birth_year=birth_year, date_of_birth=date_of_birth, enrolled_on=None
            )
        except ValidationError as error:
            wrong = born if error.field == "birth_year" and born else dob or born
            if wrong is not None:  # a birth year's fault may quote the date of birth
                self.person_fault(wrong, _hidden(error.message, date_of_birth))
        for visit in visits:
            if visit.visit_date and birth_year and visit.visit_date.year < birth_year:
                self.fault(
                    self.report.records,
                    visit.row,
                    visit.line,
                    self.mapping.visit_date,
                    str(visit.visit_date),
                    "the visit date is before birth",
                )
            self.report.visits.count(
                _outcome(visit.stored_date, visit.visit_date or visit.stored_date)
            )
        sex = facts.get("sex")
        if person.id is None:
            person.outcome = "added"
        elif (sex and sex.value != person.sex) or (born and born.value != person.birth_year):
            person.outcome = "changed"
        self.report.participants.count(person.outcome)
        wanted = _identity(facts)
        if wanted:
            have = person.identity
            changes = have is None or _identity_changes(have, wanted)
            self.report.identities.count(_outcome(have, wanted if changes else have))
        for key, given in facts.items():
            if key.startswith("value:"):
                target = self.targets[key[6:]]
                before = (
                    participant_values.get((person.id, target.variable.id))
                    if person.id and target.variable
                    else None
                )
                outcome = _outcome(before, given.value)
                self.report.values.count(outcome)
                if outcome != "unchanged":
                    person.new_values.append((target.field.name, outcome == "added"))

    def stored_participant_values(self) -> dict[tuple[int, int], Stored]:
        ids = [p.id for p in self.people.values() if p.id is not None]
        variables = [
            t.variable.id
            for t in self.targets.values()
            if t.variable is not None and t.variable.scope is PhenotypeScope.participant
        ]
        found = {}
        for chunk in chunks(ids, BATCH_ROWS):
            for pid, variable_id, number, text, day in self.session.execute(
                sa.select(
                    PhenotypeValue.participant_id,
                    PhenotypeValue.variable_id,
                    PhenotypeValue.value_number,
                    PhenotypeValue.value_text,
                    PhenotypeValue.value_date,
                ).where(
                    PhenotypeValue.participant_id.in_(chunk),
                    PhenotypeValue.variable_id.in_(variables),
                    PhenotypeValue.visit_id.is_(None),
                )
            ):
                found[pid, variable_id] = Stored(number, text, day)
        return found

    def check_signatures(self) -> None:
        """Each signature against its document version (found, or created from the earliest
        signature of it with the statements its signatures answer) and what is recorded."""
        if self.consent is None:
            return
        given = self.consent
        signatures = [(code, s) for code, p in self.people.items() for s in p.signatures.values()]
        new: dict[str, list[_Signature]] = defaultdict(list)
        for _, s in signatures:
            if s.version not in self.stored_documents:
                new[s.version].append(s)
        for version, signed in new.items():
            answered = {code for s in signed for code in s.answers}
            asked = [code for code in given.statements.values() if code in answered]
            self.documents[version] = (min(s.signed_on for s in signed), asked)
        recorded = self.stored_signatures()
        for code, s in signatures:
            person = self.people[code]
            effective_on, asked = self.stored_documents.get(s.version) or self.documents[s.version]
            if s.signed_on < effective_on:
                reason = f"{given.document} {s.version} took effect on {effective_on}"
                self.fault(
                    self.report.records, s.row, s.line, given.signed_on, str(s.signed_on), reason
                )
            born = person.facts.get("birth_year")
            birth_year = born.value if born else person.birth_year
            if birth_year and s.signed_on.year < birth_year:
                self.fault(
                    self.report.records,
                    s.row,
                    s.line,
                    given.signed_on,
                    str(s.signed_on),
                    "the signature date is before birth",
                )
            for statement in asked:
                if statement not in s.answers:
                    self.fault(
                        self.report.records,
                        s.row,
                        s.line,
                        s.columns.get(statement, given.version),
                        "",
                        f"no answer ({given.document} {s.version} asks {statement})",
                    )
            for statement in s.answers.keys() - set(asked):
                name = s.columns[statement]
                reason = f"{given.document} {s.version} does not ask {statement}"
                self.fault(
                    self.report.records, s.row, s.line, name, str(int(s.answers[statement])), reason
                )
            s.stored = recorded.get((person.id, s.version, s.signed_on)) if person.id else None
            outcome = _outcome(s.stored, s.answers)
            if outcome != "changed":
                self.report.consents.count(outcome)
                continue
            differ = sorted(s.answers.items() ^ s.stored.items())
            reason = (
                f"{given.document} {s.version} signed {s.signed_on} is recorded with other "
                f"answers ({', '.join(sorted({k for k, _ in differ}))}); a signed consent is "
                "not changed by an import"
            )
            statement = differ[0][0]
            answer = s.answers.get(statement)
            self.fault(
                self.report.records,
                s.row,
                s.line,
                s.columns.get(statement, given.version),
                "" if answer is None else str(int(answer)),
                reason,
            )
        self.report.documents = [f"{given.document} {v}" for v in self.documents]

    def stored_signatures(self) -> dict[tuple[int | None, str, date], dict[str, bool]]:
        """(participant, version, date) → answers of the document's recorded signatures."""
        ids = [p.id for p in self.people.values() if p.id is not None and p.signatures]
        found: dict[tuple[int | None, str, date], dict[str, bool]] = defaultdict(dict)
        for chunk in chunks(ids, BATCH_ROWS):
            for pid, version, signed_on, statement, answer in self.session.execute(
                sa.select(
                    ParticipantConsent.participant_id,
                    ConsentDocument.version,
                    ParticipantConsent.signed_on,
                    ConsentStatement.code,
                    ConsentAnswer.answer,
                )
                .join(ConsentDocument, ConsentDocument.id == ParticipantConsent.document_id)
                .join(ConsentAnswer, ConsentAnswer.participant_consent_id == ParticipantConsent.id)
                .join(ConsentStatement, ConsentStatement.id == ConsentAnswer.statement_id)
                .where(
                    ParticipantConsent.participant_id.in_(chunk),
                    ConsentDocument.code == self.consent.document,
                )
            ):
                found[pid, version, signed_on][statement] = answer
        return found


def _hidden(reason: str, value: object) -> str:
    """A fault's reason without the identifier value it quotes."""
    if value is None or value == "":
        return reason
    return reason.replace(repr(value), HIDDEN).replace(str(value), HIDDEN)


def _outcome(before: object, after: object) -> str:
    return "added" if before is None else "unchanged" if before == after else "changed"


def _identity(facts: dict[str, _Fact]) -> dict[str, Any]:
    """The identity columns and `other` entries the file gives."""
    wanted: dict[str, Any] = {c: facts[c].value for c in IDENTITY_LIMITS if c in facts}
    other = {k[6:]: f.value for k, f in facts.items() if k.startswith("other:")}
    if other:
        wanted["other"] = other
    return wanted


def _identity_changes(identity: ParticipantIdentity, wanted: dict[str, Any]) -> dict[str, Any]:
    """What is to change; `other` keeps the entries the file does not give."""
    changes = {c: v for c, v in wanted.items() if c != "other" and getattr(identity, c) != v}
    if "other" in wanted:
        merged = (identity.other or {}) | wanted["other"]
        if merged != (identity.other or {}):
            changes["other"] = merged
    return changes


# --- Writing ------------------------------------------------------------------------------


def write_redcap(
    session: Session,
    *,
    actor: Actor,
    plan: RedcapPlan,
    progress: Callable[[int], None] | None = None,
) -> RedcapReport:
    """Write a checked plan into the caller's transaction, a batch of rows at a time (each
    participant with the batch of its first row); `progress` is told how many more rows were
    written after each batch."""
    require(actor, Permission.import_data)
    report = plan.report
    refuse_a_faulty_plan(report.records, report.fault_count, report.faulty_rows)
    writer = _Writer(session, actor, plan)
    prepare_bulk_writing(session)
    writer.create_documents()
    writer.create_variables()
    for rows, people, visits, values in unspool(plan.spool):
        writer.write_people(people)
        writer.write_visits(visits)
        writer.write_values(values)
        writer.write_values(
            [
                (code, None, name, plan.people[code].facts[f"value:{name}"].value, added)
                for code in people
                for name, added in plan.people[code].new_values
            ]
        )
        writer.write_signatures(people)
        if progress:
            progress(rows)
    return report


class _Writer:
    def __init__(self, session: Session, actor: Actor, plan: RedcapPlan):
        self.session = session
        self.actor = actor
        self.plan = plan
        self.reason = f"REDCap import of {plan.report.records}"
        self.variables: dict[str, PhenotypeVariable] = {
            name: t.variable for name, t in plan.targets.items() if t.variable is not None
        }

    def create_documents(self) -> None:
        given = self.plan.mapping.consent
        for version, (effective_on, statements) in self.plan.documents.items():
            consent.add_document(
                self.session,
                actor=self.actor,
                code=given.document,
                version=version,
                title=given.title,
                effective_on=effective_on,
                statements=statements,
            )

    def create_variables(self) -> None:
        for name, target in self.plan.targets.items():
            if target.variable is None:
                phenotypes.add_variable(
                    self.session, actor=self.actor, definition=target.definition
                )
                self.variables[name] = phenotypes.get_variable(self.session, name)

    def changed(self, row, action: str, before: dict, label: dict | None = None) -> None:
        """Write a changed row and its audit entry (before, after)."""
        self.session.add(row)
        flush(self.session)
        audit.record(
            self.session,
            actor=self.actor,
            action=action,
            entity=row.__tablename__,
            entity_id=row.id,
            before=before,
            after=(label or {}) | audit.snapshot(row),
            reason=self.reason,
        )

    def write_people(self, codes: list[str]) -> None:
        """New participants with their identity; changed sex, birth year and identity."""
        plan = self.plan
        for code in codes:
            person = plan.people[code]
            facts = person.facts
            sex = facts["sex"].value if "sex" in facts else None
            born = facts["birth_year"].value if "birth_year" in facts else None
            wanted = _identity(facts)
            if person.id is None:
                columns = {c: v for c, v in wanted.items() if c != "other"}
                person.id = participants.add_participant(
                    self.session,
                    actor=self.actor,
                    study=plan.study.code,
                    code=code,
                    sex=sex or Sex.unknown,
                    birth_year=born,
                    **columns,
                ).id
                if "other" in wanted:
                    self.set_identity(person, wanted)
                continue
            if person.outcome == "changed":
                row = self.session.get(Participant, person.id)
                before = audit.snapshot(row)
                row.sex = sex or row.sex
                row.birth_year = born if born is not None else row.birth_year
                self.changed(row, "participant.change", before, {"participant": code})
            if wanted:
                self.set_identity(person, wanted)

    def set_identity(self, person: _Person, wanted: dict[str, Any]) -> None:
        identity = (
            person.identity
            or self.session.exec(
                select(ParticipantIdentity).where(ParticipantIdentity.participant_id == person.id)
            ).first()
        )
        if identity is None:
            identity = ParticipantIdentity(participant_id=person.id, **wanted)
            self.session.add(identity)
            flush(self.session)
            audit.record(
                self.session,
                actor=self.actor,
                action="participant_identity.add",
                entity="participant_identity",
                entity_id=identity.id,
                after=audit.snapshot(identity),
                reason=self.reason,
            )
            return
        changes = _identity_changes(identity, wanted)
        if changes:
            before = audit.snapshot(identity)
            for column, value in changes.items():
                setattr(identity, column, value)
            self.changed(identity, "participant_identity.change", before)

    def write_visits(self, keys: list[tuple[str, str]]) -> None:
        """New visits in one statement, audited as `add_visit` audits them; a changed date
        moves the observation date of the visit's values with it."""
        plan, table = self.plan, Visit.__table__
        new = [k for k in keys if plan.visits[k].id is None]
        rows = [
            {
                "participant_id": plan.people[code].id,
                "label": label,
                "visit_date": plan.visits[code, label].visit_date,
                "created_at": utcnow(),
            }
            for code, label in new
        ]
        if rows:
            insert_many(self.session, table, rows)
            query = sa.select(table.c.id, table.c.participant_id, table.c.label).where(
                table.c.participant_id.in_({row["participant_id"] for row in rows})
            )
            found = {(p, label): i for i, p, label in self.session.execute(query)}
            entries = []
            for (code, label), row in zip(new, rows, strict=True):
                visit = plan.visits[code, label]
                visit.id, visit.stored_date = found[row["participant_id"], label], visit.visit_date
                entries.append(
                    {"action": "visit.add", "entity": "visit", "entity_id": visit.id,
                     "after": row | {"id": visit.id}, "reason": self.reason}
                )  # fmt: skip
            audit.record_many(self.session, actor=self.actor, entries=entries)
        for code, label in keys:
            visit = plan.visits[code, label]
            if visit.id is None or visit.visit_date in (None, visit.stored_date):
                continue
            row = self.session.get(Visit, visit.id)
            before = audit.snapshot(row)
            row.visit_date = visit.visit_date
            self.changed(row, "visit.change", before, {"participant": code})
            moved = select(PhenotypeValue).where(
                PhenotypeValue.visit_id == row.id, PhenotypeValue.observed_on != row.visit_date
            )
            for value in self.session.exec(moved).all():
                before = audit.snapshot(value)
                value.observed_on = row.visit_date
                self.changed(
                    value, "phenotype_value.change", before, {"participant": code, "visit": label}
                )

    def write_values(self, values: list[_NewValue]) -> None:
        """New values through `add_values` (one statement a participant); changed ones
        through `store_value`, which records each before and after."""
        plan = self.plan
        people = self.loaded(Participant, {plan.people[v[0]].id for v in values})
        visits = self.loaded(Visit, {plan.visits[v[0], v[1]].id for v in values if v[1]})
        new: dict[int, list[tuple[Visit | None, PhenotypeVariable, Stored]]] = defaultdict(list)
        for code, label, name, stored, added in values:
            person = people[plan.people[code].id]
            visit = visits[plan.visits[code, label].id] if label is not None else None
            if added:
                new[person.id].append((visit, self.variables[name], stored))
                continue
            phenotypes.store_value(
                self.session,
                actor=self.actor,
                participant=person,
                variable=self.variables[name],
                visit=visit,
                stored=stored,
                source=SOURCE,
            )
        for person_id, items in new.items():
            phenotypes.add_values(
                self.session, actor=self.actor, participant=people[person_id], values=items,
                source=SOURCE,
            )  # fmt: skip

    def loaded(self, model: type[Participant] | type[Visit], ids: set[int]) -> dict[int, Any]:
        """Rows by id, a thousand per query."""
        found: dict[int, Any] = {}
        for chunk in chunks(sorted(ids), BATCH_ROWS):
            found |= {r.id: r for r in self.session.exec(select(model).where(model.id.in_(chunk)))}
        return found

    def write_signatures(self, codes: list[str]) -> None:
        given = self.plan.mapping.consent
        for code in codes:
            for s in self.plan.people[code].signatures.values():
                if s.stored is None:
                    consent.record_consent(
                        self.session,
                        actor=self.actor,
                        participant=code,
                        document=given.document,
                        version=s.version,
                        signed_on=s.signed_on,
                        answers=s.answers,
                    )
