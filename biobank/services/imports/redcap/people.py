"""What only a REDCap records export as a whole shows, once every row is read: each
participant's identity (MRNs unique), dates and facts against each other and the database, and
each consent signature against its document version; and what the import adds and changes of
the records it keeps (those without a faulty row, when it skips the faulty). The participants
are read from the scratch file they are kept in (`Kept`) a batch at a time, in the order the
records name them, once for each check that needs them all."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
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
from biobank.services.imports.common import (
    BATCH_ROWS,
    MAX_LISTED_FAULTS,
    ImportReport,
    Removed,
    ScratchFile,
    batches,
    stored_id,
)
from biobank.services.imports.redcap.consent_changes import ConsentChanges
from biobank.services.imports.redcap.dictionary import Dictionary
from biobank.services.imports.redcap.faults import Faults, Place, hidden
from biobank.services.imports.redcap.mapping import ConsentMapping
from biobank.services.imports.redcap.planning import (
    Fact,
    Given,
    Kept,
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
        scratch: ScratchFile,
        people: Kept[str, Person],
        visits: Kept[tuple[str, str], PlannedVisit],
    ):
        self.session = session
        self.report = report
        self.tally = tally
        self.faults = faults
        self.dictionary = dictionary
        self.mapping = dictionary.mapping
        self.scratch = scratch
        self.people = people
        self.visits = visits
        self.places: dict[int, Place] = {}  # the places of the visits of the participants checked
        self.documents: dict[str, tuple[date, list[str]]] = {}  # to create: see `RedcapPlan`

    def check(self) -> None:
        """Check everything."""
        self.check_mrns()
        for chunk in self.people.chunks():
            self.check_people(dict(chunk))
        self.check_signatures()

    def load_places(self, records: Iterable[str]) -> dict[str, list[PlannedVisit]]:
        """The visits of `records`, each record's in the order the rows name them; the places
        of their rows (for their faults) noted."""
        by_record: defaultdict[str, list[PlannedVisit]] = defaultdict(list)
        for (code, _), visit in self.visits.of_records(records):
            by_record[code].append(visit)
        self.places = {v.at.row: v.at for visits in by_record.values() for v in visits}
        return by_record

    def keep(self, left_out: frozenset[str]) -> dict[str, tuple[date, list[str]]]:
        """Count what the participants not `left_out` add and change; the consent document
        versions their signatures need, each taking effect on the earliest of them."""
        earliest: dict[str, date] = {}
        withdrawn: list[str] = []  # listed by name (and by row when the record ID is PHI)
        removed: list[Removed] = []  # the first listed, by row
        for chunk in self.people.chunks(changing=False):
            for code, person in chunk:
                if code in left_out:
                    continue
                self.tally.add(person.outcomes)
                removed += person.removed
                for s in person.signatures.values():
                    if s.version in self.documents:
                        first = earliest.get(s.version, s.signed_on)
                        earliest[s.version] = min(s.signed_on, first)
                    withdrawn += [
                        f"{self.faults.record_named(code, s.row)} {statement} as of {day} "
                        f"({s.columns[statement]})"
                        for statement, day in s.withdrawn.items()
                    ]
            removed = sorted(removed, key=lambda x: x.row)[:MAX_LISTED_FAULTS]
        self.report.removed = removed
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

    def check_mrns(self) -> None:
        """MRNs unique: in the file (each noted, in the scratch file, with the record that
        first gives it) and against the database."""
        self.scratch.file.execute(
            "CREATE TABLE mrn (value TEXT PRIMARY KEY, record TEXT, row INTEGER, id INTEGER)"
        )
        for chunk in self.people.chunks(changing=False):
            given = [(code, p, p.facts["mrn"]) for code, p in chunk if "mrn" in p.facts]
            query = "SELECT value, record, row FROM mrn WHERE value IN ({marks})"
            found = self.scratch.where_in(query, {mrn.value for _, _, mrn in given})
            first = {value: (code, row) for value, code, row in found}
            for code, person, mrn in given:
                earlier, row = first.setdefault(mrn.value, (code, person.row))
                if earlier != code:
                    named = self.faults.record_named(earlier, row)
                    self.load_places([code])
                    self.person_fault(code, mrn, f"{named} has the same MRN")
            self.scratch.file.executemany(
                "INSERT OR IGNORE INTO mrn VALUES (?, ?, ?, ?)",
                [(mrn.value, code, p.row, p.id) for code, p, mrn in given],
            )
        query = "SELECT rowid, value, record, id FROM mrn WHERE rowid > ? ORDER BY rowid LIMIT ?"
        after = 0
        while noted := self.scratch.file.execute(query, (after, BATCH_ROWS)).fetchall():
            after = noted[-1][0]
            mrns = {value: (code, i) for _, value, code, i in noted}
            for participant_id, mrn in self.session.execute(
                sa.select(
                    col(ParticipantIdentity.participant_id), col(ParticipantIdentity.mrn)
                ).where(col(ParticipantIdentity.mrn).in_(mrns))
            ):
                code, i = mrns[mrn]
                if participant_id != i:
                    self.load_places([code])
                    mrn_fact = self.people[code].facts["mrn"]
                    self.person_fault(code, mrn_fact, "another participant has this MRN")
        self.people.release()

    def check_people(self, people: dict[str, Person]) -> None:
        """A batch of participants: identity (dates that fit), birth year against visits, and
        what each participant's facts add or change."""
        stored = {p.id: p for p in people.values() if p.id is not None}
        for identity in self.session.exec(
            select(ParticipantIdentity).where(col(ParticipantIdentity.participant_id).in_(stored))
        ):
            stored[identity.participant_id].identity = identity
        participant_values = self.stored_participant_values([*stored])
        by_visit = self.load_places(people)
        for code, person in people.items():
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

    def stored_participant_values(self, ids: list[int]) -> dict[tuple[int, int], Given]:
        """(participant, variable) → what is stored of the participant-level variables of the
        participants `ids`: a value or a missing-data code."""
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
                if not value.instance:  # the import writes no repeat instance of these
                    found[value.participant_id, value.variable_id] = value.stored
            for m in phenotype_missing.stored_missing(
                self.session, variables=variables, participants=chunk, participant_level=True
            ):
                if not m.instance:
                    found[m.participant_id, m.variable_id] = Missing(m.code)
        return found

    def check_signatures(self) -> None:
        """Each signature against its document version (found, or created from the earliest
        signature of it with the statements its signatures answer) and what is recorded."""
        given = self.dictionary.consent
        if given is None:
            return
        new: dict[str, tuple[date, set[str]]] = {}  # version → its earliest day, what is answered
        for chunk in self.people.chunks(changing=False):
            for _, p in chunk:
                for s in p.signatures.values():
                    if s.version not in self.dictionary.stored_documents:
                        day, answered = new.setdefault(s.version, (s.signed_on, set()))
                        new[s.version] = (min(day, s.signed_on), answered | s.answers.keys())
        for version, (day, answered) in new.items():
            asked = [code for code in given.statements.values() if code in answered]
            self.documents[version] = (day, asked)
        for chunk in self.people.chunks():
            people = dict(chunk)
            signatures = [(code, s) for code, p in chunk for s in p.signatures.values()]
            if not signatures:
                continue
            self.load_places(people)
            recorded = self.stored_signatures(given.document, people.values())
            for code, s in signatures:
                person = people[code]
                s.stored = recorded.get((person.id, s.version, s.signed_on)) if person.id else None
            changes = ConsentChanges(self.session, people)
            for code, s in signatures:
                self.check_signature(code, s, people[code], given, changes)

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
        self, document: str, people: Iterable[Person]
    ) -> dict[tuple[int | None, str, date], dict[str, bool]]:
        """(participant, version, date) → answers of the `document`'s recorded signatures of
        `people`."""
        ids = [p.id for p in people if p.id is not None and p.signatures]
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
