"""The receiving end and the way back, on both engines: a shipment's manifest received at another
installation (its own database), each tube scanned in — received and accessioned under a
participant per donor, damaged, unexpected — and closed with the rest missing; a manifest
received twice or altered is refused with nothing written. At the sender, a tube that comes
back is stored again with the quantity and thaws it came back with."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa
from request_flow import send
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.vocabulary import ReceiptItemStatus, Role, ShipmentItemStatus
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.services import shipment_manifest, shipment_receipt, shipments


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(sql))]


def test_a_shipment_is_received_tube_by_tube(sent, receiver):
    shipment, manifest, tubes = sent
    engine, admin, box = receiver
    document = shipment_receipt.read_manifest(manifest)
    with uow(engine) as session:
        made = shipment_receipt.receive_manifest(
            session, actor=admin, document=document, study="EXT"
        )
    assert made.counts == {"expected": 4}
    steps = [(tubes[0], False), (tubes[1].lower(), False), (tubes[2], True), ("XYZ-0001", False)]
    lines = []
    for tube, damaged in steps:
        with uow(engine) as session:
            lines.append(
                shipment_receipt.check_in(
                    session,
                    actor=admin,
                    shipment=shipment,
                    tube=tube,
                    damaged=damaged,
                    destination=box,
                )
            )
    assert [line.status for line in lines] == [
        ReceiptItemStatus.received, ReceiptItemStatus.received, ReceiptItemStatus.damaged,
        ReceiptItemStatus.unexpected,
    ]  # fmt: skip
    with uow(engine) as session, pytest.raises(ValidationError, match="received already"):
        shipment_receipt.check_in(session, actor=admin, shipment=shipment, tube=tubes[0])
    with uow(engine) as session:
        closed = shipment_receipt.close_receipt(session, actor=admin, shipment=shipment)
    assert closed.counts == {"received": 2, "damaged": 1, "unexpected": 1, "missing": 1}
    stored = _rows(
        engine,
        "SELECT s.legacy_id, s.freeze_thaw_count, s.box_id IS NOT NULL, x.value FROM specimen s "
        "JOIN participant_external_id x ON x.participant_id = s.participant_id "
        "ORDER BY s.legacy_id",
    )
    donors = {i["accession_id"]: i["donor"] for i in document["items"]}
    thaws = {i["accession_id"]: i["freeze_thaw_count"] for i in document["items"]}
    assert stored == sorted((t, thaws[t] + (t == tubes[2]), True, donors[t]) for t in tubes[:3])
    assert _rows(engine, "SELECT count(*) FROM participant") == [(3,)]  # one per donor


def test_a_manifest_altered_or_received_twice_is_refused(sent, receiver, tmp_path):
    _, manifest, _ = sent
    engine, admin, _ = receiver
    document = json.loads(manifest.read_text())
    document["items"][0]["quantity"] = 5000  # more serum than was sent
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(document))
    with uow(engine) as session, pytest.raises(ValidationError, match="altered after it was sent"):
        shipment_receipt.receive_manifest(
            session, actor=admin, document=shipment_receipt.read_manifest(altered), study="EXT"
        )
    with uow(engine) as session:
        shipment_receipt.receive_manifest(
            session, actor=admin, document=shipment_receipt.read_manifest(manifest), study="EXT"
        )
    with uow(engine) as session, pytest.raises(AlreadyExists, match="received already"):
        shipment_receipt.receive_manifest(
            session, actor=admin, document=shipment_receipt.read_manifest(manifest), study="EXT"
        )
    assert _rows(engine, "SELECT count(*) FROM receipt") == [(1,)]
    not_json = tmp_path / "notes.txt"
    not_json.write_text("box 1: four tubes")
    with pytest.raises(ValidationError, match="not a shipment manifest"):
        shipment_receipt.read_manifest(not_json)
    pipe = tmp_path / "manifest.json.pipe"
    os.mkfifo(pipe)  # named by mistake: refused at once, not waited on
    for wrong in (pipe, tmp_path, tmp_path / "absent.json"):
        with pytest.raises(ValidationError, match=f"shipment manifest {wrong}") as refused:
            shipment_receipt.read_manifest(wrong)
        assert refused.value.field == "manifest"


def test_a_tube_comes_back_and_is_stored_again(sent, cohort_db, boxes, actors):
    shipment, _, tubes = sent
    tech = actors[Role.technician]
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="more than the"):
        shipments.receive_return(session, actor=tech, code=shipment, accession=tubes[0],
                                 quantity=9000, destination=boxes[0])  # fmt: skip
    with uow(cohort_db) as session:
        line = shipments.receive_return(
            session, actor=tech, code=shipment, accession=tubes[0], quantity=120,
            destination=boxes[0], thaws=1,
        )  # fmt: skip
    assert line.status is ShipmentItemStatus.returned
    (row,) = _rows(
        cohort_db,
        f"SELECT status, quantity, freeze_thaw_count, box_id IS NOT NULL FROM specimen "
        f"WHERE accession_id = '{tubes[0]}'",
    )
    assert row[:2] == ("available", 120.0) and row[3]
    with uow(cohort_db) as session, pytest.raises(ValidationError, match="is returned"):
        shipments.receive_return(session, actor=tech, code=shipment, accession=tubes[0],
                                 quantity=100, destination=boxes[0])  # fmt: skip
    events = _rows(cohort_db, "SELECT count(*) FROM specimen_event WHERE event_type = 'returned'")
    assert events == [(1,)]


def test_a_relabelled_tube_comes_back_by_the_label_it_shipped_under(
    cohort_db, boxes, actors, tmp_path
):
    shipment, manifest, tubes = send(cohort_db, actors, tmp_path, relabel=True)
    shipped = {i["accession_id"]: i for i in json.loads(manifest.read_text())["items"]}
    label = next(iter(shipped))  # S-…: the request's code for the tube, not our ID
    assert label.startswith("S-") and label not in tubes
    tech = actors[Role.technician]
    with uow(cohort_db) as session, pytest.raises(NotFound, match="S-WRONG"):
        shipments.receive_return(session, actor=tech, code=shipment, accession="S-WRONG",
                                 destination=boxes[0])  # fmt: skip
    with uow(cohort_db) as session:  # scanned as it came back, lower-case from a scanner
        line = shipments.receive_return(session, actor=tech, code=shipment,
                                        accession=label.lower(), destination=boxes[0])  # fmt: skip
    assert line.ship_code == label and line.status is ShipmentItemStatus.returned
    (row,) = _rows(cohort_db, "SELECT status, quantity FROM specimen WHERE accession_id = "
                              f"'{line.accession_id}'")  # fmt: skip
    assert row == ("available", shipped[label]["quantity"])  # all that was sent came back


def test_the_cli_receives_and_checks_in(sent, receiver, monkeypatch):
    shipment, manifest, tubes = sent
    engine, _, box = receiver
    monkeypatch.setenv("BIOBANK_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    got = runner.invoke(
        app, ["-u", "admin", "shipment", "receive", str(manifest), "--study", "EXT"]
    )
    assert got.exit_code == 0, got.stderr
    again = runner.invoke(
        app, ["-u", "admin", "shipment", "receive", str(manifest), "--study", "EXT"]
    )
    assert again.exit_code == 5 and "received already" in again.stderr
    scanned = runner.invoke(
        app, ["-u", "admin", "shipment", "check-in", shipment, tubes[0], "--to", box]
    )
    assert scanned.exit_code == 0, scanned.stderr
    assert f"{tubes[0]}: received as" in scanned.stderr
    shown = json.loads(
        runner.invoke(app, ["-u", "admin", "shipment", "receipt", shipment, "--json"]).stdout
    )
    assert shown["counts"] == {"received": 1, "expected": 3}


def test_extracts_and_sprec_codes_arrive_as_sent(sent, receiver):
    """A shipment of DNA (extracted by the sender: its buffy coat stays there) and serum whose
    SPREC code the sender recorded: the DNA is a derivative with no parent here, the serum
    keeps its code; a code that does not fit its tube is refused, naming it."""
    shipment, manifest, _ = sent
    engine, admin, box = receiver
    document = shipment_receipt.read_manifest(manifest)
    extract, serum, wrong = document["items"][:3]
    extract |= {"specimen_type": "DNA", "sprec_code": None, "quantity": 12.5, "unit": "ug"}
    serum |= {"specimen_type": "SER", "sprec_code": "SER-SST-A-D-N-A-A"}
    wrong |= {"specimen_type": "SER", "sprec_code": "PL1-PED-A-D-N-A-A"}
    document["sha256"] = shipment_manifest.digest(document)
    with uow(engine) as session:
        shipment_receipt.receive_manifest(session, actor=admin, document=document, study="EXT")
    for item in (extract, serum):
        with uow(engine) as session:
            shipment_receipt.check_in(
                session, actor=admin, shipment=shipment, tube=item["accession_id"], destination=box
            )
    with uow(engine) as session, pytest.raises(ValidationError, match="is for type PL1, not SER"):
        shipment_receipt.check_in(
            session, actor=admin, shipment=shipment, tube=wrong["accession_id"], destination=box
        )
    assert _rows(
        engine,
        "SELECT legacy_id, kind, specimen_type, sprec_code, quantity, unit, parent_id "
        "FROM specimen ORDER BY id",
    ) == [
        (extract["accession_id"], "derivative", "DNA", None, 12.5, "ug", None),
        (serum["accession_id"], "primary", "SER", "SER-SST-A-D-N-A-A", serum["quantity"],
         serum["unit"], None),
    ]  # fmt: skip
    with uow(engine) as session:
        lines = shipment_receipt.show_receipt(session, actor=admin, shipment=shipment).items
    assert {line.sender_accession: line.status for line in lines}[wrong["accession_id"]] == (
        ReceiptItemStatus.expected  # still to scan, once the sender says what it is
    )
