"""The scan resolver: one function that says what a scanned string names."""

import json

import pytest
from inventory import seed_inventory, serum
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.identifiers import format_specimen_id
from biobank.services import scan, users


@pytest.fixture
def scanned(engine, admin):
    layout = seed_inventory(engine, admin)
    with uow(engine) as session:
        tube = serum(session, admin, destination=layout["boxes"][0], legacy_id="SLE0001-BA-SER-01")
        users.add_user(session, actor=admin, username="tina", role="technician", badge="badge-77")

    def resolve(text: str, prefix: str = ""):
        with uow(engine, readonly=True) as session:
            return scan.resolve_scan(session, actor=admin, scanned=text, scanner_prefix=prefix)

    return resolve, tube, layout


def _wrong_check(accession_id: str) -> str:
    return accession_id[:-1] + ("B" if accession_id[-1] != "B" else "C")


def test_every_kind_of_scan(scanned):
    resolve, tube, layout = scanned
    cases = {
        tube.accession_id: ("specimen", tube.accession_id),
        f"  {tube.accession_id.lower()}\r\n": ("specimen", tube.accession_id),  # Caps Lock
        f"]Q1{tube.accession_id}": ("specimen", tube.accession_id),  # AIM identifier
        "SLE0001-BA-SER-01": ("specimen", tube.accession_id),  # legacy ID
        layout["boxes"][0]: ("unit", None),
        "sle-0001": ("participant", None),
        "BADGE-77": ("user", None),
        _wrong_check(tube.accession_id): ("misread", None),
        next(filter(None, (format_specimen_id("SLE", n) for n in range(9_000_000, 9_000_002)))): (
            "unknown",
            None,
        ),
        "": ("unknown", None),
    }
    for text, (kind, accession) in cases.items():
        result = resolve(text)
        assert result.kind == kind, (text, result)
        if accession:
            assert result.specimen.accession_id == accession
    assert "MISREAD" in resolve(_wrong_check(tube.accession_id)).message
    assert resolve("BADGE-77").username == "tina"
    assert resolve(f"#{tube.accession_id}", prefix="#").kind == "specimen"


def test_scan_command(scanned, monkeypatch, db_url):
    _, tube, _ = scanned
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()
    found = runner.invoke(app, ["-u", "admin", "scan", tube.accession_id.lower(), "--json"])
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["specimen"]["position"] == "A1"
    misread = runner.invoke(app, ["-u", "admin", "scan", _wrong_check(tube.accession_id)])
    assert misread.exit_code == 2 and "MISREAD" in misread.stderr
    unknown = runner.invoke(app, ["-u", "admin", "scan", "NOTHING-HERE"])
    assert unknown.exit_code == 4
