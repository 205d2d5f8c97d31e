"""What the FHIR export says of each exported participant beyond the rows
(`export.fhir_resources.ParticipantRecord`): every recorded value of the exported variables,
each once (a participant's own values, a visit's values per visit, a repeated form's per
filling) with the day it was observed, and their consent as of the export (each statement's
state, the document in force and its version, when signed).

Read for the participants of each batch of rows as the FHIR writer asks, so memory holds a
batch's records, never the cohort's (only each participant's export code, to find their id);
de-identified as the rows are (`services.deidentification`: the same variables, free text only
when identified, every date reduced to its year under Safe Harbor, visits known by codes made
for the export).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import one_of
from biobank.domain.consent import statement_status
from biobank.domain.phenotypes import READERS
from biobank.domain.vocabulary import DeidentificationMode, PhenotypeScope
from biobank.export.fhir_resources import (
    ConsentRecord,
    Day,
    Observed,
    ParticipantRecord,
    StatementConsent,
    Variable,
)
from biobank.models import (
    ConsentDocument,
    ConsentStatement,
    Participant,
    ParticipantConsent,
    PhenotypeValue,
    PhenotypeVariable,
    Visit,
)
from biobank.services.consent_checks import consent_acts
from biobank.services.deidentification import BATCH, ExportCodes, variable_columns
from biobank.tabular import chunks


class ParticipantRecords:
    """`export.fhir_resources.Records` for one export: the participants it selected (by
    internal id: a collection that may still grow as the selection streams, read again when a
    code is asked that it did not hold), its code key, mode and consent date, and the
    dictionary's variables in use."""

    def __init__(
        self,
        session: Session,
        participant_ids: Collection[int],
        *,
        key: str,
        mode: DeidentificationMode,
        as_of: date,
        variables: list[PhenotypeVariable],
    ) -> None:
        self._session = session
        self._mode = mode
        self._as_of = as_of
        self._codes = ExportCodes(key)
        exported = dict(variable_columns(variables, mode))  # variable name → its column
        self._variables = {
            v.id: Variable(
                v.name, exported[v.name], v.scope is PhenotypeScope.participant, v.category
            )
            for v in variables
            if v.name in exported
        }
        self._readers = {v.id: READERS[v.value_type] for v in variables if v.id in self._variables}
        self._selected = participant_ids
        self._ids: dict[str, int] = {}  # export code → internal id
        self._statements = list(session.exec(select(ConsentStatement.code)).all())

    def _map_new(self) -> None:
        """The codes of the selected participants not mapped yet."""
        new = sorted(set(self._selected) - set(self._ids.values()))
        if self._mode is not DeidentificationMode.identified:
            self._ids.update((self._codes.code("P", pid), pid) for pid in new)
            return
        for chunk in chunks(new, BATCH):
            query = sa.select(col(Participant.code), col(Participant.id)).where(
                one_of(self._session, col(Participant.id), chunk)
            )
            self._ids.update({code: pid for code, pid in self._session.execute(query)})

    def __call__(self, codes: Sequence[str]) -> dict[str, ParticipantRecord]:
        if any(code not in self._ids for code in codes):
            self._map_new()
        ids = {self._ids[code]: code for code in codes if code in self._ids}
        records: dict[str, ParticipantRecord] = {}
        for chunk in chunks(sorted(ids), BATCH):
            values = self._values(chunk)
            consents = self._consents(chunk)
            for pid in chunk:
                records[ids[pid]] = ParticipantRecord(tuple(values[pid]), consents[pid])
        return records

    def _day(self, day: date | None) -> Day | None:
        if day is not None and self._mode is DeidentificationMode.safe_harbor:
            return day.year
        return day

    def _values(self, chunk: list[int]) -> dict[int, list[Observed]]:
        """Each participant's values: their own first, then visit by visit in date order."""
        if not self._variables:
            return defaultdict(list)
        query = (
            sa.select(
                col(PhenotypeValue.participant_id),
                col(PhenotypeValue.variable_id),
                col(PhenotypeValue.visit_id),
                col(Visit.visit_date),
                col(PhenotypeValue.instance),
                col(PhenotypeValue.observed_on),
                col(PhenotypeValue.value_number),
                col(PhenotypeValue.value_text),
                col(PhenotypeValue.value_date),
            )
            .outerjoin(Visit, col(Visit.id) == PhenotypeValue.visit_id)
            .where(
                one_of(self._session, col(PhenotypeValue.participant_id), chunk),
                one_of(self._session, col(PhenotypeValue.variable_id), self._variables),
            )
            .order_by(
                col(PhenotypeValue.participant_id),
                col(PhenotypeValue.visit_id).is_not(None),  # their own values first
                col(Visit.visit_date),
                col(PhenotypeValue.visit_id),
                col(PhenotypeValue.variable_id),
                col(PhenotypeValue.instance),
            )
        )
        found: dict[int, list[Observed]] = defaultdict(list)
        visits: dict[int | None, str | None] = {None: None}  # visit id → its export code
        rows = self._session.execute(query).all()  # one fetch: a chunk of participants
        for pid, var_id, visit_id, visit_date, instance, observed_on, *stored in rows:
            variable = self._variables[var_id]
            value = self._shown(variable, self._readers[var_id](*stored))
            if value is None:
                continue
            visit = visits.get(visit_id)
            if visit is None and visit_id is not None:
                visit = visits[visit_id] = self._codes.code("V", visit_id)
            day = self._day(observed_on or visit_date)
            found[pid].append(Observed(variable, value, day, visit, instance))
        return found

    def _shown(self, variable: Variable, value: Any) -> Any:
        """A value as the rows show it: a date's year where its column is a year, a
        multi-choice value's codes joined by "|"."""
        if isinstance(value, list):
            return "|".join(value) if value else None
        if isinstance(value, date) and variable.column.kind == "year":
            return value.year
        return value

    def _consents(self, chunk: list[int]) -> dict[int, ConsentRecord]:
        answers, withdrawals = consent_acts(self._session, chunk)
        signed: dict[int, list[tuple[date, int, str, str, str]]] = defaultdict(list)
        query = (
            sa.select(
                col(ParticipantConsent.participant_id),
                col(ParticipantConsent.signed_on),
                col(ParticipantConsent.id),
                col(ConsentDocument.code),
                col(ConsentDocument.version),
                col(ConsentDocument.title),
            )
            .join(ConsentDocument, col(ConsentDocument.id) == ParticipantConsent.document_id)
            .where(
                one_of(self._session, col(ParticipantConsent.participant_id), chunk),
                col(ParticipantConsent.signed_on) <= self._as_of,
            )
        )
        for pid, *signature in self._session.execute(query):
            signed[pid].append(tuple(signature))
        records = {}
        for pid in chunk:
            statements = []
            for statement in self._statements:
                status = statement_status(statement, answers[pid], withdrawals[pid], self._as_of)
                statements.append(
                    StatementConsent(statement, status.state.value, self._day(status.since))
                )
            if signed[pid]:
                first, latest = min(signed[pid]), max(signed[pid])
                _, _, document, version, title = latest
                records[pid] = ConsentRecord(
                    tuple(statements), document, version, title,
                    signed=self._day(latest[0]), first_signed=self._day(first[0]),
                )  # fmt: skip
            else:
                records[pid] = ConsentRecord(tuple(statements))
        return records
