"""Whether a participant's consent allows given uses as of a date: the one rule.

Nothing here is stored as a flag; it is computed from the signed answers and withdrawals:

- Each statement (FUTURE_RESEARCH, GENETIC, …) stands on its own. Its state as of a date is
  set by the latest of the signed answers to it and the withdrawals that cover it (a
  withdrawal names one statement, or none for all), counting only those dated on or before
  that date. A later document that does not ask a statement leaves the earlier answer standing.
- A withdrawal and a signature on the same day: the withdrawal wins (the safer reading).
  A participant who signs again after withdrawing is consented again from that signature.
- A use is allowed only when that latest act is a signed "yes".

Aliquots, derivatives and pools belong to their participant, so the rule is asked per
participant and every specimen follows it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date


class StatementState(enum.StrEnum):
    granted = "granted"
    refused = "refused"
    withdrawn = "withdrawn"
    not_asked = "not_asked"


@dataclass(frozen=True)
class SignedAnswer:
    statement: str
    signed_on: date
    answer: bool
    order: int = 0  # ties on one day: the later-recorded answer counts


@dataclass(frozen=True)
class Withdrawal:
    statement: str | None  # None: everything
    withdrawn_on: date
    order: int = 0

    def covers(self, statement: str) -> bool:
        return self.statement is None or self.statement == statement


@dataclass(frozen=True)
class StatementStatus:
    statement: str
    state: StatementState
    since: date | None

    @property
    def allowed(self) -> bool:
        return self.state is StatementState.granted


@dataclass(frozen=True)
class Decision:
    """The answer for one participant: allowed only when every use is granted."""

    statuses: dict[str, StatementStatus]

    @property
    def allowed(self) -> bool:
        return all(s.allowed for s in self.statuses.values())

    @property
    def denied(self) -> dict[str, StatementState]:
        return {use: s.state for use, s in self.statuses.items() if not s.allowed}

    def reason(self) -> str:
        return ", ".join(
            f"{use} {state.value.replace('_', ' ')}" for use, state in self.denied.items()
        )


def statement_status(
    statement: str,
    answers: Iterable[SignedAnswer],
    withdrawals: Iterable[Withdrawal],
    as_of: date,
) -> StatementStatus:
    # (date, rank, order): on one day a withdrawal (rank 1) outranks a signature (rank 0).
    latest: tuple[date, int, int] | None = None
    state = StatementState.not_asked
    for a in answers:
        if a.statement == statement and a.signed_on <= as_of:
            key = (a.signed_on, 0, a.order)
            if latest is None or key > latest:
                latest = key
                state = StatementState.granted if a.answer else StatementState.refused
    for w in withdrawals:
        if w.covers(statement) and w.withdrawn_on <= as_of:
            key = (w.withdrawn_on, 1, w.order)
            if latest is None or key > latest:
                latest, state = key, StatementState.withdrawn
    return StatementStatus(statement, state, latest[0] if latest else None)


def decide(
    uses: Iterable[str],
    answers: Iterable[SignedAnswer],
    withdrawals: Iterable[Withdrawal],
    as_of: date,
) -> Decision:
    answers, withdrawals = list(answers), list(withdrawals)
    return Decision(
        {use: statement_status(use, answers, withdrawals, as_of) for use in dict.fromkeys(uses)}
    )


def withdrawn_entirely(
    answers: Iterable[SignedAnswer], withdrawals: Iterable[Withdrawal], as_of: date
) -> Withdrawal | None:
    """The withdrawal of everything in force as of `as_of`, if any: in force while no
    statement is granted again after it (by `statement_status`, the same rule as every use)."""
    answers, withdrawals = list(answers), list(withdrawals)
    full = [w for w in withdrawals if w.statement is None and w.withdrawn_on <= as_of]
    if not full:
        return None
    asked = {a.statement for a in answers}
    if any(statement_status(s, answers, withdrawals, as_of).allowed for s in asked):
        return None
    return max(full, key=lambda w: (w.withdrawn_on, w.order))
