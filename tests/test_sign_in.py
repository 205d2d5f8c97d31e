"""Proving who one is: the lockout after wrong PINs, personal tokens, and the CLI on a database
that requires sign-in (a PostgreSQL server's default), from its first `db upgrade` on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from biobank.cli import app
from biobank.db import make_engine, uow
from biobank.errors import AuthenticationFailed, PermissionDenied
from biobank.models import Role, utcnow
from biobank.services import identity, users


def _actions(engine) -> list[str]:
    with engine.connect() as connection:
        query = "SELECT action FROM audit_entry ORDER BY id"
        return list(connection.execute(sa.text(query)).scalars())


def _attempt(engine, pin: str, **kwargs) -> identity.SignInAttempt:
    with uow(engine) as session:
        return identity.sign_in(session, username="tina", pin=pin, workstation="ws", **kwargs)


def test_repeated_wrong_pins_lock_the_account_for_a_while(engine, admin):
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", pin="4821")
    for _ in range(identity.MAX_WRONG_PINS - 1):
        assert _attempt(engine, "0000").refusal == "unknown user, inactive user, or wrong PIN"
    assert _attempt(engine, "4821").actor.username == "tina"  # a right PIN starts the count again
    for _ in range(identity.MAX_WRONG_PINS):
        refused = _attempt(engine, "0000")
    assert "locked after 5 wrong PINs" in refused.refusal
    with pytest.raises(AuthenticationFailed, match="locked"):
        _attempt(engine, "4821").accepted()  # the right PIN too, while locked
    later = utcnow() + identity.LOCKOUT + timedelta(seconds=1)
    assert _attempt(engine, "4821", now=later).accepted().username == "tina"
    actions = _actions(engine)
    assert actions.count("user.wrong_pin") == 2 * (identity.MAX_WRONG_PINS - 1)
    assert actions.count("user.locked") == 1 and actions[-1] == "user.pin_accepted"


def test_an_admin_unlocks_and_a_new_pin_unlocks(engine, actors):
    admin, tech = actors[Role.admin], actors[Role.technician]
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", pin="4821")
    for _ in range(identity.MAX_WRONG_PINS):
        _attempt(engine, "0000")
    with uow(engine) as session:
        (listed,) = [u for u in users.list_users(session, actor=admin) if u.username == "tina"]
        assert listed.locked_until is not None
    with pytest.raises(PermissionDenied), uow(engine) as session:
        identity.unlock_user(session, actor=tech, username="tina")
    with uow(engine) as session:
        identity.unlock_user(session, actor=admin, username="tina", reason="called the desk")
    assert _attempt(engine, "4821").actor is not None
    for _ in range(identity.MAX_WRONG_PINS):
        _attempt(engine, "0000")
    with uow(engine) as session:
        users.set_pin(session, actor=admin, username="tina", pin="7777")
    assert _attempt(engine, "7777").actor is not None


def test_personal_tokens_live_until_revoked_or_expired(engine, actors):
    tech, pi = actors[Role.technician], actors[Role.pi]
    with uow(engine) as session:
        token, secret = identity.create_token(session, actor=tech, label="freezer script")
        short, short_secret = identity.create_token(session, actor=tech, days=1)
    assert secret.startswith("bbk_") and len(secret) > 40
    with uow(engine) as session:
        actor = identity.authenticate_token(session, secret=secret, workstation="ws")
        assert actor.username == tech.username
        stored = session.execute(sa.text("SELECT secret_sha256 FROM personal_token")).scalars()
        assert secret not in " ".join(stored)  # only the digest is kept
        assert [t.id for t in identity.list_tokens(session, actor=pi)] == []
        with pytest.raises(PermissionDenied):
            identity.revoke_token(session, actor=pi, token_id=token.id)
        identity.revoke_token(session, actor=tech, token_id=token.id, reason="laptop lost")
    with pytest.raises(AuthenticationFailed, match="revoked"), uow(engine) as session:
        identity.authenticate_token(session, secret=secret, workstation="ws")
    with uow(engine) as session:
        session.execute(
            sa.text("UPDATE personal_token SET expires_at = :past WHERE id = :id"),
            {"past": utcnow() - timedelta(minutes=1), "id": short.id},
        )
    with pytest.raises(AuthenticationFailed, match="expired"), uow(engine) as session:
        identity.authenticate_token(session, secret=short_secret, workstation="ws")


def test_the_policy_defaults_to_required_on_a_server(empty_db_url, engine_name, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(empty_db_url)
    with uow(engine) as session:
        expected = "trusted" if engine_name == "sqlite" else "required"
        assert identity.sign_in_policy(session).value == expected
    engine.dispose()


@pytest.fixture
def server(monkeypatch, empty_db_url, engine_name):
    """A database that requires sign-in, as a PostgreSQL server does from the start (SQLite
    is switched to it by its admin), and a CLI runner on it: `server(*args, input=None,
    code=0, tty=False)`."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0, tty: bool = False):
        monkeypatch.setattr("biobank.cli.common.can_prompt", lambda: tty)
        result = runner.invoke(app, list(args), input=input)
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    assert "set-pin admin" in run("db", "upgrade").stderr
    if engine_name == "sqlite":
        run("user", "sign-in", "required", "--reason", "a shared workstation")
    return run


