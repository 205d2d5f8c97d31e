"""Asking the consent rule (`biobank.domain.consent`) of the database: the one place every
capability that uses a participant's specimens or data checks it, as of a date."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from functools import cache
from typing import cast

import sqlalchemy as sa
from sqlmodel import Session, col, select

from biobank.db import one_of
from biobank.domain.consent import Decision, SignedAnswer, Withdrawal, decide, withdrawn_entirely
from biobank.errors import ConsentDenied, ValidationError
from biobank.models import (
    ConsentAnswer,
    ConsentStatement,
    ConsentWithdrawal,
    Participant,
    ParticipantConsent,
)


def consent_acts(
    session: Session,
    participant_ids: Iterable[int] | None,
    statements: Iterable[str] | None = None,
) -> tuple[dict[int, list[SignedAnswer]], dict[int, list[Withdrawal]]]:
    """Every signed answer and withdrawal of the participants (all when None); with
    `statements`, only what bears on those (withdrawals of everything included)."""
    answers: dict[int, list[SignedAnswer]] = defaultdict(list)
    withdrawals: dict[int, list[Withdrawal]] = defaultdict(list)
    answer_query = (
        sa.select(
            col(ParticipantConsent.participant_id),
            col(ConsentStatement.code),
            col(ParticipantConsent.signed_on),
            col(ConsentAnswer.answer),
            col(ConsentAnswer.participant_consent_id),  # the signature's id: its order
        )
        .join(ConsentAnswer, col(ConsentAnswer.participant_consent_id) == ParticipantConsent.id)
        .join(ConsentStatement, col(ConsentStatement.id) == ConsentAnswer.statement_id)
    )
    withdrawal_query = sa.select(
        col(ConsentWithdrawal.participant_id),
        col(ConsentStatement.code),
        col(ConsentWithdrawal.withdrawn_on),
        col(ConsentWithdrawal.id),
    ).outerjoin(ConsentStatement, col(ConsentStatement.id) == ConsentWithdrawal.statement_id)
    if participant_ids is not None:
        ids = list(participant_ids)
        answer_query = answer_query.where(
            one_of(session, col(ParticipantConsent.participant_id), ids)
        )
        withdrawal_query = withdrawal_query.where(
            one_of(session, col(ConsentWithdrawal.participant_id), ids)
        )
    if statements is not None:
        codes = list(statements)
        answer_query = answer_query.where(col(ConsentStatement.code).in_(codes))
        withdrawal_query = withdrawal_query.where(
            sa.or_(
                col(ConsentWithdrawal.statement_id).is_(None),
                col(ConsentStatement.code).in_(codes),
            )
        )
    for pid, code, signed_on, answer, order in session.execute(answer_query):
        answers[pid].append(SignedAnswer(code, signed_on, answer, order))
    for pid, statement, withdrawn_on, key in session.execute(withdrawal_query):
        assert key is not None  # a stored row's
        withdrawals[pid].append(Withdrawal(statement, withdrawn_on, key))
    return answers, withdrawals


def judged_today(as_of: date | None, *, what: str) -> date:
    """The day consent is asked as of for anything new (an export, a preview, a reservation,
    a hand-over): today. A past day answers only for a recorded run (`export replay`) or in
    the admins' report of what was allowed then (`cohort allowed-on`), never for new data."""
    today = date.today()
    if as_of is not None and as_of != today:
        raise ValidationError(
            f"{what} asks consent as of today ({today}), not {as_of}: a recorded export runs "
            "again as it was with `biobank export replay RUN`; what was allowed on an earlier "
            "day is the admins' report `biobank cohort allowed-on DAY`",
            field="as_of",
            value=as_of.isoformat(),
        )
    return today


def known_uses(session: Session, uses: Iterable[str]) -> list[str]:
    """The uses, upper-cased and checked against the consent statements."""
    wanted = [u.strip().upper() for u in uses]
    known = set(session.exec(select(ConsentStatement.code)).all())
    unknown = [u for u in wanted if u not in known]
    if unknown:
        raise ValidationError(
            f"unknown use {unknown[0]!r} (consent statements: {', '.join(sorted(known))})",
            field="uses",
            value=unknown[0],
        )
    if not wanted:
        raise ValidationError("name at least one intended use", field="uses")
    return wanted


def consent_decisions(
    session: Session,
    *,
    participant_ids: Iterable[int] | None,
    uses: Iterable[str],
    as_of: date,
) -> dict[int, Decision]:
    """The decision for each participant (every participant when `participant_ids` is None)."""
    uses = known_uses(session, uses)
    if participant_ids is None:
        answers, withdrawals = consent_acts(session, None, uses)
        ids = cast(list[int], list(session.exec(select(Participant.id))))  # stored rows' keys
    else:
        ids = list(participant_ids)
        answers, withdrawals = consent_acts(session, ids, uses)
    return {pid: decide(uses, answers[pid], withdrawals[pid], as_of) for pid in ids}


def require_consent(
    session: Session, *, participant_id: int, uses: Iterable[str], as_of: date, what: str
) -> None:
    """Refuse (ConsentDenied) unless the participant's consent allows every use."""
    decision = consent_decisions(session, participant_ids=[participant_id], uses=uses, as_of=as_of)[
        participant_id
    ]
    if not decision.allowed:
        code = session.get_one(Participant, participant_id).code
        raise ConsentDenied(
            f"{what}: consent of {code} as of {as_of} does not allow it ({decision.reason()})",
            field="uses",
            value=",".join(decision.denied),
        )


@cache
def _full_withdrawal() -> sa.Select[tuple[int]]:
    """Built once: every accession asks it (building costs more than running it)."""
    withdrawals = ConsentWithdrawal.__table__
    return (
        sa.select(withdrawals.c.id)
        .where(withdrawals.c.participant_id == sa.bindparam("participant"))
        .where(withdrawals.c.statement_id.is_(None))
        .limit(1)
    )


def refuse_if_withdrawn(
    session: Session, *, participant_id: int, what: str, as_of: date | None = None
) -> None:
    """Refuse new work (collection, processing, taking a tube out) on the specimens of a
    participant who has withdrawn everything."""
    if session.execute(_full_withdrawal(), {"participant": participant_id}).first() is None:
        return  # the common case, in one indexed look-up
    as_of = as_of or date.today()
    answers, withdrawals = consent_acts(session, [participant_id])
    found = withdrawn_entirely(answers[participant_id], withdrawals[participant_id], as_of)
    if found is not None:
        code = session.get_one(Participant, participant_id).code
        raise ConsentDenied(
            f"{what}: {code} withdrew consent on {found.withdrawn_on}",
            field="participant",
            value=code,
        )
