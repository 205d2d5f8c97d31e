"""Checking a REDCap project: its data dictionary (`dictionary`), then its records a batch of
rows at a time (`reading`), each row against the rows before it and the database, then what
only the whole file shows (`people`). Every fault is found before anything is written; the plan
says what writing would add, change and leave alone, and, for an import that skips the faulty,
what it leaves out: the records with a faulty row and the fields with a faulty definition."""

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
from biobank.services import external_ids, phenotype_missing, phenotypes
from biobank.services.imports.common import (
    MAX_LISTED_FAULTS,
    DataRow,
    ImportReport,
    InferredMapping,
    LeftOut,
    ScratchFile,
    batches,
    stored_id,
)
from biobank.services.imports.heap import frozen_heap
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import HIDDEN, Faults, Place
from biobank.services.imports.redcap.mapping import RedcapMapping, redcap_mapping
from biobank.services.imports.redcap.people import PeopleCheck
from biobank.services.imports.redcap.planning import (
    Given,
    Kept,
    Missing,
    NewValue,
    Person,
    PlannedVisit,
    RedcapPlan,
    Row,
    Tally,
    outcome_of,
    removal,
)
from biobank.services.imports.redcap.reading import EVENT_COLUMN, INSTANCE_COLUMN, RowReader
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
    skip_faulty: bool = False,
    names: tuple[str, str] | None = None,
    inferred: InferredMapping | None = None,
) -> RedcapPlan:
    """Read and check both files, against each other and the database; write nothing.

    The plan's report lists every fault and what the import would do; `write_redcap`
    writes a plan that has no fault, or, with `skip_faulty`, all of it but the records with a
    faulty row and the fields with a faulty definition (listed in the report's `left_out`).
    A file or records header that cannot be read stops the import either way. The report
    names the two files by `names` where given (files pulled from a server: `api`), else by
    their own names. Without a mapping, the shipped one; `inferred` says what `mapping` was
    inferred from (`inference`), for the report."""
    require(actor, Permission.import_data)
    with frozen_heap():
        checker = _Checker(
            session,
            dictionary,
            records,
            _study(session, study),
            mapping or redcap_mapping(),
            skip_faulty=skip_faulty,
            names=names or (dictionary.name, records.name),
        )
        checker.report.inferred = inferred
        return checker.run()


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
        *,
        skip_faulty: bool,
        names: tuple[str, str],
    ):
        self.session = session
        self.study = study
        self.mapping = mapping
        self.skip_faulty = skip_faulty
        notices: list[str] = []
        self.tally = tally = Tally()
        self.dictionary_source = open_source(dictionary, notices, "data dictionary")
        self.source = open_source(records, notices, "records export")
        self.report = ImportReport(
            dictionary=names[0],
            records=names[1],
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
        self.reader = RowReader(self.dictionary, self.faults, names[1], self.source.delimiter)
        self.scratch = ScratchFile()
        self.people: Kept[str, Person] = Kept(self.scratch, "person", lambda code: code)
        self.visits: Kept[tuple[str, str], PlannedVisit] = Kept(
            self.scratch, "visit", lambda key: key[0]
        )
        # the batch's stored participants: id, study, sex, birth year
        self.found: dict[str, tuple[int | None, int, Sex, int | None]] = {}
        self.adopted: dict[str, int] = {}  # record → the participant its ID adopts: `adopt`
        # the batch's stored visits, and those that are one
        self.stored_visits: dict[tuple[str, str], tuple[int, date]] = {}
        self.visit_clashes: dict[tuple[str, str], str] = {}
        # what the batch's stored visits hold: (visit, variable, instance) → value or
        # missing-data code, and a repeat instance's value its observation date
        self.stored_values: dict[tuple[int | None, int, int], Given] = {}
        self.stored_observed: dict[tuple[int | None, int, int], date | None] = {}
        self.spool = new_spool()
        self.record_dated: set[str] = set()  # events whose visits took their record's date

    def run(self) -> RedcapPlan:
        checked = self.dictionary.read(self.dictionary_source) and self.read_records()
        if not checked:
            self.report.notices.append("the records were not checked: fix the faults above first")
        people = PeopleCheck(
            self.session,
            self.report,
            self.tally,
            self.faults,
            self.dictionary,
            self.scratch,
            self.people,
            self.visits,
        )
        people.check()
        left_out = self.leave_out(checked)
        documents = people.keep(left_out)
        adopted = len(self.adopted.keys() - left_out)
        if adopted:
            self.report.notices.append(
                f"{adopted} participants of an earlier import, coded by their record ID, keep "
                "it as their REDCap record ID"
            )
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
            checked=checked,
            skip_faulty=self.skip_faulty,
            left_out=left_out,
            record_id_phi=self.faults.phi_record,
        )

    def leave_out(self, checked: bool) -> frozenset[str]:
        """The participants of the faulty records; with `skip_faulty`, the report's list of
        what is left out (each record with every row of it)."""
        faulty = self.faults.records
        for (code, _), visit in self.visits.of_records(k for k in faulty if isinstance(k, str)):
            faulty[code].rows.append(visit.at.row)
        if self.skip_faulty and checked:
            records = sorted(faulty.values(), key=lambda r: min(r.rows))
            for record in records:
                record.rows = sorted(set(record.rows))
            self.report.left_out = LeftOut(
                records=len(records),
                rows=sum(len(r.rows) for r in records),
                listed=records[:MAX_LISTED_FAULTS],
                fields=self.faults.fields,
            )
        return frozenset(key for key in faulty if isinstance(key, str))

    def leave_out_faulty_fields(self) -> None:
        """With `skip_faulty`: a field whose definition is faulty (in the dictionary, the
        mapping or the records' header) is left out, and the consent form with its version or
        date field."""
        d, faulty = self.dictionary, self.faults.fields.keys()
        for name in faulty & d.targets.keys():
            del d.targets[name]
        if d.sex_field is not None and d.sex_field.name in faulty:
            d.sex_field = None
        if d.birth_field is not None and d.birth_field.name in faulty:
            d.birth_field = None
        given = d.consent
        if given is not None:
            if faulty & {given.version, given.signed_on, "consent.version", "consent.signed_on"}:
                d.consent = None
            d.statements = {
                code: name
                for code, name in d.statements.items()
                if not faulty & {name, f"consent.statements.{name}"}
            }
        variables = self.tally.variables
        variables.added = sum(t.variable is None for t in d.targets.values())
        variables.unchanged = len(d.targets) - variables.added

    def read_records(self) -> bool:
        records = self.source.records()
        header = next(records, None)
        if header is None:
            self.faults.fault(self.report.records, None, None, None, None, "the file is empty")
            return False
        record_id = self.dictionary.fields[self.mapping.record_id]
        if record_id.identifier:  # faults name the row, never the record
            self.faults.phi_record = True
            self.faults.phi.add(record_id.name)
        if not self.reader.read_header(*header):
            return False
        if self.skip_faulty:
            self.leave_out_faulty_fields()
        for batch in batches(enumerate(records, start=1)):
            self.check_batch(batch, width=len(header[1]))
        return True

    def check_batch(self, batch: list[DataRow], *, width: int) -> None:
        """Read a batch of rows, check them against the plan so far and the database, and
        spool what writing needs while nothing is faulty (skipping the faulty: always, and
        writing leaves out the faulty records)."""
        rows = [self.reader.read_row(row, line, cells, width) for row, (line, cells) in batch]
        places = [self.place(r, cells) for r, (_, (_, cells)) in zip(rows, batch, strict=True)]
        self.people.load(r.code for r in rows if r.code)
        self.look_up({r.code for r in rows if r.code})
        keys = list(dict.fromkeys((r.code, r.label) for r in rows if r.code and r.label))
        self.visits.load([*keys, *((r.code, r.base) for r in rows if r.code and r.base)])
        self.load_values([self.stored_visits[k][0] for k in keys if k in self.stored_visits])
        written: list[NewValue] = []
        for r, at in zip(rows, places, strict=True):
            if r.code and r.label:
                self.register(r, at, (r.code, r.label), written)
            for column, value, reason in r.faults:
                self.faults.at(at, column, value, reason)
        self.report.rows = batch[-1][0]
        if self.skip_faulty or not self.report.fault_count:
            visits = keys  # a fault-free row has its record and event, and is a new visit
            # each participant with the batch of its first row
            people = [
                r.code
                for r in rows
                if r.code and r.code in self.people and self.people[r.code].row == r.row
            ]
            spool_batch(self.spool, (len(batch), people, visits, written))
        self.people.release()
        self.visits.release()

    def place(self, r: Row, cells: list[str]) -> Place:
        """Where a row is, as its faults name it."""

        def cell(column: str) -> str:
            index = self.reader.columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        instance = cell(INSTANCE_COLUMN)
        return Place(
            r.row,
            r.line,
            record=cell(self.mapping.record_id) or None,
            participant=r.code,
            event=r.event or None,
            instance=int(instance) if instance.isascii() and instance.isdigit() else None,
        )

    def look_up(self, records: set[str]) -> None:
        """What the database knows of a batch's participants (found by their REDCap record ID,
        or adopted: `adopt`, when first met): each participant and its visits."""
        new = {record for record in records if record not in self.people}
        ids = external_ids.participants_by_external_id(self.session, study=self.study, values=new)
        ids |= self.adopt(new - ids.keys())
        by_id = {i: record for record, i in ids.items()}
        self.found = {
            by_id[i]: (i, study, sex, year)
            for i, study, sex, year in self.session.execute(
                sa.select(
                    col(Participant.id),
                    col(Participant.study_id),
                    col(Participant.sex),
                    col(Participant.birth_year),
                ).where(col(Participant.id).in_(by_id))
            )
        }
        for record in records - new:  # met in an earlier batch: its visits are looked up again
            person = self.people[record]
            if person.id is not None:
                by_id.setdefault(person.id, record)
        self.stored_visits, self.visit_clashes = {}, {}
        stored: dict[str, dict[str, tuple[int, date]]] = {}
        for participant_id, label, visit_id, visit_date in self.session.execute(
            sa.select(
                col(Visit.participant_id), col(Visit.label), col(Visit.id), col(Visit.visit_date)
            ).where(col(Visit.participant_id).in_(by_id))
        ):
            stored.setdefault(by_id[participant_id], {})[label] = (stored_id(visit_id), visit_date)
        for record, visits in stored.items():  # the rows' labels are canonical: stored ones too
            owner = self.faults.record_id(record)
            for label, visit in by_canonical_label(visits, owner=owner).items():
                if isinstance(visit, ValidationError):
                    self.visit_clashes[record, label] = visit.message
                else:
                    self.stored_visits[record, label] = visit

    def adopt(self, records: set[str]) -> dict[str, int]:
        """Records a participant of the study made by an earlier import (which coded it by its
        record ID, upper-cased) is found by, when it has no REDCap record ID yet: record →
        participant. Writing gives it the record ID (a record spelt as its code first)."""
        by_code: dict[str, str] = {}
        for record in sorted(records, key=lambda r: (r != r.upper(), r)):
            by_code.setdefault(record.upper(), record)
        found: dict[str, int] = {
            code: i
            for code, i in self.session.execute(
                sa.select(col(Participant.code), col(Participant.id)).where(
                    col(Participant.study_id) == self.study.id,
                    col(Participant.code).in_(by_code),
                )
            )
        }
        taken = external_ids.have_external_id(self.session, found.values())
        taken |= set(self.adopted.values())
        adopted = {by_code[code]: i for code, i in found.items() if i not in taken}
        self.adopted |= adopted
        return adopted

    def register(self, r: Row, at: Place, key: tuple[str, str], written: list[NewValue]) -> None:
        """Add a row (`at`) with its participant, visit (`key`: code and label), facts and
        values to the plan, with the faults that only the rows together (or the database)
        show."""
        code = key[0]
        person = self.people.get(code)
        if person is None:
            person = self.people[code] = Person(r.row)
            if code in self.found:
                person.id, person.study_id, person.sex, person.birth_year = self.found[code]
        if key in self.visit_clashes:
            r.faults.append((EVENT_COLUMN, r.event, self.visit_clashes[key]))
            return
        visit = self.visits.get(key)
        other_event = visit is not None and (visit.at.event or "") != r.event  # another arm's
        if visit is not None and (r.holding in visit.forms or other_event):
            reason = (
                f"row {visit.at.row} has the same record and event "
                f"({self.faults.record_id(code)}, {r.label})"
            )
            if other_event:
                reason = (
                    f"row {visit.at.row} ({visit.at.event}) and this row are both visit "
                    f"{r.label} of {self.faults.record_id(code)}: give each arm its own visits "
                    "in the mapping's [arms] (or name the events in [visit_labels])"
                )
            r.faults.append((EVENT_COLUMN, r.event, reason))
            return
        if visit is not None:  # a repeating instrument's row of its event's visit
            visit.forms += (r.holding,)
        else:
            visit_id, stored_date = self.stored_visits.get(key, (None, None))
            visit_date = r.visit_date or self.event_date(code, r) or self.record_date(person, r)
            date_field = self.mapping.date_field(r.event)
            said = any(column == date_field for column, _, _ in r.faults)  # a wrong date
            if visit_id is None and visit_date is None and not said:
                reason = (
                    f"visit {r.label} of {self.faults.record_id(code)} is new: it needs its date"
                )
                if self.reader.date_field(r) is None:
                    reason += " (no date field dates its event, and its record has none before)"
                r.faults.append((date_field, "", reason))
            dated = visit_date or stored_date
            if dated is not None and person.first_date is None:
                person.first_date = dated
            visit = self.visits[key] = PlannedVisit(
                at, visit_date, visit_id, stored_date, (r.holding,)
            )
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
        self.count_values(r, at, person, key, visit, written)

    def record_date(self, person: Person, r: Row) -> date | None:
        """A visit without a date of its own, whose event no field dates: the date of its
        record's first dated visit (REDCap exports a record's rows together, first event
        first), told in a notice once an event."""
        day = person.first_date
        if day is None or r.form is not None or self.reader.date_field(r) is not None:
            return None
        if r.event not in self.record_dated:
            self.record_dated.add(r.event)
            event = f"of event {r.event} " if r.event else ""
            self.report.notices.append(
                f"visits {event}without a date of their own dated by their record's first date"
            )
        return day

    def event_date(self, code: str, r: Row) -> date | None:
        """A repeating instrument's later instance without a date of its own: its event's."""
        if r.form is None or r.base is None or r.base == r.label:
            return None
        event = self.visits.get((code, r.base))
        if event is not None:
            return event.visit_date or event.stored_date
        stored = self.stored_visits.get((code, r.base))
        return stored[1] if stored else None

    def count_values(
        self,
        r: Row,
        at: Place,
        person: Person,
        key: tuple[str, str],
        visit: PlannedVisit,
        written: list[NewValue],
    ) -> None:
        """What a row's values add and change in its visit, and what its blank cells remove
        (a participant-level one's blank is weighed with the record's other rows: `people`). A
        dated observation's value whose date changed is changed too."""
        instance = r.instance
        observed = (r.visit_date or visit.visit_date or visit.stored_date) if instance else None
        if not visit.id:  # a new visit holds nothing yet: every value is added, none removed
            if r.values:
                person.outcomes["values", "added"] += len(r.values)
            for name, (given, _) in r.values.items():
                written.append((*key, name, given, None, instance, observed))
            targets = self.dictionary.targets
            person.blank.update(n for n in r.blank if targets[n].participant_level)
            return
        for name, (given, _) in r.values.items():
            place = self.value_place(visit, name, instance)
            before = self.stored_values.get(place) if place else None
            moved = (  # a dated observation's value, whose date is another now
                place is not None
                and isinstance(before, Stored)
                and self.stored_observed.get(place) != observed
            )
            person.outcomes["values", "changed" if moved else outcome_of(before, given)] += 1
            if before != given or moved:
                written.append((*key, name, given, before, instance, observed))
        for name in r.blank:
            target = self.dictionary.targets[name]
            if target.participant_level:
                person.blank.add(name)
                continue
            place = self.value_place(visit, name, instance)
            before = self.stored_values.get(place) if place else None
            if before is not None:
                person.outcomes["values", "removed"] += 1
                person.removed.append(removal(at, target, before, self.faults.phi_record))
                written.append((*key, name, None, before, instance, None))

    def value_place(
        self, visit: PlannedVisit, name: str, instance: int
    ) -> tuple[int, int, int] | None:
        """Where a stored visit holds (or would hold) its instance of a field's variable."""
        variable = self.dictionary.targets[name].variable
        if not visit.id or variable is None:
            return None
        return visit.id, stored_id(variable.id), instance

    def load_values(self, visit_ids: list[int]) -> None:
        """What the batch's stored visits hold of the variables imported."""
        targets = self.dictionary.targets.values()
        variables = [stored_id(t.variable.id) for t in targets if t.variable is not None]
        found = phenotypes.stored_values(self.session, variables=variables, visits=visit_ids)
        self.stored_values, self.stored_observed = {}, {}
        for v in found:
            self.stored_values[v.visit_id, v.variable_id, v.instance] = v.stored
            if v.instance:
                self.stored_observed[v.visit_id, v.variable_id, v.instance] = v.observed_on
        for m in phenotype_missing.stored_missing(
            self.session, variables=variables, visits=visit_ids
        ):
            self.stored_values[m.visit_id, m.variable_id, m.instance] = Missing(m.code)
