"""Writing a checked REDCap plan into the caller's transaction, a batch of rows at a time,
through the services each record belongs to, skipping what is already there: importing the same
files again changes nothing, and a changed value is changed with its before and after in the
audit trail. A plan that skips the faulty is written without its faulty records, and the audit
trail says how many it left out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import flush, insert_many, prepare_bulk_writing
from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.phenotypes import Stored
from biobank.domain.vocabulary import Sex
from biobank.models import (
    Participant,
    ParticipantIdentity,
    PhenotypeValue,
    PhenotypeVariable,
    Visit,
    utcnow,
)
from biobank.services import audit, consent, external_ids, participants, phenotypes
from biobank.services.imports.common import (
    ImportReport,
    LeftOut,
    batches,
    refuse_a_faulty_plan,
    stored_id,
)
from biobank.services.imports.redcap.planning import (
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
    writer = _Writer(session, actor, plan)
    prepare_bulk_writing(session)
    writer.create_documents()
    writer.create_variables()
    left_out = plan.left_out
    for rows, batch_people, batch_visits, batch_values in unspool(plan.spool):
        people = [code for code in batch_people if code not in left_out]
        visits = [key for key in batch_visits if key[0] not in left_out]
        values = [value for value in batch_values if value[0] not in left_out]
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
    if report.left_out is not None and (report.left_out.records or report.left_out.fields):
        writer.record_left_out(report.left_out)
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
                phenotypes.add_variable(
                    self.session, actor=self.actor, definition=target.definition
                )
                self.variables[name] = phenotypes.get_variable(self.session, name)

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
        new_ids: list[external_ids.NewExternalId] = []
        adopted: list[external_ids.NewExternalId] = []
        for record in records:
            person = plan.people[record]
            facts = person.facts
            sex = facts["sex"].value if "sex" in facts else None
            born = facts["birth_year"].value if "birth_year" in facts else None
            wanted = identity_of(facts)
            if person.id is None:
                columns = {c: v for c, v in wanted.items() if c != "other"}
                added = participants.add_participant(
                    self.session,
                    actor=self.actor,
                    study=plan.study.code,
                    sex=sex or Sex.unknown,
                    birth_year=born,
                    **columns,
                )
                person.id, self.codes[record] = added.id, added.code
                new_ids.append(external_ids.NewExternalId(added.id, record, plan.record_id_phi))
                if "other" in wanted:
                    self.set_identity(person, wanted)
                continue
            row = known[person.id]
            self.codes[record] = row.code
            if person.id not in have_record_id:
                adopted.append(external_ids.NewExternalId(person.id, record, plan.record_id_phi))
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
            for (code, label), added in zip(new, rows, strict=True):
                visit = plan.visits[code, label]
                visit.id = found[added["participant_id"], label]
                visit.stored_date = visit.visit_date
                entries.append(
                    {"action": "visit.add", "entity": "visit", "entity_id": visit.id,
                     "after": added | {"id": visit.id}, "reason": self.reason}
                )  # fmt: skip
            audit.record_many(self.session, actor=self.actor, entries=entries)
        for code, label in keys:
            visit = plan.visits[code, label]
            if visit.id is None or visit.visit_date in (None, visit.stored_date):
                continue
            row = self.session.get_one(Visit, visit.id)
            before = audit.snapshot(row)
            row.visit_date = visit.visit_date
            self.changed(row, "visit.change", before, {"participant": self.codes[code]})
            moved = select(PhenotypeValue).where(
                PhenotypeValue.visit_id == row.id, PhenotypeValue.observed_on != row.visit_date
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
        """New values through `add_values` (one statement a participant); changed ones
        through `store_value`, which records each before and after."""
        plan = self.plan
        people = self.loaded(Participant, {stored_id(plan.people[v[0]].id) for v in values})
        visits = self.loaded(Visit, {stored_id(plan.visits[v[0], v[1]].id) for v in values if v[1]})
        new: dict[int, list[tuple[Visit | None, PhenotypeVariable, Stored]]] = defaultdict(list)
        for code, label, name, stored, added in values:
            person_id = stored_id(plan.people[code].id)
            person = people[person_id]
            visit = visits[stored_id(plan.visits[code, label].id)] if label is not None else None
            if added:
                new[person_id].append((visit, self.variables[name], stored))
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
