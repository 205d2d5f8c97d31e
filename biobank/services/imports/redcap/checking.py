"""Checking a REDCap project: its data dictionary (`dictionary`), then its records a batch of
rows at a time (`reading`), each row against the rows before it and the database, then what
only the whole file shows (`people`). Every fault is found before anything is written; the plan
says what writing would add, change and leave alone."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import Stored
from biobank.domain.visits import by_canonical_label
from biobank.domain.vocabulary import Sex
from biobank.errors import ValidationError
from biobank.models import Participant, Study, Visit
from biobank.services import phenotypes
from biobank.services.imports.common import DataRow, ImportReport, batches, stored_id
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import HIDDEN, Faults
from biobank.services.imports.redcap.mapping import RedcapMapping, redcap_mapping
from biobank.services.imports.redcap.people import PeopleCheck
from biobank.services.imports.redcap.planning import (
    NewValue,
    Person,
    PlannedVisit,
    RedcapPlan,
    Row,
    Tally,
    outcome_of,
)
from biobank.services.imports.redcap.reading import EVENT_COLUMN, RowReader
from biobank.services.studies import get_study
from biobank.tabular import new_spool, open_source, spool_batch


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
    """One check of a project's two files: the dictionary, the records, and then the whole."""

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
        self.tally = tally = Tally()
        self.dictionary_source = open_source(dictionary, notices, "data dictionary")
        self.source = open_source(records, notices, "records export")
        self.report = ImportReport(
            dictionary=dictionary.name,
            records=records.name,
            study=study.code,
            encoding=self.source.encoding,
            delimiter=self.source.delimiter,
            notices=notices,
            fields=0,
            participants=tally.participants,
            identities=tally.identities,
            visits=tally.visits,
            variables=tally.variables,
            values=tally.values,
            consents=tally.consents,
            documents=[],
        )
        self.faults = Faults(self.report)
        self.dictionary = Dictionary(session, self.report, tally, self.faults, mapping)
        self.reader = RowReader(self.dictionary, self.faults, records.name, self.source.delimiter)
        self.people: dict[str, Person] = {}
        self.visits: dict[tuple[str, str], PlannedVisit] = {}
        # the batch's stored participants: id, study, sex, birth year
        self.found: dict[str, tuple[int | None, int, Sex, int | None]] = {}
        self.stored_visits: dict[tuple[str, str], tuple[int, date]] = {}
        self.visit_clashes: dict[tuple[str, str], str] = {}  # stored visits that are one
        # what the batch's stored visits hold: (visit, variable) → value
        self.stored_values: dict[tuple[int | None, int], Stored] = {}
        self.spool = new_spool()

    def run(self) -> RedcapPlan:
        if not (self.dictionary.read(self.dictionary_source) and self.read_records()):
            self.report.notices.append("the records were not checked: fix the faults above first")
        people = PeopleCheck(
            self.session,
            self.report,
            self.tally,
            self.faults,
            self.dictionary,
            self.people,
            self.visits,
        )
        documents = people.run()
        self.faults.close()
        return RedcapPlan(
            report=self.report,
            study=self.study,
            mapping=self.mapping,
            targets=self.dictionary.targets,
            people=self.people,
            visits=self.visits,
            documents=documents,
            spool=self.spool,
        )

    def read_records(self) -> bool:
        records = self.source.records()
        header = next(records, None)
        if header is None:
            self.faults.fault(self.report.records, None, None, None, None, "the file is empty")
            return False
        if not self.reader.read_header(*header):
            return False
        for batch in batches(enumerate(records, start=1)):
            self.check_batch(batch, width=len(header[1]))
        return True

    def check_batch(self, batch: list[DataRow], *, width: int) -> None:
        """Read a batch of rows, check them against the plan so far and the database, and
        spool what writing needs while nothing is faulty."""
        rows = [self.reader.read_row(row, line, cells, width) for row, (line, cells) in batch]
        self.look_up({r.code for r in rows if r.code})
        keys = [(r.code, r.label) for r in rows if r.code and r.label]
        self.load_values([self.stored_visits[k][0] for k in keys if k in self.stored_visits])
        written: list[NewValue] = []
        for r in rows:
            if r.code and r.label:
                self.register(r, (r.code, r.label), written)
            for column, value, reason in r.faults:
                self.faults.fault(self.report.records, r.row, r.line, column, value, reason)
        self.report.rows = batch[-1][0]
        if not self.report.fault_count:  # once a row is faulty, nothing will be written
            visits = keys  # no fault: each row has its record and event, and is a new visit
            # each participant with the batch of its first row
            people = [r.code for r in rows if r.code and self.people[r.code].row == r.row]
            spool_batch(self.spool, (len(batch), people, visits, written))

    def look_up(self, codes: set[str]) -> None:
        """What the database knows of a batch's participants: each participant and its visits."""
        new = codes - self.people.keys()
        found = self.session.execute(
            sa.select(
                col(Participant.code),
                col(Participant.id),
                col(Participant.study_id),
                col(Participant.sex),
                col(Participant.birth_year),
            ).where(col(Participant.code).in_(new))
        ).all()
        self.found = {code: (i, study, sex, year) for code, i, study, sex, year in found}
        by_id = {row[1]: row[0] for row in found}
        stored: dict[str, dict[str, tuple[int, date]]] = {}
        for participant_id, label, visit_id, visit_date in self.session.execute(
            sa.select(
                col(Visit.participant_id), col(Visit.label), col(Visit.id), col(Visit.visit_date)
            ).where(col(Visit.participant_id).in_(by_id))
        ):
            stored.setdefault(by_id[participant_id], {})[label] = (stored_id(visit_id), visit_date)
        for code, visits in stored.items():  # the rows' labels are canonical: stored ones too
            for label, visit in by_canonical_label(visits, owner=code).items():
                if isinstance(visit, ValidationError):
                    self.visit_clashes[code, label] = visit.message
                else:
                    self.stored_visits[code, label] = visit

    def register(self, r: Row, key: tuple[str, str], written: list[NewValue]) -> None:
        """Add a row's participant, visit (`key`: code and label), facts and values to the
        plan, with the faults that only the rows together (or the database) show."""
        code = key[0]
        person = self.people.get(code)
        if person is None:
            person = self.people[code] = Person(r.row)
            if code in self.found:
                person.id, person.study_id, person.sex, person.birth_year = self.found[code]
        if person.study_id not in (None, self.study.id):
            other = self.session.get_one(Study, person.study_id).code
            r.faults.append(
                (
                    self.mapping.record_id,
                    code,
                    f"participant {code} is in study {other}, not {self.study.code}",
                )
            )
            return
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
        visit = self.visits[key] = PlannedVisit(r.row, r.line, r.visit_date, visit_id, stored_date)
        for name, given in r.facts.items():
            first = person.facts.setdefault(name, given)
            if first.value != given.value:
                shown = HIDDEN if given.column in self.faults.phi else repr(first.raw)
                r.faults.append((given.column, given.raw, f"row {first.row} gives {shown}"))
        signature, consent = r.signature, self.dictionary.consent  # no consent: no signature
        if signature is not None and consent is not None:
            signed = person.signatures.setdefault(
                (signature.version, signature.signed_on), signature
            )
            if signed.answers != signature.answers:
                reason = (
                    f"row {signed.row} gives other answers for {signature.version} "
                    f"signed {signature.signed_on}"
                )
                r.faults.append((consent.version, signature.version, reason))
        self.count_values(r, key, visit, written)

    def count_values(
        self, r: Row, key: tuple[str, str], visit: PlannedVisit, written: list[NewValue]
    ) -> None:
        counts = self.tally.values
        for name, (stored, _) in r.values.items():
            target = self.dictionary.targets[name]
            before = (
                self.stored_values.get((visit.id, stored_id(target.variable.id)))
                if visit.id and target.variable
                else None
            )
            counts.count(outcome_of(before, stored))
            if before != stored:
                written.append((*key, name, stored, before is None))

    def load_values(self, visit_ids: list[int]) -> None:
        """What the batch's stored visits hold of the variables imported."""
        targets = self.dictionary.targets.values()
        variables = [stored_id(t.variable.id) for t in targets if t.variable is not None]
        found = phenotypes.stored_values(self.session, variables=variables, visits=visit_ids)
        self.stored_values = {(v.visit_id, v.variable_id): v.stored for v in found}
