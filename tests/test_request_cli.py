"""`biobank request …` as a PI and a reviewer type it (both engines, Typer's runner), and as a
real subprocess: create and submit, review, approve line by line, show, list, cancel; wrong
input named on stderr with its exit code, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from biobank.cli import app

NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()
ASK = (
    "request", "create", "Serum for anti-dsDNA", "--use", "GENETIC", "--project", "LN genetics",
    "--irb", "IRB-2026-114", "--irb-expires", NEXT_YEAR, "--to-institution", "Lupus Lab",
    "--to-address", "1 Research Way", "--to-contact", "Dr Reyes", "--study", "SLE",
)  # fmt: skip


@pytest.fixture
def cli(monkeypatch, db_url, cohort_db, actors):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    return run


def _requests(db_url) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM specimen_request")).scalar_one()
    engine.dispose()
    return count


def test_a_request_from_ask_to_approval(cli, db_url):
    made = json.loads(
        cli(
            "-u", "pi1", *ASK, "--line", "SER>=100", "--line", "SER/all", "--submit", "--json"
        ).stdout
    )
    code = made["code"]
    assert made["status"] == "submitted" and [line["take"] for line in made["lines"]] == [
        "one", "all",
    ]  # fmt: skip
    preview = cli("-u", "pi1", "request", "preview", code)
    assert "left out: GENETIC refused" in preview.stdout and "would take" in preview.stdout
    review = json.loads(cli("-u", "admin", "request", "review", code, "--json").stdout)
    assert [line["tubes"] for line in review["lines"]] == [3, 0]  # the floor keeps the rest
    cli("-u", "pi1", "request", "review", code, code=3)  # reviewers only
    approved = cli(
        "-u", "admin", "request", "approve", code, "--reason", "fits the policy", "--line", "1",
        "--reject-reason", "the last tubes stay",
    )  # fmt: skip
    assert "line 1: 3 tubes reserved" in approved.stderr and "partly approved" in approved.stderr
    shown = cli("-u", "pi1", "request", "show", code).stdout
    assert "partly_approved" in shown or "partly approved" in shown
    assert "the last tubes stay" in shown and "taken up for review" in shown
    listed = json.loads(cli("-u", "pi1", "request", "list", "--open", "--json").stdout)
    assert [(r["code"], r["reserved_tubes"]) for r in listed] == [(code, 3)]
    cancelled = cli("-u", "pi1", "request", "withdraw", code, "--reason", "grant ended", "--json")
    assert json.loads(cancelled.stdout)["reserved_tubes"] == 0


@pytest.mark.parametrize(
    ("extra", "code", "named"),
    [
        (("--line", "SER>=lots"), 2, "--line"),
        (("--line", "SER", "--needed-by", "2001-01-01"), 2, "needed by 2001-01-01"),
        (("--line", "SER", "--use", "TIME_TRAVEL"), 2, "TIME_TRAVEL"),
        (("--line", "SER", "--irb-expires", "2001-01-01"), 2, "expired"),
        (("--line", "SER", "--tube", "SLE-NOPE"), 2, "one of them"),
    ],
)
def test_wrong_input_is_named_and_changes_nothing(cli, db_url, extra, code, named):
    result = cli("-u", "pi1", *ASK, *extra, code=code)
    assert named in result.stderr and result.stdout == ""
    assert _requests(db_url) == 0


def test_a_technician_may_not_ask_and_a_pi_may_not_approve(cli, db_url):
    cli("-u", "technician1", *ASK, "--line", "SER", code=3)
    code = cli("-u", "pi1", *ASK, "--line", "SER", "--submit").stdout.strip()
    cli("-u", "pi1", "request", "approve", code, "--reason", "mine", code=3)
    cli("-u", "admin", "request", "approve", code, "--reason", "ok", "--line", "7", code=2)
    assert _requests(db_url) == 1


def test_the_installed_command_lists_requests(cli, db_url):
    cli("-u", "pi1", *ASK, "--line", "SER")
    env = os.environ | {"BIOBANK_DATABASE_URL": db_url, "BIOBANK_USER": "admin"}
    done = subprocess.run(
        [sys.executable, "-m", "biobank", "request", "list", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)] == ["draft"]
