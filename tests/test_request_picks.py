"""Picking an approved request, on both engines: the pick list in freezer order, a scan ticks
the right tube and refuses a wrong one (another request's, or none's) changing nothing, a
withdrawal after approval flags the tube loudly and refuses its scan, a line of aliquots splits
the tube when picked, a missing tube is replaced by another of its participant; and the CLI."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from request_flow import USES, approved, tubes_of, written_state
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import Role
from biobank.errors import ConsentDenied, InvalidTransition, ValidationError
from biobank.services import (
    request_picks,
    requests,
    reservations,
    withdrawals,
)
from biobank.services.requests import LineWant, RequestDraft


def test_the_pick_list_is_in_freezer_order_and_scans_tick_it(cohort_db, boxes, actors):
    tech = actors[Role.technician]
    code = approved(cohort_db, actors)
    with uow(cohort_db, readonly=True) as session:
        listed = request_picks.pick_list(session, actor=tech, code=code)
    places = [(i.box_barcode, i.position) for i in listed.items]
    assert len(places) == 4 and listed.to_pick == 4  # one per participant; P-0004 withdrew
    assert places == sorted(places, key=lambda p: (boxes.index(p[0]), p[1]))
    first = listed.items[0].accession_id
    with uow(cohort_db) as session:
        done = request_picks.pick(session, actor=tech, code=code, accession=first.lower())
    assert done.outcome == "picked" and done.item.picked
    with uow(cohort_db) as session:
        again = request_picks.pick(session, actor=tech, code=code, accession=first)
    assert again.outcome == "already picked"
    with uow(cohort_db, readonly=True) as session:
        listed = request_picks.pick_list(session, actor=tech, code=code)
    assert listed.to_pick == 3 and listed.items[0].picked


def test_a_wrong_tube_is_refused_naming_what_it_is(cohort_db, boxes, actors):
    tech, admin = actors[Role.technician], actors[Role.admin]
    code = approved(cohort_db, actors)
    with uow(cohort_db, readonly=True) as session:
        mine = {
            i.accession_id for i in request_picks.pick_list(session, actor=tech, code=code).items
        }
    spare = sorted(set(tubes_of(cohort_db)) - mine)
    with uow(cohort_db) as session:
        reservations.reserve_specimens(
            session, actor=admin, specimen_ids=[_id(session, spare[0])], request="REQ-OTHER",
            uses=USES,
        )  # fmt: skip
    before = written_state(cohort_db)
    for tube, why in ((spare[0], "reserved for REQ-OTHER"), (spare[1], "(available)")):
        with uow(cohort_db) as session, pytest.raises(ValidationError, match="WRONG TUBE") as e:
            request_picks.pick(session, actor=tech, code=code, accession=tube)
        assert why in e.value.message
    assert written_state(cohort_db) == before


def _id(session, accession: str) -> int:
    return session.execute(
        sa.text("SELECT id FROM specimen WHERE accession_id = :a"), {"a": accession}
    ).scalar_one()


def test_a_withdrawal_after_approval_is_flagged_and_its_scan_refused(cohort_db, boxes, actors):
    tech, admin = actors[Role.technician], actors[Role.admin]
    code = approved(cohort_db, actors)
    with uow(cohort_db) as session:
        withdrawals.withdraw(
            session, actor=admin, participant="P-0002", withdrawn_on=date.today(),
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    with uow(cohort_db, readonly=True) as session:
        listed = request_picks.pick_list(session, actor=tech, code=code)
    flagged = [i for i in listed.items if i.blocked]
    assert [i.participant_code for i in flagged] == ["P-0002"] and listed.to_pick == 3
    assert "CONSENT" in (flagged[0].blocked or "") and "do not pick" in (flagged[0].blocked or "")
    before = written_state(cohort_db)
    with uow(cohort_db) as session, pytest.raises(ConsentDenied, match="will not ship"):
        request_picks.pick(session, actor=tech, code=code, accession=flagged[0].accession_id)
    assert written_state(cohort_db) == before


def test_a_line_of_aliquots_splits_the_tube_when_picked(cohort_db, boxes, actors):
    tech = actors[Role.technician]
    code = approved(
        cohort_db, actors, LineWant(specimen_type="SER", aliquots=2, aliquot_volume=100)
    )
    with uow(cohort_db, readonly=True) as session:
        item = request_picks.pick_list(session, actor=tech, code=code).items[0]
    assert item.split == "2 × 100 aliquots"
    with uow(cohort_db) as session:
        done = request_picks.pick(session, actor=tech, code=code, accession=item.accession_id)
    assert done.outcome == "split" and len(done.aliquots) == 2
    assert {a.parent_accession_id for a in done.aliquots} == {item.accession_id}
    with uow(cohort_db, readonly=True) as session:
        listed = request_picks.pick_list(session, actor=tech, code=code)
        parent = session.execute(
            sa.text("SELECT status, quantity, box_id IS NOT NULL FROM specimen "
                    "WHERE accession_id = :a"), {"a": item.accession_id},
        ).one()  # fmt: skip
    on_list = {i.accession_id: i.picked for i in listed.items}
    assert item.accession_id not in on_list
    assert all(on_list[a.accession_id] for a in done.aliquots)
    assert tuple(parent) == ("available", 300.0, True)  # the rest stays where it stood


def test_a_missing_tube_is_replaced_by_another_of_its_participant(cohort_db, boxes, actors):
    tech = actors[Role.technician]
    code = approved(cohort_db, actors)
    with uow(cohort_db, readonly=True) as session:
        item = request_picks.pick_list(session, actor=tech, code=code).items[0]
    with uow(cohort_db) as session:
        gone = request_picks.mark_missing(
            session, actor=tech, code=code, accession=item.accession_id, reason="empty slot"
        )
    assert gone.status == "missing"
    with uow(cohort_db) as session:
        new = request_picks.substitute(session, actor=tech, code=code, accession=item.accession_id)
    assert new.participant_code == item.participant_code and new.accession_id != item.accession_id
    with uow(cohort_db, readonly=True) as session:
        codes = {
            i.accession_id for i in request_picks.pick_list(session, actor=tech, code=code).items
        }
    assert new.accession_id in codes and item.accession_id not in codes
    with uow(cohort_db) as session, pytest.raises(Exception, match="no other available"):
        request_picks.substitute(session, actor=tech, code=code, accession=new.accession_id)


def test_only_an_approved_request_is_picked(cohort_db, boxes, actors):
    pi = actors[Role.pi]
    draft = RequestDraft(
        title="Serum", uses=USES, project="P", irb_reference="IRB-1",
        irb_expires_on=date.today() + timedelta(days=90), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr A",
        cohort=CohortQuery(study="SLE"), lines=[LineWant(specimen_type="SER")],
    )  # fmt: skip
    with uow(cohort_db) as session:
        code = requests.create_request(session, actor=pi, draft=draft).code
    with uow(cohort_db) as session, pytest.raises(InvalidTransition, match="only an approved"):
        request_picks.pick_list(session, actor=pi, code=code)


def test_the_cli_prints_the_pick_list_and_picks(monkeypatch, db_url, cohort_db, boxes, actors):
    code = approved(cohort_db, actors)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()
    listed = json.loads(
        runner.invoke(app, ["-u", "technician1", "request", "pick-list", code, "--json"]).stdout
    )
    first = listed["items"][0]["accession_id"]
    assert listed["to_pick"] == 4
    done = runner.invoke(app, ["-u", "technician1", "request", "pick", code, first, "NOPE-1"])
    assert done.exit_code != 0 and f"{first}: picked" in done.stderr
    text = runner.invoke(app, ["-u", "technician1", "request", "pick-list", code]).stdout
    assert first in text and "yes" in text
