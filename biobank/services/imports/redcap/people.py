"""What only a REDCap records export as a whole shows, once every row is read: each
participant's identity (MRNs unique), dates and facts against each other and the database, and
each consent signature against its document version; and what the import adds and changes of
the records it keeps (those without a faulty row, when it skips the faulty)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.domain.phenotypes import Stored
from biobank.domain.vocabulary import PhenotypeScope
from biobank.errors import ValidationError
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentStatement,
    ParticipantConsent,
    ParticipantIdentity,
)
from biobank.services import participants, phenotypes
from biobank.services.imports.common import ImportReport, batches, stored_id
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, Place, hidden
from biobank.services.imports.redcap.mapping import ConsentMapping
from biobank.services.imports.redcap.planning import (
    Fact,
    Person,
    PlannedVisit,
    Signature,
    Tally,
    identity_changes,
    identity_of,
    outcome_of,
)


class PeopleCheck:
    """The participants the records name, and their consent signatures, checked as a whole."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        tally: Tally,
        faults: Faults,
        dictionary: Dictionary,
        people: dict[str, Person],
        visits: dict[tuple[str, str], PlannedVisit],
    ):
        self.session = session
        self.report = report
        self.tally = tally
        self.faults = faults
        self.dictionary = dictionary
        self.mapping = dictionary.mapping
        self.people = people
        self.visits = visits
        self.places = {visit.at.row: visit.at for visit in visits.values()}
        self.documents: dict[str, tuple[date, list[str]]] = {}  # to create: see `RedcapPlan`

    def check(self) -> None:
        """Check everything."""
        self.check_people()
        self.check_signatures()

    def keep(self, left_out: frozenset[str]) -> dict[str, tuple[date, list[str]]]:
        """Count what the participants not `left_out` add and change; the consent document
        versions their signatures need, each taking effect on the earliest of them."""
        earliest: dict[str, date] = {}
        for code, person in self.people.items():
            if code in left_out:
                continue
            self.tally.add(person.outcomes)
            for s in person.signatures.values():
                if s.version in self.documents:
                    earliest[s.version] = min(s.signed_on, earliest.get(s.version, s.signed_on))
        self.documents = {
            version: (earliest[version], asked)
            for version, (_, asked) in self.documents.items()
            if version in earliest
        }
        given = self.dictionary.consent
        if given is not None:
            self.report.documents = [f"{given.document} {v}" for v in self.documents]
        return self.documents

    def fault(
        self, code: str, row: int, line: int, column: str, value: object, reason: str
    ) -> None:
        """A fault of one of the participant's rows."""
        place = self.places.get(row) or Place(row, line, participant=code)
        self.faults.at(place, column, value, reason)

    def person_fault(self, code: str, fact: Fact, reason: str) -> None:
        self.fault(code, fact.row, fact.line, fact.column, fact.raw, reason)

    def check_people(self) -> None:
        """Identity (MRNs unique, dates that fit), birth year against visits, and what each
        participant's facts add or change."""
        stored = {p.id: p for p in self.people.values() if p.id is not None}
        for chunk in batches(stored):
            for identity in self.session.exec(
                select(ParticipantIdentity).where(
                    col(ParticipantIdentity.participant_id).in_(chunk)
                )
            ):
                stored[identity.participant_id].identity = identity
        mrns: dict[str | None, str] = {}  # MRN → the record that first gives it
        for code, person in self.people.items():
            mrn = person.facts.get("mrn")
            if mrn is None:
                continue
            first = mrns.setdefault(mrn.value, code)
            if first != code:
                named = self.faults.record_named(first, self.people[first].row)
                self.person_fault(code, mrn, f"{named} has the same MRN")
        for given in batches(mrns):
            for participant_id, mrn in self.session.execute(
                sa.select(
                    col(ParticipantIdentity.participant_id), col(ParticipantIdentity.mrn)
                ).where(col(ParticipantIdentity.mrn).in_(given))
            ):
                person = self.people[mrns[mrn]]
                if participant_id != person.id:
                    self.person_fault(
                        mrns[mrn], person.facts["mrn"], "another participant has this MRN"
                    )
        participant_values = self.stored_participant_values()
        by_visit: defaultdict[str, list[PlannedVisit]] = defaultdict(list)
        for (code, _), visit in self.visits.items():
            by_visit[code].append(visit)
        for code, person in self.people.items():
            self.check_person(code, person, by_visit[code], participant_values)

    def check_person(
        self,
        code: str,
        person: Person,
        visits: list[PlannedVisit],
        participant_values: dict[tuple[int, int], Stored],
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
                self.person_fault(code, wrong, hidden(error.message, date_of_birth))
        counted = person.outcomes
        for visit in visits:
            if visit.visit_date and birth_year and visit.visit_date.year < birth_year:
                self.faults.at(
                    visit.at,
                    self.mapping.visit_date,
                    str(visit.visit_date),
                    "the visit date is before birth",
                )
            after = visit.visit_date or visit.stored_date
            counted["visits", outcome_of(visit.stored_date, after)] += 1
        sex = facts.get("sex")
        if person.id is None:
            person.outcome = "added"
        elif (sex and sex.value != person.sex) or (born and born.value != person.birth_year):
            person.outcome = "changed"
        counted["participants", person.outcome] += 1
        wanted = identity_of(facts)
        if wanted:
            have = person.identity
            changes = have is None or identity_changes(have, wanted)
            counted["identities", outcome_of(have, wanted if changes else have)] += 1
        for key, given in facts.items():
            if key.startswith("value:"):
                target = self.dictionary.targets[key[6:]]
                before = (
                    participant_values.get((person.id, stored_id(target.variable.id)))
                    if person.id and target.variable
                    else None
                )
                outcome = outcome_of(before, given.value)
                counted["values", outcome] += 1
                if outcome != "unchanged":
                    person.new_values.append((target.field.name, outcome == "added"))

    def stored_participant_values(self) -> dict[tuple[int, int], Stored]:
        """(participant, variable) → what is stored of the participant-level variables."""
        ids = [p.id for p in self.people.values() if p.id is not None]
        variables = [
            stored_id(t.variable.id)
            for t in self.dictionary.targets.values()
            if t.variable is not None and t.variable.scope is PhenotypeScope.participant
        ]
        found: dict[tuple[int, int], Stored] = {}
        for chunk in batches(ids):
            for value in phenotypes.stored_values(
                self.session, variables=variables, participants=chunk, participant_level=True
            ):
                found[value.participant_id, value.variable_id] = value.stored
        return found

    def check_signatures(self) -> None:
        """Each signature against its document version (found, or created from the earliest
        signature of it with the statements its signatures answer) and what is recorded."""
        given = self.dictionary.consent
        if given is None:
            return
        signatures = [(code, s) for code, p in self.people.items() for s in p.signatures.values()]
        new: dict[str, list[Signature]] = defaultdict(list)
        for _, s in signatures:
            if s.version not in self.dictionary.stored_documents:
                new[s.version].append(s)
        for version, signed in new.items():
            answered = {code for s in signed for code in s.answers}
            asked = [code for code in given.statements.values() if code in answered]
            self.documents[version] = (min(s.signed_on for s in signed), asked)
        recorded = self.stored_signatures(given.document)
        for code, s in signatures:
            person = self.people[code]
            s.stored = recorded.get((person.id, s.version, s.signed_on)) if person.id else None
            self.check_signature(code, s, person, given)

    def check_signature(
        self, code: str, s: Signature, person: Person, given: ConsentMapping
    ) -> None:
        """One signature's dates and answers against its document, its participant and what is
        recorded of it (a signed consent is never changed)."""

        def fault(column: str, value: str, reason: str) -> None:
            self.fault(code, s.row, s.line, column, value, reason)

        document = f"{given.document} {s.version}"
        effective_on, asked = (
            self.dictionary.stored_documents.get(s.version) or self.documents[s.version]
        )
        if s.signed_on < effective_on:
            fault(given.signed_on, str(s.signed_on), f"{document} took effect on {effective_on}")
        born = person.facts.get("birth_year")
        birth_year = born.value if born else person.birth_year
        if birth_year and s.signed_on.year < birth_year:
            fault(given.signed_on, str(s.signed_on), "the signature date is before birth")
        for statement in asked:
            if statement not in s.answers:
                column = s.columns.get(statement, given.version)
                fault(column, "", f"no answer ({document} asks {statement})")
        for statement in s.answers.keys() - set(asked):
            shown = str(int(s.answers[statement]))
            fault(s.columns[statement], shown, f"{document} does not ask {statement}")
        stored = s.stored
        if stored is None or stored == s.answers:
            person.outcomes["consents", outcome_of(stored, s.answers)] += 1  # added, or same
            return
        differ = sorted(s.answers.items() ^ stored.items())
        reason = (
            f"{document} signed {s.signed_on} is recorded with other answers "
            f"({', '.join(sorted({k for k, _ in differ}))}); a signed consent is not changed "
            "by an import"
        )
        statement = differ[0][0]
        answer = s.answers.get(statement)
        shown = "" if answer is None else str(int(answer))
        fault(s.columns.get(statement, given.version), shown, reason)

    def stored_signatures(
        self, document: str
    ) -> dict[tuple[int | None, str, date], dict[str, bool]]:
        """(participant, version, date) → answers of the `document`'s recorded signatures."""
        ids = [p.id for p in self.people.values() if p.id is not None and p.signatures]
        found: dict[tuple[int | None, str, date], dict[str, bool]] = defaultdict(dict)
        for chunk in batches(ids):
            for pid, version, signed_on, statement, answer in self.session.execute(
                sa.select(
                    col(ParticipantConsent.participant_id),
                    col(ConsentDocument.version),
                    col(ParticipantConsent.signed_on),
                    col(ConsentStatement.code),
                    col(ConsentAnswer.answer),
                )
                .join(ConsentDocument, col(ConsentDocument.id) == ParticipantConsent.document_id)
                .join(
                    ConsentAnswer,
                    col(ConsentAnswer.participant_consent_id) == ParticipantConsent.id,
                )
                .join(ConsentStatement, col(ConsentStatement.id) == ConsentAnswer.statement_id)
                .where(
                    col(ParticipantConsent.participant_id).in_(chunk),
                    col(ConsentDocument.code) == document,
                )
            ):
                found[pid, version, signed_on][statement] = answer
        return found
