"""The whole loop as its users type it (both engines, Typer's runner): a PI asks, a reviewer
approves, a technician picks (one wrong scan refused) and ships (a withdrawal since approval
taken off at dispatch), the receiving biobank checks the manifest in (one tube missing, one
unexpected), the sender records the receiver's confirmation, and a tube comes back."""

from __future__ import annotations

import json
from datetime import date, timedelta

from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.services import withdrawals

NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()


def test_from_a_request_to_tubes_received_and_back(
    monkeypatch, db_url, cohort_db, boxes, actors, receiver, tmp_path
):
    runner = CliRunner()
    receiving, _, receiving_box = receiver

    def at(url: str, user: str, *args: str, code: int = 0):
        monkeypatch.setenv("BIOBANK_DATABASE_URL", url)
        result = runner.invoke(app, ["-u", user, *args])
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    def sender(user: str, *args: str, code: int = 0):
        return at(db_url, user, *args, code=code)

    def there(*args: str, code: int = 0):
        return at(receiving.url.render_as_string(hide_password=False), "admin", *args, code=code)

    request = sender(
        "pi1", "request", "create", "Serum for anti-dsDNA", "--use", "FUTURE_RESEARCH",
        "--project", "LN", "--irb", "IRB-1", "--irb-expires", NEXT_YEAR, "--study", "SLE",
        "--to-institution", "Lupus Lab", "--to-address", "1 Research Way",
        "--to-contact", "Dr Reyes", "--line", "SER", "--submit",
    ).stdout.strip()  # fmt: skip
    sender("admin", "request", "review", request)
    sender("admin", "request", "approve", request, "--reason", "fits the policy")
    listed = json.loads(sender("technician1", "request", "pick-list", request, "--json").stdout)
    tubes = [item["accession_id"] for item in listed["items"]]
    assert len(tubes) == 4  # one per participant allowed (P-0004 withdrew), each keeping one
    wrong = sender("technician1", "request", "pick", request, tubes[0], "NOPE-0001", code=4)
    assert f"{tubes[0]}: picked" in wrong.stderr
    sender("technician1", "request", "pick", request, *tubes[1:])
    shipment = sender(
        "technician1", "shipment", "create", request, "--courier", "World Courier",
        "--condition", "dry_ice", "--tracking", "WC-1",
    ).stdout.strip()  # fmt: skip
    sender("technician1", "shipment", "pack", shipment, *tubes)
    with uow(cohort_db) as session:  # a participant withdraws before the courier comes
        owner = next(i["participant_code"] for i in listed["items"])
        withdrawals.withdraw(
            session, actor=actors[Role.admin], participant=owner, withdrawn_on=date.today(),
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    sent = sender("technician1", "shipment", "dispatch", shipment, "--to", str(tmp_path))
    assert f"!!! {tubes[0]}: CONSENT" in sent.stderr and "sent: 3 tubes" in sent.stderr
    manifest = tmp_path / shipment / "manifest.json"

    there("shipment", "receive", str(manifest), "--study", "EXT")
    there("shipment", "check-in", shipment, tubes[1], "--to", receiving_box)
    assert "unexpected" in there("shipment", "check-in", shipment, "XYZ-0001").stderr
    closed = json.loads(there("shipment", "close", shipment, "--json").stdout)
    assert closed["counts"] == {"received": 1, "missing": 2, "unexpected": 1}

    sender("technician1", "shipment", "confirm", shipment, "--note", "1 received, 2 missing")
    back = sender(
        "technician1", "shipment", "return", shipment, tubes[1], "--quantity", "100",
        "--to", boxes[0], "--thaws", "1",
    )  # fmt: skip
    assert "returned" in back.stderr
    shown = json.loads(sender("pi1", "request", "show", request, "--json").stdout)
    assert shown["status"] == "fulfilled"
