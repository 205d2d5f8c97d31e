"""Writing a checked REDCap plan into the caller's transaction, a batch of rows at a time,
through the services each record belongs to, skipping what is already there: importing the same
files again changes nothing, and a changed value is changed with its before and after in the
audit trail, as is a missing-data code taking a value's place or the other way round; a value
(or code) whose cell is blank now is removed, audited with what it was and why. A plan that
skips the faulty is written without its faulty records, and the audit trail says how many it
left out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import flush, insert_many, new_ids, one_of, prepare_bulk_writing
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import Stored
from biobank.domain.vocabulary import ParticipantStatus, Sex
from biobank.models import (
    Participant,
    ParticipantIdentity,
    PhenotypeValue,
    PhenotypeVariable,
    Visit,
    utcnow,
)
from biobank.services import (
    audit,
    consent,
    external_ids,
    participants,
    phenotype_missing,
    phenotype_variables,
    phenotypes,
    withdrawals,
)
from biobank.services.imports.common import (
    ImportReport,
    LeftOut,
    batches,
    refuse_a_faulty_plan,
    stored_id,
)
from biobank.services.imports.heap import frozen_heap
from biobank.services.imports.redcap.planning import (
    Given,
    Missing,
    NewValue,
    Person,
    RedcapPlan,
    identity_changes,
    identity_of,
)
from biobank.tabular import unspool

SOURCE = "redcap"
Loaded = TypeVar("Loaded", Participant, Visit)


def write_redcap(
    session: Session,
    *,
    actor: Actor,
    plan: RedcapPlan,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Write a checked plan into the caller's transaction, a batch of rows at a time (each
    participant with the batch of its first row), all of it or (skipping the faulty) all but
    the faulty records; `progress` is told how many more rows were read after each batch."""
    require(actor, Permission.import_data)
    report = plan.report
    if not plan.writable:
        refuse_a_faulty_plan(report)
    with frozen_heap():
        writer = _Writer(session, actor, plan)
        prepare_bulk_writing(session)
        writer.create_documents()
        writer.create_variables()
        left_out = plan.left_out
        for rows, people, visits, values in unspool(plan.spool):
            if left_out:
                people = [code for code in people if code not in left_out]
                visits = [key for key in visits if key[0] not in left_out]
                values = [value for value in values if value[0] not in left_out]
            plan.people.load([*people, *(key[0] for key in visits), *{v[0] for v in values}])
            plan.visits.load([*visits, *{(v[0], v[1]) for v in values if v[1] is not None}])
            writer.write_people(people)
            writer.write_visits(visits)
            writer.write_values(  # the visits' values and the participants' own, in one go
                values
                + [
                    (code, None, name, _given(plan.people[code], name), before, 0, None)
                    for code in people
                    for name, before in plan.people[code].new_values
                ]
            )
            writer.write_signatures(people)
            plan.people.release()  # the batch's participants and visits, with their new ids
            plan.visits.release()
            if progress:
                progress(rows)
        if report.left_out is not None and (report.left_out.records or report.left_out.fields):
            writer.record_left_out(report.left_out)
    return report


def _given(person: Person, name: str) -> Given | None:
    """What the file gives of a participant-level field: None when it is blank now."""
    fact = person.facts.get(f"value:{name}")
    return fact.value if fact is not None else None


class _Owner(NamedTuple):
    """A participant as a bulk load of its values reads it (`phenotypes.ValueOwner`)."""

    id: int
    code: str


class _At(NamedTuple):
    """A visit as a bulk load of its values reads it (`phenotypes.ValueVisit`)."""

    id: int
    visit_date: date
    label: str


