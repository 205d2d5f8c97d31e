"""Secrets stay secret: no password of a database URL and no personal token is printed by
`config show`, `db current` or an error, and pg_dump and pg_restore are not handed the password
on their command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import make_engine, uow
from biobank.errors import BiobankError, DatabaseUnavailable
from biobank.redact import hide_secrets, redacted
from biobank.services import backups
from biobank.services.identity import actor_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret"
TOKEN = "bbk_not-for-your-eyes"
UNREACHABLE = f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"  # nothing listens on port 1


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PASSWORD}@db.example/biobank",
        f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:5432/x?sslmode=require",
        "postgresql://u:ab/cd@db.example/biobank",  # SQLAlchemy allows any but `@`
        "postgresql://u:%40x@db.example:5433/biobank",
        "postgresql://db.example:5432/biobank",  # no password: left alone
        "sqlite:////var/lib/biobank/biobank.db",
    ],
)
def test_a_url_is_shown_as_sqlalchemy_shows_it(url):
    assert hide_secrets(url) == make_url(url).render_as_string(hide_password=True)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"postgresql://u:{PASSWORD}@db:notaport/x", "postgresql://u:***@db:notaport/x"),
        (f"foo bar://u:{PASSWORD}@db/x", "foo bar://u:***@db/x"),
        (f"postgresql://u:p@{PASSWORD}@db/x", "postgresql://u:***@db/x"),  # an `@` unquoted
        (f"postgresql://u@db/x?password={PASSWORD}&a=1", "postgresql://u@db/x?password=***&a=1"),
        (f"host=db password='{PASSWORD} 2' dbname=x", "host=db password=*** dbname=x"),
        (f"PGPASSWORD={PASSWORD} pg_dump", "PGPASSWORD=*** pg_dump"),
    ],
)
def test_passwords_sqlalchemy_cannot_parse_or_hide_are_hidden_too(text, shown):
    assert hide_secrets(text) == shown


def test_sqlalchemy_cannot_parse_these():
    for url in (f"postgresql://u:{PASSWORD}@db:notaport/x", f"foo bar://u:{PASSWORD}@db/x"):
        with pytest.raises((ValueError, ArgumentError)):
            make_url(url)


def test_settings_named_like_a_secret_are_asterisks_at_any_depth():
    shown = redacted(
        {
            "database_url": UNREACHABLE,
            "token": TOKEN,
            "user": None,
            "printers": {"lab": {"password": "pw", "host": f"ipp://u:{PASSWORD}@p/q", "port": 1}},
        }
    )
    assert shown == {
        "database_url": "postgresql://u:***@127.0.0.1:1/x",
        "token": "**********",
        "user": None,
        "printers": {"lab": {"password": "**********", "host": "ipp://u:***@p/q", "port": 1}},
    }


def test_an_error_never_carries_a_password():
    """Whatever a driver says goes through the one error type every front end shows."""
    error = DatabaseUnavailable(f"connection failed: host=db user=u password={PASSWORD}")
    assert PASSWORD not in error.message and PASSWORD not in str(error)
    wrapped = BiobankError(f"unexpected OperationalError: could not reach {UNREACHABLE}")
    assert PASSWORD not in wrapped.message


def _secret_environment(monkeypatch, url: str = UNREACHABLE) -> None:
    monkeypatch.setenv("BIOBANK_DATABASE_URL", url)
    monkeypatch.setenv("BIOBANK_TOKEN", TOKEN)


def _run(*args: str, code: int):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    for secret in (PASSWORD, TOKEN):
        assert secret not in result.stdout and secret not in result.stderr
    return result


def test_config_show_hides_the_password_and_the_token(monkeypatch):
    _secret_environment(monkeypatch)
    table = _run("config", "show", code=0).stdout
    assert "postgresql://u:***@127.0.0.1:1/x" in table
    assert any(line.split() == ["token", "**********"] for line in table.splitlines())
    data = json.loads(_run("config", "show", "--json", code=0).stdout)
    assert data["database_url"] == "postgresql://u:***@127.0.0.1:1/x"
    assert data["token"] == "**********"


@pytest.mark.parametrize("url", [UNREACHABLE, f"postgresql://u@127.0.0.1:1/x?password={PASSWORD}"])
@pytest.mark.parametrize("command", [["db", "current"], ["study", "list"]])
def test_an_unreachable_database_is_named_without_its_password(monkeypatch, url, command):
    _secret_environment(monkeypatch, url)
    failed = _run(*command, code=8)
    assert "cannot open the database at postgresql+psycopg://u" in failed.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/x", "invalid literal"),
        (f"mysql://u:{PASSWORD}@127.0.0.1/x", "mysql is not a database biobank runs on"),
        ("not a url", "Could not parse"),
    ],
)
def test_a_url_that_cannot_be_used_is_one_line_without_its_password(monkeypatch, url, why):
    _secret_environment(monkeypatch, url)
    failed = _run("study", "list", code=2)
    assert failed.stderr.count("\n") == 1 and why in failed.stderr
    assert "the database URL" in failed.stderr and "Traceback" not in failed.stderr


def test_the_installed_command_prints_no_secret():
    environment = {**os.environ, "BIOBANK_DATABASE_URL": UNREACHABLE, "BIOBANK_TOKEN": TOKEN}
    for args, code in ((["config", "show"], 0), (["config", "show", "--json"], 0),
                       (["db", "current"], 8)):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "biobank", *args],
            capture_output=True, text=True, env=environment, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert "u:***@127.0.0.1:1/x" in done.stdout + done.stderr
        for secret in (PASSWORD, TOKEN):
            assert secret not in done.stdout and secret not in done.stderr


def test_pg_tools_get_the_password_in_their_environment(pg_engine, tmp_path, monkeypatch):
    """Every user of the machine may read a command line. (The test server trusts its
    clients, so the password is handed on but not checked.)"""
    url = pg_engine.url.set(password=PASSWORD).render_as_string(hide_password=False)
    engine = make_engine(url)
    calls = []

    start = subprocess.Popen

    def spy(command, **options):  # every tool starts here, `subprocess.run`'s too
        calls.append((command, options.get("env") or {}))
        return start(command, **options)

    monkeypatch.setattr(subprocess, "Popen", spy)
    with uow(engine) as session:
        admin = actor_for(session, username="admin", workstation="test-bench")
    copy = tmp_path / "biobank.backup"
    backups.backup(engine, actor=admin, path=copy)
    backups.restore(engine, actor=admin, path=copy)
    engine.dispose()
    for command, _ in calls:
        assert PASSWORD not in " ".join(command)
    # the dump; the restore over the live one (pg_restore's SQL run by psql) and into a
    # scratch database to check it: each tool that connects has the password
    connecting = [(c, env) for c, env in calls if any(a.startswith("--dbname=") for a in c)]
    assert sorted(c[0] for c, _ in connecting) == ["pg_dump", "pg_restore", "psql"]
    for _, environment in connecting:
        assert environment["PGPASSWORD"] == PASSWORD
