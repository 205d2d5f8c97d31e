"""What only a REDCap records export as a whole shows, once every row is read: each
participant's identity (MRNs unique), dates and facts against each other and the database, and
each consent signature against its document version; and what the import adds and changes of
the records it keeps (those without a faulty row, when it skips the faulty)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.domain.vocabulary import PhenotypeScope
from biobank.errors import ValidationError
from biobank.models import (
    ConsentAnswer,
    ConsentDocument,
    ConsentStatement,
    ParticipantConsent,
    ParticipantIdentity,
)
from biobank.services import participants, phenotype_missing, phenotypes
from biobank.services.imports.common import ImportReport, batches, stored_id
from biobank.services.imports.redcap.consent_changes import ConsentChanges
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, Place, hidden
from biobank.services.imports.redcap.mapping import ConsentMapping
from biobank.services.imports.redcap.planning import (
    Fact,
    Given,
    Missing,
    Person,
    PlannedVisit,
    Signature,
    Tally,
    Target,
    identity_changes,
    identity_of,
    outcome_of,
    removal,
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
        withdrawn: list[str] = []  # listed by name (and by row when the record ID is PHI)
        for code, person in self.people.items():
            if code in left_out:
                continue
            self.tally.add(person.outcomes)
            for s in person.signatures.values():
                if s.version in self.documents:
                    earliest[s.version] = min(s.signed_on, earliest.get(s.version, s.signed_on))
                withdrawn += [
                    f"{self.faults.record_named(code, s.row)} {statement} as of {day} "
                    f"({s.columns[statement]})"
                    for statement, day in s.withdrawn.items()
                ]
        if withdrawn:
            self.report.notices.append(
                "consent withdrawn, an answer turned from yes to no: " + "; ".join(withdrawn)
            )
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
        participant_values: dict[tuple[int, int], Given],
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
                    self.mapping.date_field(visit.at.event or ""),
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

        def stored(target: Target) -> Given | None:
            if not person.id or target.variable is None:
                return None
            return participant_values.get((person.id, stored_id(target.variable.id)))

        given_names = [key[6:] for key in facts if key.startswith("value:")]
        for name in given_names:
            target = self.dictionary.targets[name]
            before = stored(target)
            outcome = outcome_of(before, facts[f"value:{name}"].value)
            counted["values", outcome] += 1
            if outcome != "unchanged":
                person.new_values.append((name, before))
        place = self.places.get(person.row)
        for name in sorted(person.blank.difference(given_names)):  # blank in every row holding it
            target = self.dictionary.targets[name]
            before = stored(target)
            if before is not None and place is not None:  # no place: a faulty record
                counted["values", "removed"] += 1
                person.new_values.append((name, before))
                person.removed.append(removal(place, target, before, self.faults.phi_record))

    def stored_participant_values(self) -> dict[tuple[int, int], Given]:
        """(participant, variable) → what is stored of the participant-level variables: a
        value or a missing-data code."""
        ids = [p.id for p in self.people.values() if p.id is not None]
        variables = [
            stored_id(t.variable.id)
            for t in self.dictionary.targets.values()
            if t.variable is not None and t.variable.scope is PhenotypeScope.participant
        ]
        found: dict[tuple[int, int], Given] = {}
        for chunk in batches(ids):
            for value in phenotypes.stored_values(
                self.session, variables=variables, participants=chunk, participant_level=True
            ):
                found[value.participant_id, value.variable_id] = value.stored
            for m in phenotype_missing.stored_missing(
                self.session, variables=variables, participants=chunk, participant_level=True
            ):
                found[m.participant_id, m.variable_id] = Missing(m.code)
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
        changes = ConsentChanges(self.session, self.people)
        for code, s in signatures:
            self.check_signature(code, s, self.people[code], given, changes)

    def check_signature(
        self,
        code: str,
        s: Signature,
        person: Person,
        given: ConsentMapping,
        changes: ConsentChanges,
    ) -> None:
        """One signature's dates and answers against its document, its participant and what is
        recorded of it: a signed consent is never changed, but an answer turned from yes to no
        is a withdrawal of that statement (`consent_changes`)."""

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
        differ = sorted({k for k, _ in s.answers.items() ^ (stored or s.answers).items()})
        withdrawing = given.on_change == "withdraw"
        # what no withdrawal says: a "no" (or none) that is "yes" now, an answer gone
        other = [k for k in differ if stored and (not stored.get(k) or k not in s.answers)]
        if stored is not None and differ and (other or not withdrawing):
            hint = (
                "an answer turned from no to yes needs a new signature (a new version or date)"
                if other
                else 'the mapping\'s [consent] on_change = "refuse" leaves a withdrawal to you'
            )
            reason = (
                f"{document} signed {s.signed_on} is recorded with other answers "
                f"({', '.join(differ)}); a signed consent is not changed by an import: {hint}"
            )
            statement = (other or differ)[0]
            answer = s.answers.get(statement)
            shown = "" if answer is None else str(int(answer))
            fault(s.columns.get(statement, given.version), shown, reason)
            return
        person.outcomes["consents", "added" if stored is None else "unchanged"] += 1
        for statement, day in changes.turned(person, s).items():
            if day is not None and withdrawing:
                s.withdrawn[statement] = day
                person.outcomes["consents", "withdrawn"] += 1
                continue
            reason = (
                f"{statement} turned from yes to no; the mapping's [consent] on_change = "
                '"refuse" leaves a withdrawal to you'
                if day is not None
                else f"{statement} is granted by a later signature; the answer of {document} "
                f"signed {s.signed_on} is not changed by an import"
            )
            fault(s.columns[statement], "0", reason)

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
