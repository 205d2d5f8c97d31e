"""Shipping an approved request, on both engines: its picked tubes packed into shipping boxes
and sent, consent asked a third time at dispatch (a withdrawal since approval takes the tube
off, loudly), an incomplete pick refused unless it is a part shipment, the tubes distributed and
the request fulfilled; the manifest as JSON (its SHA-256 kept), CSV, a FHIR R4 Bundle that
validates, and a packing list of a page per box; and the CLI, in-process and as a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pypdfium2
import pytest
import sqlalchemy as sa
import zxingcpp
from fhir.resources.R4B.bundle import Bundle
from PIL import Image
from request_flow import approved, written_state
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.cohort import CohortQuery
from biobank.domain.vocabulary import RequestStatus, Role, ShipmentItemStatus
from biobank.errors import PermissionDenied, ValidationError
from biobank.services import (
    request_picks,
    request_reports,
    request_review,
    requests,
    shipments,
    withdrawals,
)
from biobank.services.requests import LineWant, RequestDraft
from biobank.services.shipment_manifest import digest


def _picked(engine, actors, code: str, count: int | None = None) -> list[str]:
    tech = actors[Role.technician]
    with uow(engine, readonly=True) as session:
        items = request_picks.pick_list(session, actor=tech, code=code).items
    tubes = [i.accession_id for i in items][:count]
    for tube in tubes:
        with uow(engine) as session:
            request_picks.pick(session, actor=tech, code=code, accession=tube)
    return tubes


def _packed(engine, actors, code: str, tubes: list[str], **options) -> str:
    tech = actors[Role.technician]
    with uow(engine) as session:
        made = shipments.create_shipment(
            session, actor=tech, request=code, courier="World Courier", condition="dry_ice",
            tracking="WC-1234", **options,
        )  # fmt: skip
        shipments.pack(session, actor=tech, code=made.code, accessions=tubes)
    return made.code


def _status(engine, tube: str) -> tuple:
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT status, box_id FROM specimen WHERE accession_id = :a"), {"a": tube}
        ).one()


def test_a_request_is_packed_sent_and_fulfilled(cohort_db, boxes, actors, tmp_path):
    code = approved(cohort_db, actors)
    tubes = _picked(cohort_db, actors, code)
    shipment = _packed(cohort_db, actors, code, tubes, box_rows=2, box_cols=2)
    with uow(cohort_db) as session:
        done = shipments.dispatch(session, actor=actors[Role.technician], code=shipment)
    assert done.taken_off == {}
    files = done.manifest.write(tmp_path / shipment)
    assert {f.name for f in files} == {
        "manifest.json", "manifest.csv", "manifest.fhir.json", "packing-list.pdf",
    }  # fmt: skip
    assert all(_status(cohort_db, t) == ("distributed", None) for t in tubes)
    document = json.loads((tmp_path / shipment / "manifest.json").read_text())
    assert document["sha256"] == digest(document) == done.manifest.sha256
    assert [i["accession_id"] for i in document["items"]] == tubes
    assert [(i["box"], i["position"]) for i in document["items"]] == [
        (1, "A1"), (1, "A2"), (1, "B1"), (1, "B2"),
    ]  # fmt: skip
    assert "P-000" not in json.dumps(document)  # no participant on a manifest
    rows = list(csv.DictReader((tmp_path / shipment / "manifest.csv").open()))
    assert [r["accession_id"] for r in rows] == tubes
    bundle = Bundle.model_validate(
        json.loads((tmp_path / shipment / "manifest.fhir.json").read_text())
    )
    kinds = [e.resource.__resource_type__ for e in bundle.entry]
    assert kinds == ["Task"] + ["Specimen"] * 4
    serum = bundle.entry[1].resource
    assert serum.type.coding[0].system == "http://snomed.info/sct"
    assert serum.collection.quantity.system == "http://unitsofmeasure.org"
    pdf = pypdfium2.PdfDocument(tmp_path / shipment / "packing-list.pdf")
    assert len(pdf) == 1
    assert tubes[0] in pdf[0].get_textpage().get_text_range()
    with uow(cohort_db, readonly=True) as session:
        request = requests.show_request(session, actor=actors[Role.pi], code=code)
        again = shipments.sent_manifest(session, actor=actors[Role.admin], code=shipment)
    assert request.status is RequestStatus.fulfilled and again.sha256 == done.manifest.sha256
    with uow(cohort_db) as session:
        confirmed = shipments.confirm_delivery(
            session, actor=actors[Role.technician], code=shipment, note="all 4 received frozen"
        )
    assert confirmed.status.value == "delivered"


def test_a_withdrawal_before_dispatch_takes_the_tube_off_loudly(cohort_db, boxes, actors):
    code = approved(cohort_db, actors)
    tubes = _picked(cohort_db, actors, code)
    shipment = _packed(cohort_db, actors, code, tubes)
    with uow(cohort_db) as session:
        withdrawals.withdraw(
            session, actor=actors[Role.admin], participant="P-0002", withdrawn_on=date.today(),
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    with uow(cohort_db) as session:
        done = shipments.dispatch(session, actor=actors[Role.technician], code=shipment)
    (off,) = done.taken_off
    assert "CONSENT" in done.taken_off[off] and "put it back" in done.taken_off[off]
    assert _status(cohort_db, off)[0] == "available"  # given back, in its box
    assert off not in [i["accession_id"] for i in done.manifest.document["items"]]
    line = next(i for i in done.shipment.items if i.accession_id == off)
    assert line.status is ShipmentItemStatus.withdrawn
    assert sum(i.status is ShipmentItemStatus.dispatched for i in done.shipment.items) == 3


def test_an_incomplete_pick_is_refused_unless_a_part_shipment(cohort_db, boxes, actors):
    tech = actors[Role.technician]
    code = approved(cohort_db, actors)
    tubes = _picked(cohort_db, actors, code, count=2)
    shipment = _packed(cohort_db, actors, code, tubes)
    before = written_state(cohort_db)
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="2 tubes of REQ"):
        shipments.dispatch(session, actor=tech, code=shipment)
    assert written_state(cohort_db) == before
    with uow(cohort_db) as session:
        shipments.dispatch(session, actor=tech, code=shipment, part=True)
    with uow(cohort_db, readonly=True) as session:
        request = requests.show_request(session, actor=actors[Role.pi], code=code)
    assert request.status is RequestStatus.approved and request.reserved_tubes == 2


def test_only_picked_tubes_of_the_request_are_packed(cohort_db, boxes, actors):
    tech = actors[Role.technician]
    code = approved(cohort_db, actors)
    with uow(cohort_db, readonly=True) as session:
        items = request_picks.pick_list(session, actor=tech, code=code).items
    shipment = _packed(cohort_db, actors, code, [])
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="not picked"):
        shipments.pack(session, actor=tech, code=shipment, accessions=[items[0].accession_id])
    picked = _picked(cohort_db, actors, code, count=1)
    with uow(cohort_db) as session:
        shipments.pack(session, actor=tech, code=shipment, accessions=picked)
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="packed in SHP"):
        shipments.pack(session, actor=tech, code=shipment, accessions=picked)


def test_the_cli_ships_a_request(monkeypatch, db_url, cohort_db, boxes, actors, tmp_path):
    code = approved(cohort_db, actors)
    tubes = _picked(cohort_db, actors, code)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def cli(*args: str, code: int = 0):
        result = runner.invoke(app, ["-u", "technician1", *args])
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    cli("shipment", "create", code, "--courier", "X", "--condition", "warm", code=2)
    shipment = cli("shipment", "create", code, "--courier", "World Courier",
                   "--condition", "dry_ice").stdout.strip()  # fmt: skip
    cli("shipment", "pack", shipment, *tubes)
    sent = cli("shipment", "dispatch", shipment, "--to", str(tmp_path))
    assert (tmp_path / shipment / "manifest.json").exists()
    assert f"shipment {shipment} sent: 4 tubes" in sent.stderr
    env = os.environ | {"BIOBANK_DATABASE_URL": db_url, "BIOBANK_USER": "technician1"}
    shown = subprocess.run(
        [sys.executable, "-m", "biobank", "shipment", "show", shipment, "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "dispatched"


def test_the_report_shows_open_requests_what_was_received_and_what_expires(
    cohort_db, boxes, actors
):
    first = approved(cohort_db, actors)
    tubes = _picked(cohort_db, actors, first)
    shipment = _packed(cohort_db, actors, first, tubes)
    with uow(cohort_db) as session:
        shipments.dispatch(session, actor=actors[Role.technician], code=shipment)
    second = approved(cohort_db, actors)
    with uow(cohort_db, readonly=True) as session:
        found = request_reports.requests_report(session, actor=actors[Role.admin], within_days=31)
    assert [(r.code, r.status.value) for r in found.open] == [(second, "approved")]
    assert [(r.requester, r.requests_fulfilled, r.shipments, r.tubes) for r in found.received] == [
        ("pi1", 1, 1, 4)
    ]
    assert [(o.institution, o.tubes) for o in found.out] == [("Lab", 4)]
    assert [(e.request, e.tubes) for e in found.expiring] == [(second, 4)]
    with uow(cohort_db, readonly=True) as session:
        found = request_reports.requests_report(session, actor=actors[Role.admin], within_days=3)
    assert found.expiring == []


def test_a_relabelled_shipment_never_shows_our_ids(
    cohort_db, boxes, actors, tmp_path, monkeypatch, db_url
):
    """Tubes ship under the linked export's codes: the labels (QR decoded back), the manifest
    and its donors show none of our accession IDs or participant codes."""
    pi, admin = actors[Role.pi], actors[Role.admin]
    draft = RequestDraft(
        title="Blinded serum", uses=["FUTURE_RESEARCH"], project="P", irb_reference="IRB-1",
        irb_expires_on=date.today() + timedelta(days=90), destination_institution="Lab",
        destination_address="1 Way", destination_contact="Dr A", relabel=True,
        cohort=CohortQuery(study="SLE"), lines=[LineWant(specimen_type="SER")],
    )  # fmt: skip
    with uow(cohort_db) as session:
        code = requests.create_request(session, actor=pi, draft=draft).code
        requests.submit_request(session, actor=pi, code=code)
    with uow(cohort_db) as session:
        request_review.approve_request(session, actor=admin, code=code, reason="ok", floor=0)
    tubes = _picked(cohort_db, actors, code)
    shipment = _packed(cohort_db, actors, code, tubes)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    made = CliRunner().invoke(
        app, ["-u", "technician1", "label", "--shipment", shipment, "--format", "png",
              "--out", str(tmp_path / "labels")],
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    decoded = sorted(
        zxingcpp.read_barcodes(Image.open(png).convert("L"))[0].text
        for png in (tmp_path / "labels").glob("*.png")
    )
    with uow(cohort_db, readonly=True) as session:
        shown = shipments.show_shipment(session, actor=admin, code=shipment)
    assert decoded == sorted(i.ship_code for i in shown.items)
    assert not set(decoded) & set(tubes)
    with uow(cohort_db) as session:
        done = shipments.dispatch(session, actor=actors[Role.technician], code=shipment)
    text = json.dumps(done.manifest.document) + done.manifest.csv_text()
    assert [i["accession_id"] for i in done.manifest.document["items"]] == [
        i.ship_code for i in shown.items
    ]
    assert not any(tube in text for tube in tubes) and "P-000" not in text
    assert done.manifest.document["relabelled"] is True
    with uow(cohort_db) as session, pytest.raises(PermissionDenied):
        shipments.linked_export(session, actor=actors[Role.technician], code=shipment,
                                directory=tmp_path / "export")  # fmt: skip
    with uow(cohort_db) as session:
        result = shipments.linked_export(
            session, actor=pi, code=shipment, directory=tmp_path / "export"
        )
    rows = list(csv.DictReader((result.directory / "specimens.csv").open(encoding="utf-8")))
    assert sorted(r["specimen_code"] for r in rows) == decoded  # the labels' codes
    donors = {i["accession_id"]: i["donor"] for i in done.manifest.document["items"]}
    assert {r["specimen_code"]: r["participant_code"] for r in rows} == donors