class _Writer:
    def __init__(self, session: Session, actor: Actor, plan: RedcapPlan):
        self.session = session
        self.actor = actor
        self.plan = plan
        self.reason = f"REDCap import of {plan.report.records}"
        self.cleared = f"blank in REDCap project export {plan.report.records}"
        self.variables: dict[str, PhenotypeVariable] = {
            name: t.variable for name, t in plan.targets.items() if t.variable is not None
        }
        self.codes: dict[str, str] = {}  # record ID → participant code, as each is written

    def record_left_out(self, left_out: LeftOut) -> None:
        """One audit entry for what the import left out: how many records and rows, and which
        fields (never a record ID: it may be PHI)."""
        audit.record(
            self.session,
            actor=self.actor,
            action="study.import_left_out",
            entity="study",
            entity_id=self.plan.study.id,
            after={
                "records_left_out": left_out.records,
                "rows_left_out": left_out.rows,
                "fields_left_out": sorted(left_out.fields),
            },
            reason=self.reason,
        )

    def create_documents(self) -> None:
        given = self.plan.mapping.consent
        if given is None:  # no consent in this project: no documents
            return
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
                phenotype_variables.add_variable(
                    self.session, actor=self.actor, definition=target.definition
                )
                variable = target.definition.name  # the field's name, unless renamed
                self.variables[name] = phenotype_variables.get_variable(self.session, variable)

    def changed(
        self,
        row: Participant | Visit | PhenotypeValue,
        action: str,
        before: dict[str, Any],
        label: dict[str, str],
    ) -> None:
        """Write a changed row and its audit entry: before, and after with `label` (whose the
        row is, by code and visit label)."""
        self.session.add(row)
        flush(self.session)
        audit.record(
            self.session,
            actor=self.actor,
            action=action,
            entity=row.__table__.name,
            entity_id=row.id,
            before=before,
            after=label | audit.snapshot(row),
            reason=self.reason,
        )

    def write_people(self, records: list[str]) -> None:
        """New participants (each with a code of ours) with their identity; changed sex, birth
        year and identity; then each new or adopted participant's record ID."""
        plan = self.plan
        stored = [stored_id(plan.people[r].id) for r in records if plan.people[r].id is not None]
        have_record_id = external_ids.have_external_id(self.session, stored)
        known = self.loaded(Participant, set(stored))
        new_ids = self.add_people([r for r in records if plan.people[r].id is None])
        adopted: list[external_ids.NewExternalId] = []
        for record in records:
            person = plan.people[record]
            if record in self.codes:  # just added
                continue
            facts = person.facts
            sex = facts["sex"].value if "sex" in facts else None
            born = facts["birth_year"].value if "birth_year" in facts else None
            wanted = identity_of(facts)
            row = known[stored_id(person.id)]
            self.codes[record] = row.code
            if person.id not in have_record_id:
                adopted.append(
                    external_ids.NewExternalId(stored_id(person.id), record, plan.record_id_phi)
                )
            if person.outcome == "changed":
                before = audit.snapshot(row)
                row.sex = sex or row.sex
                row.birth_year = born if born is not None else row.birth_year
                self.changed(row, "participant.change", before, {"participant": row.code})
            if wanted:
                self.set_identity(person, wanted)
        for given, reason in ((new_ids, self.reason), (adopted, f"{self.reason}: adopted by code")):
            external_ids.add_external_ids(
                self.session, actor=self.actor, study=plan.study, ids=given, reason=reason
            )

    def add_people(self, records: list[str]) -> list[external_ids.NewExternalId]:
        """New participants in bulk (one statement each for them and their identities), each
        with a code of ours, audited as `participants.add_participant` audits them; the record
        IDs they are to be given."""
        if not records:
            return []
        plan, now = self.plan, utcnow()
        require(self.actor, Permission.register_participants)
        wanted = {r: identity_of(plan.people[r].facts) for r in records}
        if any(wanted.values()):
            require(self.actor, Permission.read_phi)
        codes = self.new_codes(records, {r: w.get("mrn") for r, w in wanted.items()})
        table = Participant.__table__
        rows = []
        for record in records:
            facts = plan.people[record].facts
            rows.append(
                {"study_id": plan.study.id, "code": codes[record],
                 "sex": facts["sex"].value if "sex" in facts else Sex.unknown,
                 "birth_year": facts["birth_year"].value if "birth_year" in facts else None,
                 "enrolled_on": None, "status": ParticipantStatus.active, "created_at": now}
            )  # fmt: skip
        ids = self.inserted(table, rows, table.c.code)
        identities = []
        for record in records:
            person = plan.people[record]
            person.id, self.codes[record] = ids[codes[record]], codes[record]
            if wanted[record]:
                empty = dict.fromkeys(["mrn", "family_name", "given_name", "date_of_birth"])
                identities.append(empty | {"other": None} | wanted[record])
                identities[-1]["participant_id"] = person.id
        self.audit_added("participant.add", table, rows, ids, "code")
        table = ParticipantIdentity.__table__
        found = self.inserted(table, identities, table.c.participant_id)
        self.audit_added("participant_identity.add", table, identities, found, "participant_id")
        return [
            external_ids.NewExternalId(ids[codes[record]], record, plan.record_id_phi)
            for record in records
        ]

    def new_codes(self, records: list[str], mrns: dict[str, Any]) -> dict[str, str]:
        """Record → a new pseudonymous code (`participants.new_participant_code`): none taken,
        drawn twice, or holding the participant's MRN."""
        codes: dict[str, str] = {}
        while len(codes) < len(records):
            drawn = {
                r: participants.new_participant_code(self.plan.study.code)
                for r in records
                if r not in codes
            }
            column = col(Participant.code)
            query = sa.select(column).where(one_of(self.session, column, drawn.values()))
            taken = set(self.session.execute(query).scalars()) | set(codes.values())
            for record, code in drawn.items():
                mrn = mrns.get(record)
                if code not in taken and not (mrn and mrn.upper() in code):
                    codes[record] = code
                    taken.add(code)
        return codes

    def inserted(
        self, table: sa.Table, rows: list[dict[str, Any]], key: sa.Column[Any]
    ) -> dict[Any, int]:
        """Insert rows in one statement; each one's new id by its unique key, read back."""
        if not rows:
            return {}
        insert_many(self.session, table, rows)
        query = sa.select(key, table.c.id).where(
            one_of(self.session, key, [row[key.key] for row in rows])
        )
        return {k: i for k, i in self.session.execute(query)}

    def audit_added(
        self,
        action: str,
        table: sa.Table,
        rows: list[dict[str, Any]],
        ids: dict[Any, int],
        key: str,
    ) -> None:
        """Each added row's audit entry, its `after` the whole row, as `audit.snapshot`."""
        audit.record_many(
            self.session,
            actor=self.actor,
            entries=(
                {"action": action, "entity": table.name, "entity_id": ids[row[key]],
                 "after": row | {"id": ids[row[key]]}, "reason": self.reason}
                for row in rows
            ),
        )  # fmt: skip

    def set_identity(self, person: Person, wanted: dict[str, Any]) -> None:
        """Add the identity the file gives, or write what it changes; each audited."""
        identity = (
            person.identity
            or self.session.exec(
                select(ParticipantIdentity).where(ParticipantIdentity.participant_id == person.id)
            ).first()
        )
        if identity is None:
            identity, changes = ParticipantIdentity(participant_id=stored_id(person.id)), wanted
        else:
            changes = identity_changes(identity, wanted)
        if not changes:
            return
        action = "participant_identity.change" if identity.id else "participant_identity.add"
        with audit.audited(self.session, identity, actor=self.actor, action=action,
                           entity="participant_identity", reason=self.reason):  # fmt: skip
            for column, value in changes.items():
                setattr(identity, column, value)

    def write_visits(self, keys: list[tuple[str, str]]) -> None:
        """New visits in one statement, audited as `add_visit` audits them; a changed date
        moves the observation date of the visit's values with it."""
        plan, table = self.plan, Visit.__table__
        new = [k for k in keys if plan.visits[k].id is None]
        ids, now = new_ids(self.session, table, len(new)), utcnow()  # none to read back
        rows = [
            {
                "id": visit_id,
                "participant_id": plan.people[code].id,
                "label": label,
                "visit_date": plan.visits[code, label].visit_date,
                "created_at": now,
            }
            for visit_id, (code, label) in zip(ids, new, strict=True)
        ]
        if rows:
            insert_many(self.session, table, rows)
            for visit_id, key in zip(ids, new, strict=True):
                visit = plan.visits[key]
                visit.id, visit.stored_date = visit_id, visit.visit_date
            audit.record_many(
                self.session,
                actor=self.actor,
                entries=(
                    {"action": "visit.add", "entity": "visit", "entity_id": added["id"],
                     "after": added, "reason": self.reason}
                    for added in rows
                ),
            )  # fmt: skip
        for code, label in keys:
            visit = plan.visits[code, label]
            if visit.id is None or visit.visit_date in (None, visit.stored_date):
                continue
            row = self.session.get_one(Visit, visit.id)
            before = audit.snapshot(row)
            row.visit_date = visit.visit_date
            self.changed(row, "visit.change", before, {"participant": self.codes[code]})
            moved = select(PhenotypeValue).where(  # a repeat instance's has a date of its own
                PhenotypeValue.visit_id == row.id,
                PhenotypeValue.instance == 0,
                PhenotypeValue.observed_on != row.visit_date,
            )
            for value in self.session.exec(moved).all():
                before = audit.snapshot(value)
                value.observed_on = row.visit_date
                self.changed(
                    value,
                    "phenotype_value.change",
                    before,
                    {"participant": self.codes[code], "visit": label},
                )

    def write_values(self, values: list[NewValue]) -> None:
        """New values in one statement (`add_many_values`), missing-data codes in one a
        participant (`add_missing`); the others one at a time, each audited with what was
        there: a changed value through `store_value`, a code through `record_missing` (each
        removes the other), a cell blank now through `remove_value` or `remove_missing`."""
        plan, session, actor = self.plan, self.session, self.actor
        # each record's and visit's stored id, looked up once: a visit has a dozen values
        person_ids = {c: stored_id(plan.people[c].id) for c in dict.fromkeys(v[0] for v in values)}
        visit_ids = {
            (c, label): stored_id(plan.visits[c, label].id)
            for c, label in dict.fromkeys((v[0], v[1]) for v in values)
            if label is not None
        }
        people = {
            i: _Owner(i, code)
            for i, code in self.columns(Participant.__table__, "code", ids=set(person_ids.values()))
        }
        visits = {
            i: _At(i, day, label)
            for i, day, label in self.columns(
                Visit.__table__, "visit_date", "label", ids=set(visit_ids.values())
            )
        }
        new: list[phenotypes.NewPhenotypeValue] = []
        codes: dict[int, list[tuple[phenotypes.ValueVisit | None, PhenotypeVariable, str, int]]]
        codes = defaultdict(list)
        for code, label, name, given, before, instance, observed in values:
            person_id = person_ids[code]
            owner, variable = people[person_id], self.variables[name]
            at = visits[visit_ids[code, label]] if label is not None else None
            if before is None and isinstance(given, Stored):
                new.append(
                    phenotypes.NewPhenotypeValue(owner, at, variable, given, instance, observed)
                )
                continue
            if before is None and isinstance(given, Missing):
                codes[person_id].append((at, variable, given.code, instance))
                continue
            # a change, one at a time through the services, which take the rows themselves
            person = session.get_one(Participant, person_id)
            visit = session.get_one(Visit, at.id) if at is not None else None
            if given is None:
                remove = (
                    phenotype_missing.remove_missing
                    if isinstance(before, Missing)
                    else phenotypes.remove_value
                )
                remove(session, actor=actor, participant=person, variable=variable, visit=visit,
                       reason=self.cleared, instance=instance)  # fmt: skip
            elif isinstance(given, Missing):
                phenotype_missing.record_missing(
                    session, actor=actor, participant=person, variable=variable, visit=visit,
                    code=given.code, source=SOURCE, reason=self.reason, instance=instance,
                )  # fmt: skip
            else:
                phenotypes.store_value(
                    session, actor=actor, participant=person, variable=variable, visit=visit,
                    stored=given, source=SOURCE, instance=instance, observed_on=observed,
                )  # fmt: skip
        phenotypes.add_many_values(session, actor=actor, values=new, source=SOURCE)
        for person_id, missing in codes.items():
            phenotype_missing.add_missing(
                session, actor=actor, participant=people[person_id], codes=missing, source=SOURCE
            )

    def columns(self, table: sa.Table, *names: str, ids: set[int]) -> Iterator[tuple[Any, ...]]:
        """Rows' ids and columns `names`, a thousand rows per query: what a bulk load reads of
        them (`phenotypes.ValueOwner`, `ValueVisit`), without the cost of loading each row."""
        for chunk in batches(sorted(ids)):
            query = sa.select(table.c.id, *(table.c[n] for n in names))
            yield from self.session.execute(query.where(table.c.id.in_(chunk)))

    def loaded(self, model: type[Loaded], ids: set[int]) -> dict[int, Loaded]:
        """Rows by id, a thousand per query."""
        found: dict[int, Loaded] = {}
        for chunk in batches(sorted(ids)):
            rows = self.session.exec(select(model).where(col(model.id).in_(chunk)))
            found |= {stored_id(r.id): r for r in rows}
        return found

    def write_signatures(self, codes: list[str]) -> None:
        given = self.plan.mapping.consent
        if given is None:  # no consent in this project: no signatures
            return
        for code in codes:
            for s in self.plan.people[code].signatures.values():
                if s.stored is None:
                    consent.record_consent(
                        self.session,
                        actor=self.actor,
                        participant=self.codes[code],
                        document=given.document,
                        version=s.version,
                        signed_on=s.signed_on,
                        answers=s.answers,
                    )
                for statement, day in s.withdrawn.items():  # through the withdrawal service
                    withdrawals.withdraw(
                        self.session,
                        actor=self.actor,
                        participant=self.codes[code],
                        withdrawn_on=day,
                        requested_by="REDCap",
                        disposition="keep_no_use",
                        statement=statement,
                        reason=f"{self.reason}: {s.columns[statement]} turned from yes to no",
                    )
