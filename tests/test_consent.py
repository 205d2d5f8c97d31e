"""Consent: the as-of rule (examples and properties), and the services on both engines:
signatures checked field by field, withdrawals that flag every specimen, refusals, the pull
list, the impact report and who may do what."""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from inventory import FUTURE, accession_tube, participant_with_visit, seed_inventory, serum
from sqlmodel import select

from biobank.db import uow
from biobank.domain.consent import (
    SignedAnswer,
    StatementState,
    Withdrawal,
    decide,
    statement_status,
    withdrawn_entirely,
)
from biobank.domain.vocabulary import (
    DeidentificationMode,
    ParticipantStatus,
    Role,
    WithdrawalDisposition,
)
from biobank.errors import (
    AlreadyExists,
    ConsentDenied,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from biobank.models import (
    AuditEntry,
    ConsentWithdrawal,
    ExportRun,
    ExportRunSpecimen,
    Participant,
    ParticipantConsent,
    Specimen,
    SpecimenEvent,
)
from biobank.services import (
    consent,
    custody,
    lineage,
    participants,
    pulls,
    storage,
    withdrawals,
)

D0 = date(2024, 3, 1)
G, F, C = "GENETIC", "FUTURE_RESEARCH", "COMMERCIAL"


def yes(statement: str, on: date, order: int = 0) -> SignedAnswer:
    return SignedAnswer(statement, on, True, order)


def no(statement: str, on: date, order: int = 0) -> SignedAnswer:
    return SignedAnswer(statement, on, False, order)


def state(statement, answers, withdrawals, as_of) -> StatementState:
    return statement_status(statement, answers, withdrawals, as_of).state


# --- The rule, by example ---------------------------------------------------------------------


def test_before_signing_nothing_is_asked_and_on_the_day_it_is_granted():
    answers = [yes(G, D0)]
    before = statement_status(G, answers, [], D0 - timedelta(days=1))
    assert (before.state, before.since) == (StatementState.not_asked, None)
    on_the_day = statement_status(G, answers, [], D0)
    assert (on_the_day.state, on_the_day.since) == (StatementState.granted, D0)
    assert decide([G], answers, [], D0).allowed
    assert not decide([G], answers, [], D0 - timedelta(days=1)).allowed


def test_a_withdrawal_counts_from_its_date():
    answers = [yes(G, D0), yes(F, D0)]
    gone = [Withdrawal(None, D0 + timedelta(days=10))]
    assert decide([G, F], answers, gone, D0 + timedelta(days=9)).allowed
    for later in (10, 11, 400):
        decision = decide([G, F], answers, gone, D0 + timedelta(days=later))
        assert not decision.allowed
        assert decision.denied == {G: StatementState.withdrawn, F: StatementState.withdrawn}
        assert decision.reason() == "GENETIC withdrawn, FUTURE_RESEARCH withdrawn"
    since = statement_status(G, answers, gone, D0 + timedelta(days=30)).since
    assert since == D0 + timedelta(days=10)


def test_a_statement_withdrawal_leaves_the_other_statements():
    answers = [yes(G, D0), yes(F, D0)]
    gone = [Withdrawal(G, D0 + timedelta(days=5))]
    later = D0 + timedelta(days=6)
    assert state(G, answers, gone, later) is StatementState.withdrawn
    assert state(F, answers, gone, later) is StatementState.granted
    assert decide([F], answers, gone, later).allowed
    assert withdrawn_entirely(answers, gone, later) is None


def test_signing_again_after_withdrawing_grants_again():
    answers = [yes(G, D0, order=1), yes(G, D0 + timedelta(days=20), order=2)]
    gone = [Withdrawal(None, D0 + timedelta(days=10), order=1)]
    assert state(G, answers, gone, D0 + timedelta(days=19)) is StatementState.withdrawn
    assert withdrawn_entirely(answers, gone, D0 + timedelta(days=19)) == gone[0]
    again = statement_status(G, answers, gone, D0 + timedelta(days=20))
    assert (again.state, again.since) == (StatementState.granted, D0 + timedelta(days=20))
    assert withdrawn_entirely(answers, gone, D0 + timedelta(days=20)) is None


@pytest.mark.parametrize("answer_order, withdrawal_order", [(1, 2), (2, 1)])
def test_a_signature_and_a_withdrawal_on_one_day_read_as_withdrawn(answer_order, withdrawal_order):
    # whichever was recorded first, the safer reading wins
    answers = [yes(G, D0, order=answer_order)]
    gone = [Withdrawal(None, D0, order=withdrawal_order)]
    assert state(G, answers, gone, D0) is StatementState.withdrawn
    assert withdrawn_entirely(answers, gone, D0) == gone[0]


def test_a_later_document_that_does_not_ask_a_statement_leaves_the_earlier_answer():
    later = D0 + timedelta(days=100)
    answers = [yes(G, D0, order=1), yes(F, D0, order=1), no(F, later, order=2)]
    assert state(G, answers, [], later) is StatementState.granted
    assert statement_status(G, answers, [], later).since == D0
    assert state(F, answers, [], later) is StatementState.refused


def test_a_later_no_overrides_an_earlier_yes_and_a_later_yes_an_earlier_no():
    answers = [yes(G, D0, order=1), no(G, D0 + timedelta(days=1), order=2)]
    assert state(G, answers, [], D0) is StatementState.granted
    assert state(G, answers, [], D0 + timedelta(days=1)) is StatementState.refused
    answers.append(yes(G, D0 + timedelta(days=2), order=3))
    assert state(G, answers, [], D0 + timedelta(days=2)) is StatementState.granted
    # two signatures on one day: the later-recorded one counts
    same_day = [no(G, D0, order=5), yes(G, D0, order=4)]
    assert state(G, same_day, [], D0) is StatementState.refused


# --- The rule, as properties ------------------------------------------------------------------

CODES = (G, F, C)
DAYS = st.integers(min_value=0, max_value=15).map(lambda n: D0 + timedelta(days=n))


@st.composite
def histories(draw):
    """Signed answers and withdrawals of one participant; orders are unique like row ids."""
    raw_answers = draw(st.lists(st.tuples(st.sampled_from(CODES), DAYS, st.booleans()), max_size=8))
    raw_gone = draw(st.lists(st.tuples(st.sampled_from((None, *CODES)), DAYS), max_size=4))
    answers = [SignedAnswer(c, d, a, order=i) for i, (c, d, a) in enumerate(raw_answers)]
    gone = [Withdrawal(c, d, order=i) for i, (c, d) in enumerate(raw_gone)]
    return answers, gone


def _acts_on_latest_day(statement, answers, gone, as_of):
    """The acts about `statement` on the latest day it was acted on, as of `as_of`."""
    acts = [("answer", a.answer, a.signed_on) for a in answers if a.statement == statement]
    acts += [("withdrawal", None, w.withdrawn_on) for w in gone if w.covers(statement)]
    acts = [act for act in acts if act[2] <= as_of]
    if not acts:
        return []
    last = max(day for _, _, day in acts)
    return [(kind, answer) for kind, answer, day in acts if day == last]


@settings(max_examples=300, deadline=None)
@given(histories(), DAYS, st.sampled_from(CODES))
def test_a_use_is_allowed_exactly_when_its_latest_act_is_a_yes(history, as_of, statement):
    answers, gone = history
    latest = _acts_on_latest_day(statement, answers, gone, as_of)
    allowed = decide([statement], answers, gone, as_of).allowed
    if not latest or any(kind == "withdrawal" for kind, _ in latest):
        assert not allowed
    elif all(answer for _, answer in latest):
        assert allowed
    elif not any(answer for _, answer in latest):
        assert not allowed
    # (a yes and a no on one day: the later-recorded signature decides; shown by example)


@settings(max_examples=300, deadline=None)
@given(histories(), DAYS, st.sampled_from((None, *CODES)), DAYS, st.lists(st.sampled_from(CODES)))
def test_adding_a_withdrawal_never_allows_more(history, as_of, scope, on, uses):
    answers, gone = history
    more = [*gone, Withdrawal(scope, on, order=len(gone))]
    for use in CODES:
        if not decide([use], answers, gone, as_of).allowed:
            assert not decide([use], answers, more, as_of).allowed
    if uses and not decide(uses, answers, gone, as_of).allowed:
        assert not decide(uses, answers, more, as_of).allowed


@settings(max_examples=300, deadline=None)
@given(histories(), DAYS, st.sampled_from(CODES), DAYS)
def test_a_statement_withdrawal_touches_no_other_statement(history, as_of, withdrawn, on):
    answers, gone = history
    more = [*gone, Withdrawal(withdrawn, on, order=len(gone))]
    for other in CODES:
        if other != withdrawn:
            assert statement_status(other, answers, more, as_of) == statement_status(
                other, answers, gone, as_of
            )


@settings(max_examples=300, deadline=None)
@given(histories(), DAYS, st.randoms(use_true_random=False))
def test_only_acts_up_to_the_date_count_and_their_order_does_not(history, as_of, rng):
    answers, gone = history
    expected = decide(CODES, answers, gone, as_of)
    past = (
        [a for a in answers if a.signed_on <= as_of],
        [w for w in gone if w.withdrawn_on <= as_of],
    )
    assert decide(CODES, *past, as_of) == expected
    shuffled_answers, shuffled_gone = list(answers), list(gone)
    rng.shuffle(shuffled_answers)
    rng.shuffle(shuffled_gone)
    assert decide(CODES, shuffled_answers, shuffled_gone, as_of) == expected
    for status in expected.statuses.values():
        assert (status.since is None) == (status.state is StatementState.not_asked)
        assert status.since is None or status.since <= as_of


@settings(max_examples=300, deadline=None)
@given(histories(), DAYS, DAYS)
def test_withdrawn_entirely_denies_everything_until_a_new_signature(history, as_of, later):
    answers, gone = history
    found = withdrawn_entirely(answers, gone, as_of)
    if found is None:
        return
    assert not any(decide([use], answers, gone, as_of).allowed for use in CODES)
    # with no signature after it, it stays in force on every later day
    if later >= as_of and not any(found.withdrawn_on < a.signed_on <= later for a in answers):
        assert withdrawn_entirely(answers, gone, later) is not None


# --- Services ---------------------------------------------------------------------------------

SIGNED = date(2024, 6, 1)


def _form(engine, admin, code="MAIN", version="1", statements=(F, G, C), effective=D0):
    with uow(engine) as session:
        return consent.add_document(
            session,
            actor=admin,
            code=code,
            version=version,
            title="Biobank consent",
            effective_on=effective,
            statements=statements,
        )


def _sign(engine, actor, participant="SLE-0001", on=SIGNED, **answers):
    answers = answers or {F: True, G: True, C: False}
    with uow(engine) as session:
        return consent.record_consent(
            session,
            actor=actor,
            participant=participant,
            document="MAIN",
            version="1",
            signed_on=on,
            answers=answers,
        )


def _withdraw(engine, actor, participant="SLE-0001", **kwargs):
    kwargs = {
        "withdrawn_on": date(2025, 6, 1),
        "requested_by": "the participant, by letter",
        "disposition": "keep_no_use",
    } | kwargs
    with uow(engine) as session:
        return withdrawals.withdraw(session, actor=actor, participant=participant, **kwargs)


def _count(engine, model, *where) -> int:
    with uow(engine, readonly=True) as session:
        return session.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar()


def _family(engine, admin, layout=None):
    """SLE-0001's specimens: a serum tube with two aliquots, and a buffy coat with DNA and a
    DNA aliquot (depths 0, 1, 1 and 0, 1, 2)."""
    box = layout["boxes"][0] if layout else None
    with uow(engine) as session:
        primary = serum(session, admin, destination=box)
        aliquots = lineage.aliquot(
            session, actor=admin, parent=primary.accession_id, count=2, volume=100,
            destination=box,
        )  # fmt: skip
        buffy = accession_tube(
            session, admin, visit="baseline", specimen_type="BUF", destination=box
        )
        dna = lineage.derive(
            session, actor=admin, parent=buffy.accession_id, specimen_type="DNA",
            quantity=25, unit="ug", used=300, destination=box,
        )  # fmt: skip
        dna_aliquot = lineage.aliquot(
            session, actor=admin, parent=dna.accession_id, count=1, volume=5, destination=box
        )[0]
    ids = [primary, *aliquots, buffy, dna, dna_aliquot]
    return [s.accession_id for s in ids]


def test_a_signature_is_checked_field_by_field_and_bad_input_changes_nothing(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    audit_before = _count(engine, AuditEntry)
    cases = [
        ({"answers": {F: True, G: True}}, ValidationError, "answers", "no answer for COMMERCIAL"),
        (
            {"answers": {F: True, G: True, C: False, "RECONTACT": True}},
            ValidationError,
            "answers",
            "does not ask RECONTACT",
        ),
        ({"signed_on": FUTURE}, ValidationError, "signed_on", "in the future"),
        (
            {"signed_on": D0 - timedelta(days=1)},
            ValidationError,
            "signed_on",
            "took effect on 2024-03-01",
        ),
        ({"document": "NOPE"}, NotFound, "document", "no consent document NOPE"),
        ({"version": "9"}, NotFound, "document", "version 9"),
        ({"participant": "SLE-9999"}, NotFound, "participant", "SLE-9999"),
    ]
    for change, error, field, words in cases:
        call = {
            "participant": "SLE-0001", "document": "main", "version": "1", "signed_on": SIGNED,
            "answers": {F: True, G: True, C: False},
        } | change  # fmt: skip
        with pytest.raises(error) as raised, uow(engine) as session:
            consent.record_consent(session, actor=admin, **call)
        assert raised.value.field == field, change
        assert words in raised.value.message, (change, raised.value.message)
    assert _count(engine, ParticipantConsent) == 0
    assert _count(engine, AuditEntry) == audit_before
    # the same call without the fault is recorded, answers as asked
    read = _sign(engine, admin)
    assert read.answers == {F: True, G: True, C: False} and read.recorded_by == "admin"


def test_status_as_of_dates_through_the_services(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    _withdraw(engine, admin, statement="genetic", withdrawn_on=date(2025, 1, 10))
    with uow(engine, readonly=True) as session:
        before = consent.consent_status(
            session, actor=admin, participant="sle-0001", as_of=SIGNED - timedelta(days=1)
        )
        now = consent.consent_status(session, actor=admin, participant="SLE-0001")
        allowed = consent.check_uses(
            session, actor=admin, participant="SLE-0001", uses=["future_research"], as_of=None
        )
        denied = consent.check_uses(
            session, actor=admin, participant="SLE-0001", uses=[F, G], as_of=date(2025, 1, 10)
        )
        earlier = consent.check_uses(
            session, actor=admin, participant="SLE-0001", uses=[F, G], as_of=date(2025, 1, 9)
        )
        with pytest.raises(ValidationError) as unknown:
            consent.check_uses(session, actor=admin, participant="SLE-0001", uses=["X"], as_of=None)
    assert {s.code: s.state for s in before.statements}[G] is StatementState.not_asked
    states = {s.code: (s.state, s.since) for s in now.statements}
    assert states[G] == (StatementState.withdrawn, date(2025, 1, 10))
    assert states[F] == (StatementState.granted, SIGNED)
    assert states[C] == (StatementState.refused, SIGNED)
    assert states["RECONTACT"] == (StatementState.not_asked, None)
    assert not now.withdrawn_entirely
    assert [(w.statement, w.disposition) for w in now.withdrawals] == [
        (G, WithdrawalDisposition.keep_no_use)
    ]
    assert [s.document for s in now.signatures] == ["MAIN"]
    assert allowed.allowed and not denied.allowed and earlier.allowed
    assert denied.denied == {G: StatementState.withdrawn}
    assert unknown.value.field == "uses" and unknown.value.value == "X"


def _events(engine, accession_ids, event_type):
    with uow(engine, readonly=True) as session:
        rows = session.execute(
            sa.select(Specimen.accession_id, SpecimenEvent.details)
            .join(SpecimenEvent, SpecimenEvent.specimen_id == Specimen.id)
            .where(SpecimenEvent.event_type == event_type)
            .where(Specimen.accession_id.in_(accession_ids))
            .order_by(SpecimenEvent.id)
        ).all()
    return [(accession, details) for accession, details in rows]


def _flags(engine, participant="SLE-0001") -> dict[str, int | None]:
    with uow(engine, readonly=True) as session:
        rows = session.execute(
            sa.select(Specimen.accession_id, Specimen.consent_withdrawal_id)
            .join(Participant, Participant.id == Specimen.participant_id)
            .where(Participant.code == participant)
        ).all()
    return dict(rows)


def test_withdrawal_flags_every_specimen_with_an_event_and_an_audit_entry(engine, admin):
    layout = seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    family = _family(engine, admin, layout)
    with uow(engine) as session:
        participant_with_visit(session, admin, "SLE-0002", visit_date=date(2025, 1, 3))
        bystander = accession_tube(session, admin, "SLE-0002", visit="baseline").accession_id
    done, report = _withdraw(engine, admin, reason="moved away")
    assert done.flagged == len(family) == 6 and done.statement is None
    assert set(_flags(engine)) == set(family)
    assert set(_flags(engine).values()) == {done.id}
    assert _flags(engine, "SLE-0002") == {bystander: None}
    events = _events(engine, [*family, bystander], "consent_withdrawn")
    assert sorted(a for a, _ in events) == sorted(family)
    assert events[0][1] == {
        "statement": "ALL", "disposition": "keep_no_use", "withdrawn_on": "2025-06-01",
    }  # fmt: skip
    with uow(engine, readonly=True) as session:
        actions = session.execute(
            sa.select(AuditEntry.action, sa.func.count())
            .where(AuditEntry.action.like("%withdraw%"))
            .group_by(AuditEntry.action)
        ).all()
        status = session.exec(
            select(Participant.status).where(Participant.code == "SLE-0001")
        ).one()
    assert dict(actions) == {"consent.withdraw": 1, "specimen.consent_withdrawn": 6}
    assert status is ParticipantStatus.withdrawn
    assert [s.accession_id for s in report.specimens] == family


def test_a_full_withdrawal_outranks_an_earlier_statement_one_never_the_reverse(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    family = _family(engine, admin)
    first, _ = _withdraw(engine, admin, statement=G, withdrawn_on=date(2025, 1, 1))
    assert first.flagged == 6 and set(_flags(engine).values()) == {first.id}
    full, _ = _withdraw(engine, admin, withdrawn_on=date(2025, 2, 1))
    assert full.flagged == 6 and set(_flags(engine).values()) == {full.id}
    again, _ = _withdraw(engine, admin, statement=F, withdrawn_on=date(2025, 3, 1))
    assert again.flagged == 0 and set(_flags(engine).values()) == {full.id}
    assert len(_events(engine, family, "consent_withdrawn")) == 12


def test_a_withdrawn_participants_specimens_are_refused_and_nothing_changes(engine, admin):
    layout = seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    family = _family(engine, admin, layout)
    primary, aliquot, buffy = family[0], family[1], family[3]
    _withdraw(engine, admin)
    with uow(engine, readonly=True) as session:
        before = {
            s.accession_id: (s.status, s.quantity, s.version)
            for s in session.exec(select(Specimen)).all()
        }
    events_before = _count(engine, SpecimenEvent)
    audit_before = _count(engine, AuditEntry)
    refused = {
        "accession": lambda s: serum(s, admin),
        "accession, mistyped visit": lambda s: serum(s, admin, visit="basline"),  # consent first
        "aliquot": lambda s: lineage.aliquot(s, actor=admin, parent=primary, count=1, volume=10),
        "derive": lambda s: lineage.derive(
            s, actor=admin, parent=buffy, specimen_type="RNA", quantity=5, unit="ug"
        ),
        "check_out": lambda s: custody.check_out(s, actor=admin, accession=aliquot),
        "distribute": lambda s: custody.distribute(
            s, actor=admin, accession=aliquot, recipient="Lab X", uses=[F]
        ),
    }
    for name, call in refused.items():
        with pytest.raises(ConsentDenied) as raised, uow(engine) as session:
            call(session)
        assert "SLE-0001" in raised.value.message, name
    with uow(engine, readonly=True) as session:
        after = {
            s.accession_id: (s.status, s.quantity, s.version)
            for s in session.exec(select(Specimen)).all()
        }
    assert after == before
    assert _count(engine, SpecimenEvent) == events_before
    assert _count(engine, AuditEntry) == audit_before


def test_signing_again_after_withdrawing_lets_work_resume(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    _withdraw(engine, admin, withdrawn_on=date(2025, 6, 1))
    with pytest.raises(ConsentDenied), uow(engine) as session:
        serum(session, admin)
    _sign(engine, admin, on=date(2025, 7, 1))
    with uow(engine) as session:
        tube = serum(session, admin)
        status = session.exec(
            select(Participant.status).where(Participant.code == "SLE-0001")
        ).one()
        decision = consent.check_uses(
            session, actor=admin, participant="SLE-0001", uses=[G], as_of=None
        )
    assert tube.consent_withdrawal_id is None and decision.allowed
    assert status is ParticipantStatus.active


def test_destroy_puts_tubes_on_the_pull_list_in_freezer_order_and_pull_disposes_them(engine, admin):
    layout = seed_inventory(engine, admin, box_grid=(2, 12))
    first, second = layout["boxes"][:2]
    _form(engine, admin)
    _sign(engine, admin)
    with uow(engine) as session:
        placed = {
            (box, position): serum(session, admin, destination=box, position=position).accession_id
            for box, position in [(second, "A1"), (first, "A10"), (first, "B1"), (first, "A2")]
        }
        loose = serum(session, admin).accession_id
        participant_with_visit(session, admin, "SLE-0002", visit_date=date(2025, 1, 3))
        other = accession_tube(
            session, admin, "SLE-0002", visit="baseline", destination=first
        ).accession_id
    _withdraw(engine, admin, disposition="destroy")
    with uow(engine, readonly=True) as session:
        listed = pulls.pull_list(session, actor=admin)
        mine = pulls.pull_list(session, actor=admin, participant="SLE-0001")
        free_before = storage.get_unit(session, first).free_slots
    expected = [(first, "A2"), (first, "A10"), (first, "B1"), (second, "A1")]
    assert [(p.box_barcode, p.position) for p in listed[:4]] == expected
    assert [p.accession_id for p in listed] == [placed[k] for k in expected] + [loose]
    assert listed == mine
    assert {(p.disposition, p.withdrawn_on) for p in listed} == {
        (WithdrawalDisposition.destroy, date(2025, 6, 1))
    }
    with pytest.raises(ValidationError) as not_listed, uow(engine) as session:
        pulls.pull(session, actor=admin, accession=listed[0].accession_id)
        pulls.pull(session, actor=admin, accession=other)
    assert not_listed.value.message == f"{other} is not on the pull list"
    assert _events(engine, [listed[0].accession_id], "disposed") == []  # rolled back
    with uow(engine) as session:
        pulled = [pulls.pull(session, actor=admin, accession=p.accession_id) for p in listed]
    assert {(p.status, p.box_barcode, p.position) for p in pulled} == {("disposed", None, None)}
    events = _events(engine, [p.accession_id for p in listed], "disposed")
    assert len(events) == 5
    with uow(engine, readonly=True) as session:
        assert pulls.pull_list(session, actor=admin) == []
        assert storage.get_unit(session, first).free_slots == free_before + 3
    with pytest.raises(ValidationError, match="is not on the pull list"), uow(engine) as session:
        pulls.pull(session, actor=admin, accession=listed[0].accession_id)


def test_keep_no_use_lists_nothing_to_pull_and_a_statement_cannot_be_destroyed(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    _family(engine, admin)
    for disposition in ("destroy", "return"):
        with pytest.raises(ValidationError) as raised:
            _withdraw(engine, admin, statement=G, disposition=disposition)
        assert raised.value.field == "disposition" and "keep_no_use" in raised.value.message
    bad = [
        ({"disposition": "shred"}, ValidationError, "disposition"),
        ({"withdrawn_on": FUTURE}, ValidationError, "withdrawn_on"),
        ({"requested_by": "  "}, ValidationError, "requested_by"),
        ({"statement": "NOPE"}, NotFound, "statement"),
    ]
    for change, error, field in bad:
        with pytest.raises(error) as raised:
            _withdraw(engine, admin, **change)
        assert raised.value.field == field
    assert _count(engine, ConsentWithdrawal) == 0
    assert set(_flags(engine).values()) == {None}
    _withdraw(engine, admin, statement=G)
    with uow(engine, readonly=True) as session:
        assert pulls.pull_list(session, actor=admin) == []


def test_the_impact_report_shows_descendants_distributions_and_exports(engine, admin):
    layout = seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    family = _family(engine, admin, layout)
    primary, first_aliquot, sent = family[:3]
    with uow(engine) as session:
        custody.distribute(
            session, actor=admin, accession=sent, recipient="Genomics core", uses=["genetic"]
        )
        run = ExportRun(
            run_code="EXP-2025-001", actor_id=admin.user_id, query={}, uses=[F],
            mode=DeidentificationMode.safe_harbor, formats=["csv"], software_version="test",
            counts={}, exclusions={}, files={}, manifest_sha256=hashlib.sha256(b"").hexdigest(),
            as_of=date(2025, 5, 1), window_days=90, code_key="00" * 16,
        )  # fmt: skip
        session.add(run)
        session.flush()
        for accession in (primary, first_aliquot):
            specimen = session.exec(select(Specimen).where(Specimen.accession_id == accession))
            session.add(ExportRunSpecimen(export_run_id=run.id, specimen_id=specimen.one().id))
    with uow(engine, readonly=True) as session:
        report = withdrawals.withdrawal_impact(session, actor=admin, participant="SLE-0001")
        for_genetic = withdrawals.withdrawal_impact(
            session, actor=admin, participant="SLE-0001", statement="genetic"
        )
    assert [(s.accession_id, s.depth) for s in report.specimens] == list(
        zip(family, [0, 1, 1, 0, 1, 2], strict=True)
    )
    assert report.specimens[1].parent_accession_id == primary
    assert report.distributed == [sent] and report.in_storage == 5
    assert {s.accession_id: s.status for s in report.specimens}[sent] == "distributed"
    assert all(s.location for s in report.specimens if s.accession_id != sent)
    assert [(e.run_code, e.specimens, e.mode) for e in report.exports] == [
        ("EXP-2025-001", 2, "safe_harbor")
    ]
    assert for_genetic.statement == G and for_genetic.specimens == report.specimens
    done, after = _withdraw(engine, admin)
    assert done.flagged == 6  # the distributed tube is flagged too
    assert after.exports == report.exports and after.distributed == [sent]


def test_technicians_and_pis_read_consent_but_do_not_record_it(engine, actors):
    admin = actors[Role.admin]
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    _family(engine, admin)
    _withdraw(engine, admin, disposition="destroy", withdrawn_on=date(2025, 6, 1))
    writes = {
        "add_statement": lambda s, a: consent.add_statement(
            s, actor=a, code="BIOBANKING", text="x"
        ),
        "add_document": lambda s, a: consent.add_document(
            s, actor=a, code="MAIN", version="2", title="t", effective_on=D0, statements=[G]
        ),
        "record_consent": lambda s, a: consent.record_consent(
            s,
            actor=a,
            participant="SLE-0001",
            document="MAIN",
            version="1",
            signed_on=date(2025, 7, 1),
            answers={F: True, G: True, C: True},
        ),
        "withdraw": lambda s, a: withdrawals.withdraw(
            s,
            actor=a,
            participant="SLE-0001",
            withdrawn_on=date(2025, 7, 1),
            requested_by="x",
            disposition="keep_no_use",
        ),
    }
    for role in (Role.technician, Role.pi):
        actor = actors[role]
        for call in writes.values():
            with pytest.raises(PermissionDenied), uow(engine) as session:
                call(session, actor)
        with uow(engine, readonly=True) as session:
            status = consent.consent_status(session, actor=actor, participant="SLE-0001")
            assert status.withdrawn_entirely, role
            assert not consent.check_uses(
                session, actor=actor, participant="SLE-0001", uses=[G], as_of=None
            ).allowed
            assert len(withdrawals.withdrawal_impact(session, actor=actor, participant="SLE-0001")
                       .specimens) == 6  # fmt: skip
            assert len(pulls.pull_list(session, actor=actor)) == 6
            assert [s.code for s in consent.list_statements(session, actor=actor)][:2] == [F, G]
            assert [d.version for d in consent.list_documents(session, actor=actor)] == ["1"]
    # technicians take the tubes out; PIs do not handle tubes
    with uow(engine, readonly=True) as session:
        tube = pulls.pull_list(session, actor=admin)[0].accession_id
    with pytest.raises(PermissionDenied), uow(engine) as session:
        pulls.pull(session, actor=actors[Role.pi], accession=tube)
    with uow(engine) as session:
        assert pulls.pull(session, actor=actors[Role.technician], accession=tube).status == (
            "disposed"
        )
    assert _count(engine, ParticipantConsent) == 1 and _count(engine, ConsentWithdrawal) == 1


def test_statements_and_documents(engine, admin):
    with uow(engine) as session:
        added = consent.add_statement(
            session, actor=admin, code="biobanking", text=" Samples may be stored. "
        )
    assert (added.code, added.text) == ("BIOBANKING", "Samples may be stored.")
    refusals = [
        (lambda s: consent.add_statement(s, actor=admin, code="9X", text="t"), "code"),
        (lambda s: consent.add_statement(s, actor=admin, code="OK_CODE", text=" "), "text"),
        (lambda s: consent.add_statement(s, actor=admin, code="biobanking", text="t"), "code"),
        (
            lambda s: consent.add_document(
                s, actor=admin, code="M", version="1", title="t", effective_on=D0, statements=[G]
            ),
            "code",
        ),
        (
            lambda s: consent.add_document(
                s,
                actor=admin,
                code="MAIN",
                version="1",
                title="t",
                effective_on=D0,
                statements=[],
            ),
            "statements",
        ),
        (
            lambda s: consent.add_document(
                s,
                actor=admin,
                code="MAIN",
                version="1",
                title="t",
                effective_on=D0,
                statements=[G, "genetic"],
            ),
            "statements",
        ),
        (
            lambda s: consent.add_document(
                s,
                actor=admin,
                code="MAIN",
                version="1",
                title="t",
                effective_on=D0,
                statements=["NOPE"],
            ),
            "statements",
        ),
    ]
    for call, field in refusals:
        with (
            pytest.raises((ValidationError, NotFound, AlreadyExists)) as raised,
            uow(engine) as session,
        ):
            call(session)
        assert raised.value.field == field
    first = _form(engine, admin, statements=["biobanking", G])
    assert first.statements == ["BIOBANKING", G]
    with pytest.raises(AlreadyExists) as duplicate:
        _form(engine, admin)
    assert duplicate.value.field == "version" and "exists" in duplicate.value.message


@pytest.mark.parametrize("seed", range(3))
def test_the_services_agree_with_the_rule(engine, admin, seed):
    """Random signatures and withdrawals recorded through the services read back as the pure
    rule decides for every day between them."""
    rng = random.Random(seed)
    seed_inventory(engine, admin)
    _form(engine, admin)
    answers, gone = [], []
    days = sorted(rng.sample(range(0, 60), 6))
    for order, offset in enumerate(days):
        on = SIGNED + timedelta(days=offset)
        if rng.random() < 0.6:
            given = {c: rng.random() < 0.7 for c in (F, G, C)}
            _sign(engine, admin, on=on, **given)
            answers += [SignedAnswer(c, on, a, order) for c, a in given.items()]
        else:
            scope = rng.choice([None, F, G])
            _withdraw(engine, admin, statement=scope, withdrawn_on=on)
            gone.append(Withdrawal(scope, on, order))
    with uow(engine, readonly=True) as session:
        for offset in range(-1, 62):
            day = SIGNED + timedelta(days=offset)
            read = consent.consent_status(session, actor=admin, participant="SLE-0001", as_of=day)
            got = {s.code: (s.state, s.since) for s in read.statements if s.code in (F, G, C)}
            want = {
                c: (status.state, status.since)
                for c in (F, G, C)
                for status in [statement_status(c, answers, gone, day)]
            }
            assert got == want, day
            assert read.withdrawn_entirely == (withdrawn_entirely(answers, gone, day) is not None)


def test_a_full_withdrawal_stays_in_force_until_a_use_is_granted_again():
    """One rule: a later form that grants nothing (here only RECONTACT, answered no) does not
    end a withdrawal of everything."""
    answers = [yes(F, D0), yes(G, D0)]
    gone = [Withdrawal(None, D0 + timedelta(days=10))]
    later = D0 + timedelta(days=20)
    assert withdrawn_entirely([*answers, no("RECONTACT", later)], gone, later) is not None
    assert withdrawn_entirely([*answers, yes(G, later)], gone, later) is None


def test_a_later_destroy_takes_over_an_earlier_keep_and_fills_the_pull_list(engine, admin):
    layout = seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin)
    family = _family(engine, admin, layout)
    keep, _ = _withdraw(engine, admin, withdrawn_on=date(2025, 6, 1))
    destroy, _ = _withdraw(engine, admin, withdrawn_on=date(2025, 7, 1), disposition="destroy")
    assert keep.flagged == destroy.flagged == len(family)
    assert set(_flags(engine).values()) == {destroy.id}
    with uow(engine, readonly=True) as session:
        pulled = pulls.pull_list(session, actor=admin)
        status = consent.consent_status(session, actor=admin, participant="SLE-0001")
    assert sorted(p.accession_id for p in pulled) == sorted(family)
    assert status.full_withdrawal.id == destroy.id
    assert [w.flagged for w in status.withdrawals] == [0, len(family)]


def test_a_withdrawal_dated_before_a_later_signature_is_refused(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin, on=date(2024, 6, 1))
    _family(engine, admin)
    audit_before = _count(engine, AuditEntry)
    with pytest.raises(ValidationError, match="signed again on 2024-06-01") as caught:
        _withdraw(engine, admin, withdrawn_on=date(2024, 3, 1), disposition="destroy")
    assert caught.value.field == "withdrawn_on"
    assert _count(engine, ConsentWithdrawal) == 0 and _count(engine, AuditEntry) == audit_before
    assert set(_flags(engine).values()) == {None}


def test_a_backdated_signature_does_not_lift_a_later_withdrawal(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin, on=date(2024, 6, 1))
    family = _family(engine, admin)
    full, _ = _withdraw(engine, admin, withdrawn_on=date(2025, 6, 1), disposition="destroy")
    _sign(engine, admin, on=date(2025, 3, 1))  # a paper form entered late
    with uow(engine, readonly=True) as session:
        status = participants.get_participant_row(session, "SLE-0001").status
        pulled = pulls.pull_list(session, actor=admin)
    assert status is ParticipantStatus.withdrawn
    assert set(_flags(engine).values()) == {full.id} and len(pulled) == len(family)


def test_consenting_again_lifts_the_flags_and_empties_the_pull_list(engine, admin):
    seed_inventory(engine, admin)
    _form(engine, admin)
    _sign(engine, admin, on=date(2024, 6, 1))
    family = _family(engine, admin)
    _withdraw(engine, admin, withdrawn_on=date(2025, 6, 1), disposition="destroy")
    _withdraw(engine, admin, statement=C, withdrawn_on=date(2025, 6, 1))  # flags nothing new
    _sign(engine, admin, on=date(2025, 8, 1), **{F: True, G: False, C: False})
    with uow(engine, readonly=True) as session:
        pulled = pulls.pull_list(session, actor=admin)
        status = participants.get_participant_row(session, "SLE-0001").status
    assert pulled == [] and status is ParticipantStatus.active
    assert set(_flags(engine).values()) == {None}
    renewed = _events(engine, family, "consent_renewed")
    assert sorted(a for a, _ in renewed) == sorted(family)
    assert renewed[0][1] == {"statement": "ALL"}
