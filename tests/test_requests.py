"""Specimen requests, on both engines: a PI asks for tubes of a cohort or a list, a reviewer
sees what the request would take and leave, then approves it whole or line by line (the
tubes reserved, consent asked again that day) or rejects it; cancelling or expiry gives the
tubes back. Bad input names its field and changes nothing."""

from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import RequestStatus, RequestTake, Role, SpecimenStatus
from biobank.errors import InvalidTransition, NotFound, PermissionDenied, ValidationError
from biobank.models import Specimen, SpecimenRequest, SpecimenReservation, utcnow
from biobank.services import request_review, requests, reservations, withdrawals
from biobank.services.requests import LineWant, RequestDraft

TODAY = date.today()


def _draft(**changes) -> RequestDraft:
    fields = {
        "title": "Anti-dsDNA in lupus nephritis",
        "uses": ["GENETIC"],
        "project": "LN genetics",
        "irb_reference": "IRB-2026-114",
        "irb_expires_on": TODAY + timedelta(days=365),
        "agreement_reference": "MTA-77",
        "agreement_expires_on": TODAY + timedelta(days=200),
        "needed_by": TODAY + timedelta(days=60),
        "destination_institution": "Lupus Lab, Example University",
        "destination_address": "1 Research Way, Springfield",
        "destination_contact": "Dr Reyes, +1 555 0100",
        "cohort": CohortQuery(study="SLE"),
        "lines": [LineWant(specimen_type="SER", min_quantity=100)],
    }
    return RequestDraft(**(fields | changes))


def _create(engine, actor, **changes) -> str:
    with uow(engine) as session:
        return requests.create_request(session, actor=actor, draft=_draft(**changes)).code


def _submitted(engine, actor, **changes) -> str:
    code = _create(engine, actor, **changes)
    with uow(engine) as session:
        requests.submit_request(session, actor=actor, code=code)
    return code


