"""The CLI through Typer's runner (both engines) and as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from biobank.cli import app


@pytest.fixture
def cli(fresh_cli):
    return fresh_cli


def test_db_commands(cli):
    current = json.loads(cli("db", "current", "--json").stdout)
    assert current["up_to_date"] and current["current"] == current["head"]
    assert "models and migrations agree" in cli("db", "check").stderr
    aborted = cli("db", "downgrade", "base", input="n\n", code=1)
    assert "Aborted" in aborted.stderr + aborted.stdout
    assert json.loads(cli("db", "current", "--json").stdout)["up_to_date"]
    cli("db", "downgrade", "base", "--yes")
    assert json.loads(cli("db", "current", "--json").stdout)["current"] is None
    assert "expected" in cli("db", "check", code=1).stderr


def test_first_upgrade_creates_admin_and_says_how_to_set_its_pin(
    monkeypatch, empty_db_url, engine_name
):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    if engine_name == "postgres":  # a server's first admin gets a PIN at once (test_sign_in.py)
        assert result.exit_code == 2 and "--admin-pin-stdin" in result.stderr
        return
    assert result.exit_code == 0
    assert "biobank user set-pin admin" in result.stderr
    listed = CliRunner().invoke(app, ["user", "list", "--json"])
    users = json.loads(listed.stdout)
    assert [(u["username"], u["role"]) for u in users] == [("admin", "admin")]


def test_users_and_acting_as_someone(cli):
    cli("user", "add", "tina", "--role", "technician", "--pin-stdin", input="4321\n")
    cli("-u", "admin", "user", "add", "paula", "--role", "pi", "--name", "Dr Paula")
    listed = json.loads(cli("--user", "admin", "user", "list", "--json").stdout)
    assert [(u["username"], u["has_pin"]) for u in listed] == [
        ("admin", True),
        ("paula", False),
        ("tina", True),
    ]
    # several users now: the CLI must be told who acts
    assert "--user NAME or BIOBANK_USER" in cli("user", "list", code=3).stderr
    denied = cli("--user", "tina", "user", "list", code=3)
    assert denied.stdout == ""
    assert denied.stderr.strip() == "biobank: error: tina (technician) may not manage users"
    cli("-u", "admin", "user", "set-pin", "paula", input="2468\n2468\n")
    cli("-u", "admin", "user", "deactivate", "paula", "--reason", "left")
    bad = cli("-u", "admin", "user", "add", "Bad Name", "--role", "pi", code=2)
    assert "username" in bad.stderr


def test_studies_participants_visits(cli, monkeypatch):
    cli("study", "add", "sle", "--title", "Lupus registry")
    code = cli("participant", "add", "--study", "SLE", "--sex", "female").stdout.strip()
    assert code.startswith("SLE-")
    cli("visit", "add", code, "baseline", "--date", "2025-01-02")
    bad_date = cli("visit", "add", code, "month 6", "--date", "07/01/2025", code=2)
    assert "date must be a date as YYYY-MM-DD" in bad_date.stderr
    shown = json.loads(cli("participant", "show", code, "--json").stdout)
    assert shown["visits"][0]["label"] == "baseline" and shown["identity"] is None
    assert code in cli("participant", "list").stdout
    missing = cli("participant", "show", "SLE-NOPE", code=4)
    assert "no participant with code 'SLE-NOPE'" in missing.stderr


def test_demo_and_audit(cli):
    loaded = cli("demo", "--participants", "12", "--seed", "3", "--json")
    summary = json.loads(loaded.stdout)
    assert summary["participants"] == 12 and summary["users"] == ["tech", "pi"]
    assert "already has data" in cli("demo", "--if-empty").stderr  # no --user needed
    assert "only into an empty database" in cli("-u", "admin", "demo", code=2).stderr
    listed = json.loads(cli("-u", "pi", "participant", "list", "--json").stdout)
    assert len(listed) == 12
    assert "chain intact" in cli("-u", "admin", "audit", "verify").stderr
    log = json.loads(cli("-u", "admin", "audit", "log", "--entity", "study", "--json").stdout)
    assert [e["action"] for e in log] == ["study.add"]
    cli("-u", "pi", "audit", "log", code=3)


def _run(*args, env=None):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_as_a_subprocess(tmp_path):
    env = {**os.environ, "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    biobank = [sys.executable, "-m", "biobank"]
    assert "Usage: biobank" in _run(*biobank, "--help", env=env).stdout
    assert _run(*biobank, "--version", env=env).stdout.startswith("biobank ")
    result = _run(*biobank, "participant", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "Created the first user, 'admin'" in result.stderr
    result = _run(*biobank, "participant", "show", "NOPE", env=env)
    assert (result.returncode, result.stdout) == (4, "")
    assert result.stderr.startswith("biobank: error: no participant")
    assert "Traceback" not in result.stderr


def test_without_a_terminal_no_command_prints_help(tmp_path):
    env = {**os.environ, "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    result = _run(sys.executable, "-m", "biobank", env=env)
    assert result.returncode == 2
    assert "Usage: biobank" in result.stdout and "needs a terminal" in result.stderr


def test_an_unreachable_database_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", "postgresql://someone:secret@127.0.0.1:9/biobank")
    for args in (["participant", "list"], ["db", "current"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 8, result.stderr
        assert result.stderr.startswith(
            "biobank: error: cannot open the database at "
            "postgresql+psycopg://someone:***@127.0.0.1:9/biobank"
        )
        assert "secret" not in result.stderr
