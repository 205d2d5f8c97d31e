"""A collection far from its visit's date is a slip until someone says otherwise: refused
beyond `visit_gap_days`, accepted when forced, and the audit trail says it was forced."""

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa
from inventory import accession_tube, seed_inventory
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import uow
from biobank.domain.specimen_values import FarFromVisit, far_from_visit
from biobank.services import audit, kits, participants, specimens

VISIT_DAY = date(2025, 1, 2)  # seed_inventory's baseline visit


def _local(day: date, hour: int = 9) -> datetime:
    """A time on `day` where the workstation is."""
    return datetime(day.year, day.month, day.day, hour).astimezone()


def _accession(session, admin, collected_at, **kwargs):
    return accession_tube(session, admin, visit="baseline", collected_at=collected_at, **kwargs)


def _count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_the_gap_counts_days_either_side_of_the_visit():
    def far(day: date, allowed: int = 30):
        return far_from_visit(
            visit="baseline", visit_date=VISIT_DAY, collected_at=_local(day), allowed=allowed
        )

    assert far(VISIT_DAY + timedelta(days=30)) is None
    assert far(VISIT_DAY - timedelta(days=30)) is None
    assert far(VISIT_DAY + timedelta(days=31)).message.startswith(
        "collected 2025-02-02, 31 days from visit 'baseline' (2025-01-02): more than "
        "visit_gap_days (30) allows"
    )
    assert far(date(2019, 3, 1)).fact == (
        "collected 2019-03-01, 2,134 days from visit 'baseline' (2025-01-02)"
    )
    assert far(date(2019, 3, 1), allowed=3000) is None
    # a visit or a collection without a date (legacy records) is never far
    undated = {"visit": "v", "allowed": 0}
    assert far_from_visit(**undated, visit_date=None, collected_at=_local(VISIT_DAY)) is None
    assert far_from_visit(**undated, visit_date=VISIT_DAY, collected_at=None) is None


def test_a_far_collection_is_refused_and_changes_nothing(engine, admin):
    seed_inventory(engine, admin)
    entries = _count(engine, "audit_entry")
    with uow(engine) as session, pytest.raises(FarFromVisit) as refused:
        _accession(session, admin, _local(date(2019, 3, 1)), visit_gap_days=30)
    error = refused.value
    assert (error.field, error.exit_code) == ("collected_at", 2)
    assert error.collected_on == date(2019, 3, 1)
    assert "visit 'baseline' (2025-01-02)" in error.message and "--force" in error.message
    assert (_count(engine, "specimen"), _count(engine, "audit_entry")) == (0, entries)

    with uow(engine) as session:  # near the visit: no question
        near = _accession(session, admin, _local(VISIT_DAY + timedelta(days=29)), visit_gap_days=30)
    assert near.visit_label == "baseline"


def test_a_forced_collection_says_so_in_its_event_and_audit_entry(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        forced = _accession(session, admin, _local(date(2019, 3, 1)), visit_gap_days=30, force=True)
        plain = _accession(session, admin, _local(VISIT_DAY), visit_gap_days=30, force=True)
    reason = (
        "forced past visit_gap_days (30): collected 2019-03-01, 2,134 days from visit "
        "'baseline' (2025-01-02)"
    )
    with uow(engine, readonly=True) as session:
        for tube, said in ((forced, reason), (plain, None)):
            shown = specimens.show_specimen(session, actor=admin, accession=tube.accession_id)
            assert [(e.event_type, e.reason) for e in shown.events] == [("accessioned", said)]
            (entry,) = audit.audit_log(
                session, actor=admin, entity="specimen", entity_id=str(tube.id)
            )
            assert (entry.action, entry.reason) == ("specimen.accessioned", said)


def test_a_kit_tube_is_checked_against_its_reserved_visit(engine, admin):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        participants.add_visit(
            session, actor=admin, participant="SLE-0001", label="month 6",
            visit_date=date(2025, 7, 1),
        )  # fmt: skip
        kit = kits.reserve_kit(
            session, actor=admin, participant="SLE-0001", visit="month 6", count=1,
            specimen_type="SER",
        )  # fmt: skip
    with uow(engine) as session, pytest.raises(FarFromVisit, match="from visit 'month 6'"):
        accession_tube(
            session, admin, collected_at=_local(VISIT_DAY), kit_id=kit.accession_ids[0],
            visit_gap_days=30,
        )  # fmt: skip


@pytest.fixture
def cli(engine, admin, db_url, monkeypatch):
    """`biobank -u admin …` in-process on a database seeded with SLE-0001's baseline visit."""
    seed_inventory(engine, admin)
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, ["-u", "admin", *args])
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run


ACCESSION = ("specimen", "accession", "-p", "SLE-0001", "-v", "baseline", "--type", "SER",
             "-q", "500", "--json")  # fmt: skip


@pytest.mark.parametrize("collected", ["2019-03-01T09:00", "2026-11-30T09:00"])
def test_the_cli_refuses_a_far_collection_without_force(cli, collected, monkeypatch):
    day = date.fromisoformat(collected[:10])
    gap = abs((day - VISIT_DAY).days)
    refused = cli(*ACCESSION, "--collected", collected, code=2)
    assert refused.stdout == ""
    assert refused.stderr == (
        f"biobank: error: collected {day}, {gap:,} days from visit 'baseline' (2025-01-02): "
        "more than visit_gap_days (30) allows; check the collection time and the visit, or "
        "force it (--force)\n"
    )
    assert json.loads(cli("audit", "log", "--entity", "specimen", "--json").stdout) == []

    made = json.loads(cli(*ACCESSION, "--collected", collected, "--force").stdout)
    log = json.loads(cli("audit", "log", "--entity", "specimen", "--json").stdout)
    assert [(e["entity_id"], e["reason"]) for e in log] == [
        (str(made["id"]), f"forced past visit_gap_days (30): collected {day}, {gap:,} days "
         "from visit 'baseline' (2025-01-02)")
    ]  # fmt: skip

    monkeypatch.setenv("BIOBANK_VISIT_GAP_DAYS", "3000")  # the setting moves the line
    cli(*ACCESSION, "--collected", collected)


def test_the_cli_refusal_as_a_subprocess(cli, db_url):
    env = {**os.environ, "BIOBANK_DATABASE_URL": db_url}
    done = subprocess.run(
        [sys.executable, "-m", "biobank", "-u", "admin", *ACCESSION, "--collected", "2019-03-01"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("biobank: error: collected 2019-03-01, 2,134 days from visit")
    assert done.stderr.count("\n") == 1
