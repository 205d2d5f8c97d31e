"""Which tubes a specimen request would take, line by line, as of a day: what a reviewer sees
before deciding and what an approval reserves (one rule for both, so the approval takes what
the review showed, consent asked again that day).

A line's candidates are the request's cohort narrowed to the line's type and quantity (a tube
must hold what the line needs: its minimum, or its aliquots' volume), or the tubes a request
lists; only available ones (a tube reserved for anything else is not), and only those whose
participant's consent allows every use of the request that day (the others are counted by
reason). A participant keeps a floor of tubes of each type (`floor`, the site's
`request_floor`: by default the last one, never sent away), then gives one tube (the fullest)
or every tube that fits. A tube serves one line: the lines are met in their order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, func

from biobank.domain.cohort import CohortQuery, narrowed
from biobank.domain.vocabulary import RequestTake, SpecimenStatus
from biobank.models import Participant, RequestedSpecimen, RequestLine, Specimen, SpecimenRequest
from biobank.services.cohorts import Tally, select_cohort
from biobank.services.consent_checks import consent_decisions

DEFAULT_FLOOR = 1


class Candidate(NamedTuple):
    specimen_id: int
    participant_id: int
    accession_id: str
    specimen_type: str
    quantity: float
    sex: str


class Excluded(BaseModel):
    specimens: int
    participants: int


class LineReview(BaseModel):
    """What a line would take, and what it would leave."""

    line_no: int
    wants: str
    candidates: int  # tubes that fit, before consent
    tubes: int  # would take
    participants: int  # would give
    per_participant: dict[str, int]  # "1 tube": participants giving one…
    strata: dict[str, dict[str, int]]  # "sex: female" → tubes and participants
    used_up: int  # tubes the line empties (a whole tube sent, or too little left to split)
    left_for_others: int  # tubes of the type the giving participants keep
    participants_left_without: int  # giving participants who keep none of the type
    excluded: dict[str, Excluded]  # reason → how many tubes and participants


class Selection(BaseModel):
    """A request's review as of a day: each line's, and the tubes each would take."""

    code: str
    as_of: date
    floor: int
    lines: list[LineReview]
    chosen: dict[int, list[int]]  # line number → specimen ids, fullest first

    @property
    def tubes(self) -> int:
        return sum(line.tubes for line in self.lines)


class _LeftOut:
    """The tubes a line leaves out, by reason: how many, and of how many participants."""

    def __init__(self) -> None:
        self.tubes: Counter[str] = Counter()
        self.people: dict[str, set[int]] = defaultdict(set)
        self.counted: Counter[str] = Counter()  # participants a cohort's tally counted

    def add(self, reason: str, person: int, tubes: int = 1) -> None:
        self.tubes[reason] += tubes
        self.people[reason].add(person)

    def add_tally(self, tally: Tally) -> None:
        for reason, counts in tally.exclusions().items():
            self.tubes[reason] += counts["specimens"]
            self.counted[reason] += counts["participants"]

    def read(self) -> dict[str, Excluded]:
        return {
            reason: Excluded(
                specimens=count, participants=len(self.people[reason]) + self.counted[reason]
            )
            for reason, count in sorted(self.tubes.items())
        }


def wants(line: RequestLine) -> str:
    """A line as a reviewer reads it: `SER ≥ 0.5, one per participant`."""
    what = line.specimen_type or "the tubes listed"
    if line.aliquots and line.aliquot_volume:
        what += f", {line.aliquots} × {line.aliquot_volume:g} aliquots"
    elif line.min_quantity:
        what += f" ≥ {line.min_quantity:g}"
    return what + (", one per participant" if line.take is RequestTake.one else ", every tube")


class Wanting(Protocol):
    """A line as asked (`requests.LineWant`) or as stored (`RequestLine`)."""

    min_quantity: float | None
    aliquots: int | None
    aliquot_volume: float | None


def needed(line: Wanting) -> float | None:
    """The quantity a tube must hold to meet the line: its minimum, or its aliquots."""
    split = (line.aliquots or 0) * (line.aliquot_volume or 0)
    return max(line.min_quantity or 0, split) or None


def select_for_request(
    session: Session,
    *,
    request: SpecimenRequest,
    lines: list[RequestLine],
    as_of: date,
    floor: int = DEFAULT_FLOOR,
) -> Selection:
    """The request's selection as of `as_of` (see the module)."""
    taken: set[int] = set()
    given: Counter[tuple[int, str]] = Counter()  # what earlier lines take of each one's type
    reviews, chosen = [], {}
    kept_back = f"floor: each participant keeps {floor} tube{'s' if floor != 1 else ''} of a type"
    for line in lines:
        left = _LeftOut()
        found = (
            _cohort_candidates(session, request, line, as_of, left)
            if request.cohort_query is not None
            else _listed_candidates(session, request, line, as_of, left)
        )
        found = [c for c in found if c.specimen_id not in taken]
        held = _held(session, {(c.participant_id, c.specimen_type) for c in found})
        by_person: dict[int, list[Candidate]] = defaultdict(list)
        for c in sorted(found, key=lambda c: (-c.quantity, c.accession_id)):
            by_person[c.participant_id].append(c)
        picked: list[Candidate] = []
        for person, theirs in by_person.items():
            limit = 1 if line.take is RequestTake.one else len(theirs)
            kind = (person, theirs[0].specimen_type)
            count = min(limit, max(0, held[kind] - given[kind] - floor))
            picked += theirs[:count]
            given[kind] += count
            if count < limit:
                left.add(kept_back, person, limit - count)
        taken.update(c.specimen_id for c in picked)
        chosen[line.line_no] = [c.specimen_id for c in picked]
        reviews.append(_review(line, len(found), picked, held, left))
    return Selection(code=request.code, as_of=as_of, floor=floor, lines=reviews, chosen=chosen)


