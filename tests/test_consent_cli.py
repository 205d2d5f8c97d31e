"""`biobank consent …`, `biobank phenotype …` and `biobank specimen distribute` as an admin and a
technician would type them (both engines), and `consent status` as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from inventory import accession_tube, seed_inventory, serum
from typer.testing import CliRunner

from biobank.cli import app, consent_commands
from biobank.db import uow
from biobank.domain.vocabulary import Role
from biobank.services import consent, lineage, participants

SIGN = (
    "consent", "sign", "SLE-0001", "--document", "MAIN", "--version", "1", "--date", "2024-06-01",
)  # fmt: skip


@pytest.fixture
def tubes(engine, actors) -> dict[str, str]:
    """SLE-0001 with a serum tube and two aliquots in a box, visits baseline (2025-01-02) and
    month 3 (2025-04-01); SLE-0002 with one tube; users technician1 and pi1."""
    admin = actors[Role.admin]
    layout = seed_inventory(engine, admin)
    box = layout["boxes"][0]
    with uow(engine) as session:
        participants.add_visit(
            session, actor=admin, participant="SLE-0001", label="month 3",
            visit_date=date(2025, 4, 1),
        )  # fmt: skip
        primary = serum(session, admin, destination=box)
        first, second = lineage.aliquot(
            session, actor=admin, parent=primary.accession_id, count=2, volume=100,
            destination=box,
        )  # fmt: skip
        participants.add_participant(session, actor=admin, study="SLE", code="SLE-0002")
        other = accession_tube(session, admin, "SLE-0002", destination=box)
    return {
        "box": box,
        "primary": primary.accession_id,
        "first": first.accession_id,
        "second": second.accession_id,
        "other": other.accession_id,
    }


@pytest.fixture
def cli(monkeypatch, db_url, tubes):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(app, list(args), input=input)
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run


def _consent_form(cli) -> None:
    cli(
        "-u", "admin", "consent", "document", "add", "MAIN", "1", "--title", "Biobank consent",
        "--effective", "2024-03-01", "--statement", "FUTURE_RESEARCH", "--statement", "genetic",
        "--statement", "COMMERCIAL",
    )  # fmt: skip
    cli("-u", "admin", *SIGN, "--yes", "FUTURE_RESEARCH", "--yes", "GENETIC", "--no", "commercial")


def test_statements_documents_signatures_status_and_check(cli):
    added = cli("-u", "admin", "consent", "statement", "add", "biobanking", "Samples may be kept.")
    assert "added consent statement BIOBANKING" in added.stderr
    listed = json.loads(cli("-u", "pi1", "consent", "statements", "--json").stdout)
    assert listed[-1] == {"code": "BIOBANKING", "text": "Samples may be kept."}
    assert "FUTURE_RESEARCH" in cli("-u", "pi1", "consent", "statements").stdout
    _consent_form(cli)
    documents = json.loads(cli("-u", "technician1", "consent", "documents", "--json").stdout)
    assert [(d["code"], d["version"], d["statements"]) for d in documents] == [
        ("MAIN", "1", ["FUTURE_RESEARCH", "GENETIC", "COMMERCIAL"])
    ]
    assert "MAIN  1" in cli("-u", "technician1", "consent", "documents").stdout

    # refusals: the field or value at fault, the exit code of its kind, nothing recorded
    missing = cli("-u", "admin", *SIGN, "--yes", "FUTURE_RESEARCH", "--yes", "GENETIC", code=2)
    assert "no answer for COMMERCIAL" in missing.stderr
    both = cli("-u", "admin", *SIGN, "--yes", "GENETIC", "--no", "genetic", code=2)
    assert "GENETIC answered both yes and no" in both.stderr
    unknown = cli(
        "-u", "admin", "consent", "sign", "SLE-0001", "--document", "NOPE", "--version", "1",
        "--date", "2024-06-01", "--yes", "GENETIC", code=4,
    )  # fmt: skip
    assert "no consent document NOPE" in unknown.stderr
    bad_date = cli("-u", "admin", *SIGN[:-1], "1/6/2024", "--yes", "GENETIC", code=2)
    assert "date must be a date as YYYY-MM-DD" in bad_date.stderr
    denied = cli("-u", "technician1", *SIGN, "--yes", "GENETIC", code=3)
    assert "may not manage consent" in denied.stderr

    status = json.loads(cli("-u", "pi1", "consent", "status", "sle-0001", "--json").stdout)
    states = {s["code"]: (s["state"], s["since"]) for s in status["statements"]}
    assert states["GENETIC"] == ("granted", "2024-06-01")
    assert states["COMMERCIAL"] == ("refused", "2024-06-01")
    assert states["RECONTACT"] == ("not_asked", None)
    assert len(status["signatures"]) == 1 and status["withdrawals"] == []
    before = cli("-u", "pi1", "consent", "status", "SLE-0001", "--as-of", "2024-05-31").stdout
    statements, signatures = before.split("\n\n")
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in statements.splitlines()}
    assert rows["GENETIC"] == "not asked" and rows["STATEMENT"] == "STATE      SINCE"
    assert signatures.splitlines()[1].split(None, 3) == [
        "2024-06-01", "MAIN", "1", "FUTURE_RESEARCH yes, GENETIC yes, COMMERCIAL no",
    ]  # fmt: skip

    allowed = cli(
        "-u", "pi1", "consent", "check", "SLE-0001", "--use", "genetic", "--use", "FUTURE_RESEARCH"
    )
    assert allowed.stdout.splitlines()[1].split() == ["GENETIC", "granted", "2024-06-01"]
    assert allowed.stderr == ""
    refused = cli("-u", "pi1", "consent", "check", "SLE-0001", "--use", "COMMERCIAL", code=6)
    assert refused.stderr.strip() == (
        "biobank: error: consent of SLE-0001 as of today does not allow it (COMMERCIAL refused)"
    )
    earlier = cli(
        "-u", "pi1", "consent", "check", "SLE-0001", "--use", "GENETIC", "--as-of", "2024-05-01",
        "--json", code=6,
    )  # fmt: skip
    assert json.loads(earlier.stdout) == {
        "allowed": False,
        "uses": {"GENETIC": {"state": "not_asked", "since": None}},
    }
    assert "GENETIC not asked" in earlier.stderr
    assert (
        "unknown use 'NOPE'"
        in cli("-u", "pi1", "consent", "check", "SLE-0001", "--use", "nope", code=2).stderr
    )
    assert "no participant" in cli("-u", "pi1", "consent", "status", "SLE-9999", code=4).stderr


def _impact_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.strip()]


def test_distribute_impact_withdraw_and_the_pull_list(cli, tubes, monkeypatch):
    _consent_form(cli)
    sent = tubes["second"]
    distributed = cli(
        "-u", "technician1", "specimen", "distribute", sent, "--to", "Genomics core",
        "--use", "genetic", "--json",
    )  # fmt: skip
    assert json.loads(distributed.stdout)["status"] == "distributed"
    refused = cli(
        "-u", "technician1", "specimen", "distribute", tubes["first"], "--to", "Pharma",
        "--use", "COMMERCIAL", code=6,
    )  # fmt: skip
    assert "does not allow it (COMMERCIAL refused)" in refused.stderr
    shown = json.loads(cli("-u", "pi1", "specimen", "show", tubes["first"], "--json").stdout)
    assert shown["specimen"]["status"] == "available"
    cli("-u", "technician1", "specimen", "distribute", tubes["first"], "--to", "X", code=2)

    impact = cli("-u", "pi1", "consent", "impact", "SLE-0001").stdout
    lines = _impact_lines(impact)
    assert lines[0] == "withdrawal of everything by SLE-0001: 3 specimens (2 in storage)"
    assert lines[1].startswith(f"  {tubes['primary']}  ") and "available" in lines[1]
    assert lines[2].startswith(f"    {tubes['first']}") and "aliquot" in lines[2]
    assert "-80 #1" in lines[2] and lines[2].endswith(" A2")
    assert lines[3].startswith(f"    {sent}") and "distributed" in lines[3]
    assert lines[4] == f"already distributed: {sent}"
    report = json.loads(cli("-u", "pi1", "consent", "impact", "SLE-0001", "--json").stdout)
    assert [s["depth"] for s in report["specimens"]] == [0, 1, 1]
    genetic = cli("-u", "pi1", "consent", "impact", "SLE-0001", "--statement", "genetic").stdout
    assert genetic.startswith("withdrawal of GENETIC by SLE-0001")

    withdraw = (
        "-u", "admin", "consent", "withdraw", "SLE-0001", "--date", "2025-06-01",
        "--requested-by", "the participant, by letter", "--disposition",
    )  # fmt: skip
    unasked = cli(*withdraw, "destroy", code=2)
    assert "pass --yes" in unasked.stderr
    assert "withdrawal of everything by SLE-0001: 3 specimens" in unasked.stderr
    assert unasked.stdout == ""
    with monkeypatch.context() as patched:
        patched.setattr(consent_commands, "_can_ask", lambda: True)
        declined = cli(*withdraw, "destroy", input="n\n", code=1)
    assert "Record this withdrawal (destroy)?" in declined.stdout + declined.stderr
    one = cli(*withdraw, "destroy", "--statement", "GENETIC", "--yes", code=2)
    assert "keep_no_use" in one.stderr
    assert "GENETIC by SLE-0001:" not in one.stderr  # refused before its impact is shown
    assert "'shred'" in cli(*withdraw, "shred", "--yes", code=2).stderr
    with monkeypatch.context() as patched:  # at a terminal, a technician is refused unasked
        patched.setattr(consent_commands, "_can_ask", lambda: True)
        technician = cli(
            "-u", "technician1", "consent", "withdraw", "SLE-0001", "--date", "2025-06-01",
            "--requested-by", "x", "--disposition", "destroy", input="y\n", code=3,
        )  # fmt: skip
    assert "Record this withdrawal" not in technician.stdout + technician.stderr
    assert "withdrawal of everything" not in technician.stderr
    assert "may not manage consent" in technician.stderr
    status = json.loads(cli("-u", "pi1", "consent", "status", "SLE-0001", "--json").stdout)
    assert status["withdrawals"] == [] and not status["withdrawn_entirely"]
    assert json.loads(cli("-u", "pi1", "consent", "pull-list", "--json").stdout) == []

    done = json.loads(cli(*withdraw, "destroy", "--reason", "moved away", "--yes", "--json").stdout)
    assert (done["flagged"], done["disposition"], done["statement"]) == (3, "destroy", None)
    pull_list = json.loads(cli("-u", "technician1", "consent", "pull-list", "--json").stdout)
    assert [(p["accession_id"], p["box_barcode"], p["position"]) for p in pull_list] == [
        (tubes["primary"], tubes["box"], "A1"),
        (tubes["first"], tubes["box"], "A2"),
    ]
    table = cli("-u", "technician1", "consent", "pull-list", "-p", "SLE-0001").stdout
    assert table.splitlines()[1].split() == [
        tubes["primary"], "SLE-0001", "SER", tubes["box"], "A1", "destroy", "2025-06-01",
    ]  # fmt: skip
    assert "no participant" in cli("-u", "pi1", "consent", "pull-list", "-p", "X-1", code=4).stderr
    not_listed = cli(
        "-u", "technician1", "consent", "pull", tubes["primary"], tubes["other"], code=2
    )
    assert not_listed.stderr.strip() == f"biobank: error: {tubes['other']} is not on the pull list"
    pulled = cli("-u", "technician1", "consent", "pull", tubes["primary"], tubes["first"])
    assert pulled.stdout.split() == [tubes["primary"], tubes["first"]]
    assert "pulled 2 tubes" in pulled.stderr
    assert json.loads(cli("-u", "technician1", "consent", "pull-list", "--json").stdout) == []
    history = json.loads(cli("-u", "pi1", "specimen", "show", tubes["first"], "--json").stdout)
    assert [e["event_type"] for e in history["events"]][-2:] == ["consent_withdrawn", "disposed"]
    assert history["specimen"]["position"] is None
    # nothing new for a participant who withdrew
    accession = cli(
        "-u", "technician1", "specimen", "accession", "-p", "SLE-0001", "--type", "SER",
        "-q", "500", code=6,
    )  # fmt: skip
    assert "SLE-0001 withdrew consent on 2025-06-01" in accession.stderr
    status = json.loads(cli("-u", "pi1", "consent", "status", "SLE-0001", "--json").stdout)
    assert status["withdrawn_entirely"] and status["withdrawals"][0]["reason"] == "moved away"
    assert "has withdrawn consent" in cli("-u", "pi1", "consent", "status", "SLE-0001").stderr


def test_withdraw_asks_at_a_terminal(cli, monkeypatch):
    _consent_form(cli)
    monkeypatch.setattr(consent_commands, "_can_ask", lambda: True)
    done = cli(
        "-u", "admin", "consent", "withdraw", "SLE-0001", "--statement", "GENETIC",
        "--date", "2025-06-01", "--requested-by", "phone call", "--disposition", "keep_no_use",
        input="y\n",
    )  # fmt: skip
    assert "Record this withdrawal (keep_no_use)?" in done.stdout + done.stderr
    assert "withdrawal of GENETIC by SLE-0001 on 2025-06-01; 3 specimens flagged" in done.stderr
    assert "pull-list" not in done.stderr
    cli("-u", "pi1", "consent", "check", "SLE-0001", "--use", "FUTURE_RESEARCH")
    cli("-u", "pi1", "consent", "check", "SLE-0001", "--use", "GENETIC", code=6)


def test_phenotype_commands(cli, monkeypatch):
    labs = json.loads(
        cli("-u", "pi1", "phenotype", "dictionary", "--category", "labs", "--json").stdout
    )
    assert {v["category"] for v in labs} == {"labs"} and "c3" in {v["name"] for v in labs}
    table = cli("-u", "pi1", "phenotype", "dictionary").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "LABEL",
        "TYPE",
        "SCOPE",
        "UNIT",
        "RANGE",
        "CHOICES",
        "CODE",
    ]
    sledai = next(line for line in table if line.startswith("sledai2k "))
    assert "integer" in sledai and "0..105" in sledai
    c3 = next(line for line in table if line.startswith("c3 "))
    assert ">= 0" in c3 and "4485-9" in c3
    race = next(line for line in table if line.startswith("race "))
    assert "white, black, asian" in race

    def set_(*args, code=0):
        return cli("-u", "admin", "phenotype", "set", "SLE-0001", *args, code=code)

    assert set_("c3", "80", "--visit", "baseline").stdout == "added\n"
    assert set_("C3", "80.0", "-v", "Baseline").stdout == "unchanged\n"
    changed = set_("c3", "85.5", "--visit", "baseline")
    assert changed.stdout == "changed\n" and "c3 at baseline: 85.5 mg/dL" in changed.stderr
    race = json.loads(set_("race", "Black or African American", "--json").stdout)
    assert (race["outcome"], race["value"]["value"]) == ("added", "black")
    set_("dx_date", "2019-05-01", "--date", "2019-06-01")
    assert "above the maximum 105" in set_("sledai2k", "500", "--visit", "baseline", code=2).stderr
    assert "name the visit" in set_("sledai2k", "5", code=2).stderr
    assert "no phenotype variable 'nope'" in set_("nope", "1", code=4).stderr
    assert "has no visit 'month 9'" in set_("c3", "1", "--visit", "month 9", code=4).stderr
    assert "date must be a date" in set_("race", "white", "--date", "June", code=2).stderr
    cli(
        "-u",
        "technician1",
        "phenotype",
        "set",
        "SLE-0001",
        "c3",
        "1",
        "--visit",
        "baseline",
        code=3,
    )

    shown = json.loads(cli("-u", "pi1", "phenotype", "show", "SLE-0001", "--json").stdout)
    assert [(v["variable"], v["visit"], v["value"]) for v in shown] == [
        ("race", None, "black"),
        ("dx_date", None, "2019-05-01"),
        ("c3", "baseline", 85.5),
    ]
    text = cli("-u", "pi1", "phenotype", "show", "SLE-0001").stdout.splitlines()
    assert text[0].split() == ["VISIT", "OBSERVED", "VARIABLE", "VALUE", "SOURCE"]
    assert text[3].split() == ["baseline", "2025-01-02", "c3", "85.5", "mg/dL", "manual"]

    # a month-3 tube: C3 from baseline, 89 days before, counts within the window
    made = cli(
        "-u", "technician1", "specimen", "accession", "-p", "SLE-0001", "-v", "month 3",
        "--type", "SER", "-q", "500", "--collected", "2025-04-01T09:00", "--json",
    )  # fmt: skip
    tube = json.loads(made.stdout)["accession_id"]
    at = json.loads(cli("-u", "pi1", "phenotype", "at", tube, "--json").stdout)
    assert at == {"race": "black", "dx_date": "2019-05-01", "c3": 85.5}
    narrow = json.loads(
        cli("-u", "pi1", "phenotype", "at", tube, "--window-days", "88", "--json").stdout
    )
    assert "c3" not in narrow
    monkeypatch.setenv("BIOBANK_PHENOTYPE_WINDOW_DAYS", "30")
    from_settings = cli("-u", "pi1", "phenotype", "at", tube).stdout.splitlines()
    assert from_settings == ["VARIABLE  VALUE", "race      black", "dx_date   2019-05-01"]
    assert (
        "window" in cli("-u", "pi1", "phenotype", "at", tube, "--window-days", "-1", code=2).stderr
    )
    assert "no specimen" in cli("-u", "pi1", "phenotype", "at", "SLE-NOPE", code=4).stderr


def _biobank() -> Path:
    return Path(sys.executable).with_name("biobank")


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_consent_status_as_a_subprocess(engine, admin, db_url):
    seed_inventory(engine, admin)
    with uow(engine) as session:
        consent.add_document(
            session, actor=admin, code="MAIN", version="1", title="Biobank consent",
            effective_on=date(2024, 3, 1), statements=["GENETIC", "COMMERCIAL"],
        )  # fmt: skip
        consent.record_consent(
            session, actor=admin, participant="SLE-0001", document="MAIN", version="1",
            signed_on=date(2024, 6, 1), answers={"GENETIC": True, "COMMERCIAL": False},
        )  # fmt: skip
    env = {**os.environ, "BIOBANK_DATABASE_URL": db_url}
    done = subprocess.run(
        [str(_biobank()), "consent", "status", "SLE-0001", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    states = {s["code"]: s["state"] for s in status["statements"]}
    assert (states["GENETIC"], states["COMMERCIAL"], states["DATA_SHARING"]) == (
        "granted",
        "refused",
        "not_asked",
    )
    denied = subprocess.run(
        [str(_biobank()), "consent", "check", "SLE-0001", "--use", "COMMERCIAL"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert denied.returncode == 6 and "COMMERCIAL refused" in denied.stderr
    assert "Traceback" not in denied.stderr