def test_a_server_asks_the_cli_for_proof_from_the_first_command(server):
    refused = server("user", "list", code=3)
    assert "admin has no PIN yet" in refused.stderr and "set-pin admin" in refused.stderr
    server("user", "set-pin", "admin", "--pin-stdin", input="1357\n")  # the first admin claims
    server("-u", "admin", "user", "add", "tina", "--role", "technician", code=3)  # no terminal
    no_proof = server("user", "list", code=3)
    assert "BIOBANK_TOKEN" in no_proof.stderr and "admin's PIN" in no_proof.stderr
    assert "admin" in server("user", "list", input="1357\n", tty=True).stdout
    server("user", "add", "tina", "--role", "technician", input="1357\n", tty=True)
    # a user without a PIN may set only their own, not take over another account
    taken = server("-u", "tina", "user", "set-pin", "admin", "--pin-stdin", input="2468\n", code=3)
    assert "tina has no PIN yet" in taken.stderr
    server("-u", "tina", "user", "set-pin", "tina", "--pin-stdin", input="2468\n")
    wrong = server("-u", "tina", "scan", "X", input="0000\n", tty=True, code=3)
    assert "wrong PIN" in wrong.stderr and wrong.stdout.strip() == ""
    assert (
        server("-u", "admin", "user", "sign-in", input="1357\n", tty=True).stdout.strip()
        == "required"
    )


def test_wrong_pins_at_the_cli_lock_the_account(server):
    server("user", "set-pin", "admin", "--pin-stdin", input="1357\n")
    for _ in range(identity.MAX_WRONG_PINS):
        server("user", "list", input="9999\n", tty=True, code=3)
    locked = server("user", "list", input="1357\n", tty=True, code=3)
    assert "admin is locked after 5 wrong PINs" in locked.stderr
    assert "biobank user unlock admin" in locked.stderr


def test_a_personal_token_signs_scripts_in(server, monkeypatch, empty_db_url):
    server("user", "set-pin", "admin", "--pin-stdin", input="1357\n")
    made = server("user", "token", "create", "--label", "nightly", "--json", input="1357\n",
                  tty=True)  # fmt: skip
    token = json.loads(made.stdout)
    assert "keep it secret" in made.stderr
    environment = {**os.environ, "BIOBANK_DATABASE_URL": empty_db_url}
    environment["BIOBANK_TOKEN"] = token["secret"]
    listed = subprocess.run(
        [sys.executable, "-m", "biobank", "user", "list", "--json"],
        env=environment, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [u["username"] for u in json.loads(listed.stdout)] == ["admin"]
    monkeypatch.setenv("BIOBANK_TOKEN", token["secret"])
    shown = json.loads(server("user", "token", "list", "--json").stdout)
    assert [(t["id"], t["label"], t["revoked_at"]) for t in shown] == [
        (token["id"], "nightly", None)
    ]
    mismatch = server("-u", "tina", "user", "list", code=3)
    assert "the personal token belongs to admin, not tina" in mismatch.stderr
    server("user", "token", "revoke", str(token["id"]), "--reason", "rotated")
    assert "revoked or expired" in server("user", "list", code=3).stderr
    monkeypatch.delenv("BIOBANK_TOKEN")
    assert (
        "secret" not in server("user", "token", "list", "--json", input="1357\n", tty=True).stdout
    )