def _review(
    line: RequestLine,
    found: int,
    picked: list[Candidate],
    held: dict[tuple[int, str], int],
    left: _LeftOut,
) -> LineReview:
    per_person = Counter(c.participant_id for c in picked)
    used_up = Counter(c.participant_id for c in picked if _empties(line, c))
    types = {c.participant_id: c.specimen_type for c in picked}
    kept = {person: held[person, types[person]] - used_up[person] for person in per_person}
    strata: dict[str, dict[str, int]] = {}
    for sex in sorted({c.sex for c in picked}):
        mine = [c for c in picked if c.sex == sex]
        people = len({c.participant_id for c in mine})
        strata[f"sex: {sex}"] = {"tubes": len(mine), "participants": people}
    return LineReview(
        line_no=line.line_no,
        wants=wants(line),
        candidates=found + sum(left.tubes.values()),
        tubes=len(picked),
        participants=len(per_person),
        per_participant={
            f"{n} tube{'s' if n != 1 else ''}": count
            for n, count in sorted(Counter(per_person.values()).items())
        },
        strata=strata,
        used_up=sum(used_up.values()),
        left_for_others=sum(kept.values()),
        participants_left_without=sum(1 for left in kept.values() if left <= 0),
        excluded=left.read(),
    )


def _empties(line: RequestLine, c: Candidate) -> bool:
    """Whether taking the line from a tube leaves it empty: a whole tube is sent; a split
    leaves what is over, too little for another aliquot empties it."""
    if not (line.aliquots and line.aliquot_volume):
        return True
    return c.quantity - line.aliquots * line.aliquot_volume < line.aliquot_volume


def _held(session: Session, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """How many available tubes of each type each participant holds."""
    keys = set(keys)
    people = {person for person, _ in keys}
    types = {kind for _, kind in keys}
    if not keys:
        return {}
    query = (
        sa.select(col(Specimen.participant_id), col(Specimen.specimen_type), func.count())
        .where(
            col(Specimen.participant_id).in_(people),
            col(Specimen.specimen_type).in_(types),
            col(Specimen.status) == SpecimenStatus.available,
        )
        .group_by(col(Specimen.participant_id), col(Specimen.specimen_type))
    )
    return defaultdict(int, {(p, t): n for p, t, n in session.execute(query)})


def _cohort_candidates(
    session: Session,
    request: SpecimenRequest,
    line: RequestLine,
    as_of: date,
    left: _LeftOut,
) -> list[Candidate]:
    """The request's cohort narrowed to the line, consent asked as of `as_of`."""
    assert request.cohort_query is not None
    filters: dict[str, Any] = {"specimen_types": [line.specimen_type], "statuses": ["available"]}
    if (need := needed(line)) is not None:
        filters["min_quantity"] = need
    query = narrowed(CohortQuery.model_validate(request.cohort_query), CohortQuery(**filters))
    tally = Tally()
    found = [
        Candidate(s.specimen_id, s.participant_id, s.specimen.accession_id,
                  s.specimen.specimen_type, s.specimen.quantity, s.specimen.sex)
        for s in select_cohort(session, query=query, uses=request.uses, as_of=as_of, tally=tally)
    ]  # fmt: skip
    left.add_tally(tally)
    return found


def _listed_candidates(
    session: Session,
    request: SpecimenRequest,
    line: RequestLine,
    as_of: date,
    left: _LeftOut,
) -> list[Candidate]:
    """The tubes the request lists: available ones whose consent allows the uses as of
    `as_of` (the others counted by why not)."""
    rows = session.execute(
        sa.select(Specimen, col(Participant.sex))
        .join(RequestedSpecimen, col(RequestedSpecimen.specimen_id) == Specimen.id)
        .join(Participant, col(Participant.id) == Specimen.participant_id)
        .where(col(RequestedSpecimen.request_id) == request.id)
        .order_by(col(Specimen.accession_id))
    ).all()
    decisions = consent_decisions(
        session, participant_ids={s.participant_id for s, _ in rows}, uses=request.uses, as_of=as_of
    )
    need = needed(line)
    found = []
    for tube, sex in rows:
        decision = decisions[tube.participant_id]
        if tube.status is not SpecimenStatus.available:
            reason = tube.status.value.replace("_", " ")
        elif not decision.allowed:
            reason = decision.reason()
        elif need is not None and tube.quantity < need:
            reason = f"holds less than {need:g}"
        else:
            assert tube.id is not None
            found.append(Candidate(tube.id, tube.participant_id, tube.accession_id,
                                   tube.specimen_type, tube.quantity, str(sex)))  # fmt: skip
            continue
        left.add(reason, tube.participant_id)
    return found