def _statuses(engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT accession_id, status FROM specimen")).all()
    return dict(rows)


def test_a_request_is_reviewed_approved_and_reserved(cohort_db, actors):
    pi, admin = actors[Role.pi], actors[Role.admin]
    code = _submitted(cohort_db, pi)
    assert code == f"REQ-{TODAY.year}-0001"
    with uow(cohort_db) as session:
        review = request_review.review_request(session, actor=admin, code=code)
    (line,) = review.lines
    # P-0003 refused genetic use, P-0004 withdrew; the others give one of their two tubes
    assert (line.tubes, line.participants, line.used_up, line.left_for_others) == (3, 3, 3, 3)
    assert line.per_participant == {"1 tube": 3} and line.participants_left_without == 0
    assert line.strata == {"sex: female": {"tubes": 3, "participants": 3}}
    assert {reason: e.participants for reason, e in line.excluded.items()} == {
        "GENETIC refused": 1,
        "GENETIC withdrawn": 1,
    }
    with uow(cohort_db) as session:
        decision = request_review.approve_request(
            session, actor=admin, code=code, reason="meets the access policy"
        )
    assert decision.reserved == {1: 3}
    assert decision.request.status is RequestStatus.approved
    assert decision.request.reserved_tubes == 3
    assert [e.status_after for e in decision.request.events] == [
        "draft", "submitted", "under_review", "approved",
    ]  # fmt: skip
    with uow(cohort_db, readonly=True) as session:
        held = session.exec(select(SpecimenReservation)).all()
        assert {r.request for r in held} == {code}
        assert all(r.expires_at is not None and r.request_line_id for r in held)
        expiry = held[0].expires_at
        assert expiry is not None and (expiry - utcnow()).days in (29, 30)
    assert sorted(_statuses(cohort_db).values()).count("reserved") == 3


def test_lines_are_approved_one_by_one_and_a_tube_serves_one_line(cohort_db, actors):
    pi, admin = actors[Role.pi], actors[Role.admin]
    lines = [
        LineWant(specimen_type="SER", take=RequestTake.one),
        LineWant(specimen_type="SER", take=RequestTake.all),
    ]
    code = _submitted(cohort_db, pi, lines=lines, uses=["FUTURE_RESEARCH"])
    with uow(cohort_db) as session:
        review = request_review.review_request(session, actor=admin, code=code, floor=0)
    # four participants allowed (P-0004 withdrew): line 1 one tube each, line 2 the others
    assert [(line.tubes, line.participants) for line in review.lines] == [(4, 4), (4, 4)]
    assert set(review.chosen[1]).isdisjoint(review.chosen[2])
    with uow(cohort_db) as session:
        with pytest.raises(ValidationError, match="rejecting a line names its reason"):
            request_review.approve_request(
                session, actor=admin, code=code, reason="ok", lines=[1], floor=0
            )
    with uow(cohort_db) as session:
        decision = request_review.approve_request(
            session, actor=admin, code=code, reason="first line only", lines=[1],
            reject_reason="the second aliquot is kept for the registry", floor=0,
        )  # fmt: skip
    assert decision.request.status is RequestStatus.partly_approved
    assert [(line.status.value, line.approved_tubes) for line in decision.request.lines] == [
        ("approved", 4), ("rejected", 0),
    ]  # fmt: skip


def test_the_floor_keeps_the_last_tube_of_each_participant(cohort_db, actors):
    code = _submitted(cohort_db, actors[Role.pi], lines=[LineWant(specimen_type="SER", take="all")])
    with uow(cohort_db) as session:
        (line,) = request_review.preview_request(session, actor=actors[Role.pi], code=code).lines
    assert line.tubes == 3 and line.per_participant == {"1 tube": 3}
    kept = "floor: each participant keeps 1 tube of a type"
    assert line.excluded[kept].specimens == 3 and line.excluded[kept].participants == 3


def test_consent_is_asked_again_at_approval(cohort_db, actors):
    pi, admin = actors[Role.pi], actors[Role.admin]
    code = _submitted(cohort_db, pi)
    with uow(cohort_db) as session:
        assert request_review.review_request(session, actor=admin, code=code).tubes == 3
        withdrawals.withdraw(
            session, actor=admin, participant="P-0001", withdrawn_on=TODAY,
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    with uow(cohort_db) as session:
        decision = request_review.approve_request(session, actor=admin, code=code, reason="ok")
    assert decision.reserved == {1: 2}


def test_a_list_request_names_each_tube_it_cannot_have_and_changes_nothing(cohort_db, actors):
    pi = actors[Role.pi]
    tubes = sorted(_statuses(cohort_db))
    with uow(cohort_db, readonly=True) as session:
        owner = dict(
            session.execute(
                sa.text(
                    "SELECT s.accession_id, p.code FROM specimen s "
                    "JOIN participant p ON p.id = s.participant_id"
                )
            ).all()
        )
    refused = next(t for t in tubes if owner[t] == "P-0003")  # refused genetic use
    allowed = [t for t in tubes if owner[t] in ("P-0001", "P-0002")]
    cases = [
        ({"accessions": [refused]}, "may not be requested for GENETIC"),
        ({"accessions": ["SLE-NOPE"]}, "SLE-NOPE"),
        ({"accessions": allowed, "lines": [LineWant(min_quantity=5000)]}, "less than line 1"),
        ({"irb_expires_on": TODAY - timedelta(days=1)}, "IRB approval IRB-2026-114 expired"),
        ({"agreement_expires_on": TODAY - timedelta(days=1)}, "agreement MTA-77 expired"),
        ({"needed_by": TODAY - timedelta(days=3)}, "that day is past"),
        ({"uses": ["TIME_TRAVEL"]}, "TIME_TRAVEL"),
        ({"lines": []}, "at least one line"),
        ({"lines": [LineWant(specimen_type="XYZ")]}, "unknown specimen type"),
        ({"lines": [LineWant(specimen_type="SER", aliquots=2)]}, "give both"),
        ({"title": " "}, "needs its title"),
    ]
    for changes, message in cases:
        if "accessions" in changes:
            changes = {"cohort": None} | changes
        with uow(cohort_db) as session, pytest.raises((ValidationError, NotFound), match=message):
            requests.create_request(session, actor=pi, draft=_draft(**changes))
    with cohort_db.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM specimen_request")).scalar() == 0
    code = _create(cohort_db, pi, cohort=None, accessions=allowed, lines=[])
    with uow(cohort_db, readonly=True) as session:
        shown = requests.show_request(session, actor=pi, code=code)
    assert shown.accessions == sorted(allowed) and shown.lines[0].specimen_type is None


def test_who_may_see_and_change_a_request(cohort_db, actors, engine):
    pi, admin, tech = actors[Role.pi], actors[Role.admin], actors[Role.technician]
    code = _create(cohort_db, pi)
    with uow(cohort_db) as session:
        with pytest.raises(PermissionDenied):
            requests.create_request(session, actor=tech, draft=_draft())
        with pytest.raises(PermissionDenied):
            request_review.review_request(session, actor=pi, code=code)
        with pytest.raises(InvalidTransition, match="is draft: it cannot become under review"):
            request_review.review_request(session, actor=admin, code=code)
    from biobank.services.identity import actor_for
    from biobank.services.users import add_user

    with uow(cohort_db) as session:
        add_user(session, actor=admin, username="pi2", role=Role.pi, pin="5555")
    with uow(cohort_db) as session:
        other = actor_for(session, username="pi2", workstation="test-bench")
    with uow(cohort_db) as session:
        with pytest.raises(PermissionDenied, match="another user"):
            requests.show_request(session, actor=other, code=code)
        with pytest.raises(PermissionDenied):
            requests.withdraw_request(session, actor=other, code=code, reason="mine now")
        assert requests.list_requests(session, actor=other) == []
        assert [r.code for r in requests.list_requests(session, actor=admin)] == [code]


def test_cancelling_or_expiry_gives_the_tubes_back(cohort_db, actors):
    pi, admin = actors[Role.pi], actors[Role.admin]
    first, second = _submitted(cohort_db, pi), None
    with uow(cohort_db) as session:
        request_review.approve_request(session, actor=admin, code=first, reason="ok")
    with uow(cohort_db) as session:
        with pytest.raises(ValidationError, match="needs its reason"):
            requests.withdraw_request(session, actor=pi, code=first, reason="")
        cancelled = requests.withdraw_request(session, actor=pi, code=first, reason="grant ended")
    assert cancelled.status is RequestStatus.cancelled and cancelled.reserved_tubes == 0
    assert "reserved" not in _statuses(cohort_db).values()
    second = _submitted(cohort_db, pi)
    with uow(cohort_db) as session:
        request_review.approve_request(session, actor=admin, code=second, reason="ok")
    with uow(cohort_db) as session:
        assert reservations.release_expired(session, actor=admin) == []  # not yet
        later = utcnow() + timedelta(days=31)
        assert len(reservations.release_expired(session, actor=admin, now=later)) == 3
    assert "reserved" not in _statuses(cohort_db).values()
    with uow(cohort_db, readonly=True) as session:
        ends = session.exec(select(SpecimenReservation.end_reason)).all()
        assert sum("expired unpicked" in (e or "") for e in ends) == 3
        events = session.execute(
            sa.text("SELECT count(*) FROM specimen_event WHERE event_type = 'released'")
        ).scalar()
        assert events == 6


def test_an_approval_after_the_irb_expired_is_refused_and_changes_nothing(cohort_db, actors):
    code = _submitted(cohort_db, actors[Role.pi])
    with uow(cohort_db) as session:  # time passes: the approval lapses before the review
        row = session.exec(select(SpecimenRequest).where(SpecimenRequest.code == code)).one()
        row.irb_expires_on = TODAY - timedelta(days=1)
        session.add(row)
    before = _statuses(cohort_db)
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="IRB approval"):
        request_review.approve_request(session, actor=actors[Role.admin], code=code, reason="ok")
    assert _statuses(cohort_db) == before
    with uow(cohort_db, readonly=True) as session:
        assert requests.show_request(session, actor=actors[Role.pi], code=code).status is (
            RequestStatus.submitted
        )
        assert (
            session.exec(select(Specimen).where(Specimen.status == SpecimenStatus.reserved)).all()
            == []
        )
