"""A consent answer REDCap now gives as "no" where what is recorded grants that statement.

A participant who takes back a "yes" has withdrawn that statement, as of the day it changed:
the day of a later signature that answers "no", or, when the answer of a signature already
recorded was changed in REDCap (same version, same day), the day of the import (REDCap does
not say when). The import records it through the withdrawal service, unless the mapping's
`[consent] on_change = "refuse"` leaves it to a person (`people` then refuses it).

Nothing else turns: a "no" that becomes "yes" needs a new signature (a new version or date),
which is recorded as any signature is; a "no" in a signature older than one that answers the
statement again is history, which the later signature decides; and a statement already refused
or withdrawn is left as it is, so importing the same files again changes nothing."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlmodel import Session

from biobank.domain.consent import SignedAnswer, Withdrawal, statement_status
from biobank.services.consent_checks import consent_acts
from biobank.services.imports.common import batches
from biobank.services.imports.redcap.planning import Person, Signature


class ConsentChanges:
    """What is recorded of the consent of the participants whose signatures the records give,
    and which statements those signatures turn from yes to no."""

    def __init__(self, session: Session, people: dict[str, Person]):
        self.today = date.today()
        self.answers: dict[int, list[SignedAnswer]] = defaultdict(list)
        self.withdrawals: dict[int, list[Withdrawal]] = defaultdict(list)
        ids = [p.id for p in people.values() if p.id is not None and p.signatures]
        for chunk in batches(ids):
            answers, withdrawals = consent_acts(session, chunk)
            for pid in chunk:
                self.answers[pid] += answers.get(pid, [])
                self.withdrawals[pid] += withdrawals.get(pid, [])

    def turned(self, person: Person, s: Signature) -> dict[str, date | None]:
        """Statement → the day its "yes" turned "no" (see the module); None when a later
        signature grants it, so that a changed answer of an older one cannot be recorded."""
        recorded = self.answers.get(person.id, []) if person.id is not None else []
        gone = self.withdrawals.get(person.id, []) if person.id is not None else []
        others = [t for t in person.signatures.values() if t is not s and t.stored is None]
        as_of = s.signed_on if s.stored is None else self.today
        found: dict[str, date | None] = {}
        for statement, answer in s.answers.items():
            if answer or (s.stored is not None and not s.stored.get(statement)):
                continue  # a "yes", or a "no" recorded as it is
            new = [
                SignedAnswer(statement, t.signed_on, t.answers[statement])
                for t in others
                if statement in t.answers
            ]
            acts = [*recorded, *new]
            if not statement_status(statement, acts, gone, as_of).allowed:
                continue  # not granted then: refused or withdrawn already
            if not any(a.statement == statement and a.signed_on > s.signed_on for a in acts):
                found[statement] = as_of
            elif s.stored is not None:
                found[statement] = None
        return found
