"""Proving who one is: locks after wrong PINs (per workstation, then the account; counted one by
one however many come at once; badges obey them), personal tokens, enrolment and recovery
codes, and the CLI on a database that requires sign-in (a PostgreSQL server's default), from
its first `db upgrade` on."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sign_in_worker import wrong_pins
from typer.testing import CliRunner

from biobank import migrate
from biobank.bootstrap import open_database
from biobank.cli import app
from biobank.db import make_engine, uow
from biobank.domain.vocabulary import Role
from biobank.errors import (
    AuthenticationFailed,
    DatabaseNotReady,
    PermissionDenied,
    ValidationError,
)
from biobank.models import utcnow
from biobank.services import identity, one_time_codes, users
from biobank.settings import Settings

CODE = re.compile(r"^[2-9A-HJ-NP-Z]{4}(-[2-9A-HJ-NP-Z]{4}){3}$")
WRONG = "unknown user, inactive user, or wrong PIN"


def _actions(engine) -> list[str]:
    with engine.connect() as connection:
        query = "SELECT action FROM audit_entry ORDER BY id"
        return list(connection.execute(sa.text(query)).scalars())


def _attempt(engine, pin: str, workstation: str = "ws", **kwargs) -> identity.SignInAttempt:
    with uow(engine) as session:
        return identity.sign_in(
            session, username="tina", pin=pin, workstation=workstation, **kwargs
        )


def _add_tina(engine, admin, **kwargs) -> None:
    with uow(engine) as session:
        users.add_user(session, actor=admin, username="tina", role="technician", **kwargs)


def test_wrong_pins_lock_the_user_at_that_workstation_each_time_for_longer(engine, admin):
    _add_tina(engine, admin, pin="4821")
    for _ in range(identity.MAX_WRONG_PINS - 1):
        assert _attempt(engine, "0000").refusal == WRONG
    assert _attempt(engine, "4821").actor.username == "tina"  # a right PIN starts the count again
    for _ in range(identity.MAX_WRONG_PINS):
        refused = _attempt(engine, "0000")
    assert "tina is locked after 5 wrong PINs at ws" in refused.refusal
    with pytest.raises(AuthenticationFailed, match="locked"):
        _attempt(engine, "4821").accepted()  # the right PIN too, while locked
    later = utcnow() + identity.LOCKOUT + timedelta(seconds=1)
    for _ in range(identity.MAX_WRONG_PINS):  # the lock ran out; five more lock it again…
        _attempt(engine, "0000", now=later)
    for_twice_as_long = later + identity.LOCKOUT + timedelta(seconds=1)
    assert "locked" in _attempt(engine, "4821", now=for_twice_as_long).refusal  # …for longer
    after_that = later + 2 * identity.LOCKOUT + timedelta(seconds=1)
    assert _attempt(engine, "4821", now=after_that).accepted().username == "tina"
    actions = _actions(engine)
    assert actions.count("user.wrong_pin") == 3 * (identity.MAX_WRONG_PINS - 1)
    assert actions.count("user.locked") == 2 and actions[-1] == "user.pin_accepted"


def test_wrong_pins_at_one_workstation_leave_the_others_but_many_lock_the_account(
    engine, admin, monkeypatch
):
    monkeypatch.setattr(identity, "ACCOUNT_WRONG_PINS", 2 * identity.MAX_WRONG_PINS)
    _add_tina(engine, admin, pin="4821")
    for _ in range(identity.MAX_WRONG_PINS):
        _attempt(engine, "0000", workstation="bench-a")
    assert "locked after 5 wrong PINs at bench-a" in _attempt(engine, "4821", "bench-a").refusal
    assert _attempt(engine, "4821", "bench-b").actor is not None  # the user works on at B…
    assert "locked" in _attempt(engine, "4821", "bench-a").refusal  # …and A stays locked
    # one who renames their workstation at each lock is stopped by the account's count
    for number in range(2 * identity.MAX_WRONG_PINS):
        refused = _attempt(engine, "0000", f"rogue-{number // identity.MAX_WRONG_PINS}")
    assert "tina is locked after 10 wrong PINs at several workstations" in refused.refusal
    assert "locked" in _attempt(engine, "4821", "bench-b").refusal
    actions = _actions(engine)
    assert actions.count("user.locked") == 2 and actions.count("user.account_locked") == 1


def test_an_admin_unlocks_and_a_new_pin_unlocks(engine, actors):
    admin, tech = actors[Role.admin], actors[Role.technician]
    _add_tina(engine, admin, pin="4821")
    for _ in range(identity.MAX_WRONG_PINS):
        _attempt(engine, "0000")
    assert "locked" in _attempt(engine, "4821").refusal
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


def test_a_badge_obeys_the_locks_and_deactivation(engine, admin):
    _add_tina(engine, admin, pin="4821", badge="badge-7")

    def badge(workstation: str = "ws") -> str:
        with uow(engine) as session:
            return identity.authenticate_badge(
                session, badge="BADGE-7", workstation=workstation
            ).username

    assert badge() == "tina"
    for _ in range(identity.MAX_WRONG_PINS):
        _attempt(engine, "0000")
    with pytest.raises(AuthenticationFailed, match="tina is locked after 5 wrong PINs at ws"):
        badge()
    assert badge("bench-b") == "tina"  # the lock is that workstation's
    with uow(engine) as session:
        users.deactivate_user(session, actor=admin, username="tina")
    with pytest.raises(AuthenticationFailed, match="unknown or inactive badge"):
        badge("bench-b")


# --- wrong PINs at once ---------------------------------------------------------------------

PROCESSES = {"sqlite": 3, "postgres": 6}  # SQLite writes one at a time, the PIN check included


def _typing_at_once(url: str, *, processes: int, attempts: int) -> list[str | None]:
    """`processes` processes at one workstation, each typing `attempts` wrong PINs for tina,
    all at once; their refusals."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    processes = [
        context.Process(target=wrong_pins, args=(url, "tina", "bench-1", attempts, start, results))
        for _ in range(processes)
    ]
    for process in processes:
        process.start()
    try:
        done = [results.get(timeout=180) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    failures = [d for d in done if isinstance(d, str)]
    assert not failures, "\n".join(failures)
    return [refusal for refusals in done for refusal in refusals]


def test_wrong_pins_at_once_lock_at_the_fifth(engine, engine_name, db_url, admin):
    """Each wrong PIN is counted, however many come at once: the fifth locks, once, and the
    ones after it are refused without being checked."""
    _add_tina(engine, admin, pin="4821")
    tries = 2 * PROCESSES[engine_name]
    refusals = _typing_at_once(db_url, processes=PROCESSES[engine_name], attempts=2)
    assert refusals.count(WRONG) == identity.MAX_WRONG_PINS - 1
    locked = "tina is locked after 5 wrong PINs at bench-1"
    assert sum(locked in refusal for refusal in refusals) == tries - identity.MAX_WRONG_PINS + 1
    actions = _actions(engine)
    assert actions.count("user.wrong_pin") == identity.MAX_WRONG_PINS - 1
    assert actions.count("user.locked") == 1
    assert "locked" in _attempt(engine, "4821", "bench-1").refusal
    assert _attempt(engine, "4821", "bench-2").actor is not None


# --- personal tokens -----------------------------------------------------------------------


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


# --- enrolment and recovery codes ------------------------------------------------------------


def _enrol(engine, code: str, pin: str = "2468", **kwargs) -> identity.SignInAttempt:
    with uow(engine) as session:
        return one_time_codes.enrol(
            session, username="tina", code=code, pin=pin, workstation="ws", **kwargs
        )


def test_an_enrolment_code_sets_a_first_pin_once_before_it_expires(engine, actors):
    admin, tech = actors[Role.admin], actors[Role.technician]
    _add_tina(engine, admin)
    with pytest.raises(PermissionDenied), uow(engine) as session:
        one_time_codes.issue_enrolment_code(session, actor=tech, username="tina")
    with uow(engine) as session:
        user, code = one_time_codes.issue_enrolment_code(session, actor=admin, username="tina")
    assert CODE.match(code) and not user.has_pin
    assert user.enrolment_expires_at > utcnow() + one_time_codes.ENROLMENT - timedelta(minutes=1)
    query = sa.text("SELECT * FROM app_user WHERE id = :id")
    with engine.connect() as connection:
        row = str(connection.execute(query, {"id": user.id}).one())
    assert code not in row and code.replace("-", "") not in row  # only its digest is kept
    assert "wrong or used" in _enrol(engine, "2222-3333-4444-5555").refusal
    late = utcnow() + one_time_codes.ENROLMENT + timedelta(seconds=1)
    assert "has expired" in _enrol(engine, code, now=late).refusal
    with pytest.raises(ValidationError) as bad_pin:
        _enrol(engine, code, pin="12")  # refused before the code is spent
    assert bad_pin.value.field == "pin"
    assert _enrol(engine, f" {code.lower()} ").accepted().username == "tina"
    assert "wrong or used" in _enrol(engine, code, pin="1357").refusal  # once only
    assert _attempt(engine, "2468").actor is not None
    with pytest.raises(ValidationError, match="has a PIN already"), uow(engine) as session:
        one_time_codes.issue_enrolment_code(session, actor=admin, username="tina")
    actions = _actions(engine)
    assert actions.count("user.enrolment_refused") == 2 and actions.count("user.enrol") == 1


def test_a_new_code_voids_the_one_before_and_a_pin_set_by_an_admin_voids_it(engine, admin):
    _add_tina(engine, admin)
    with uow(engine) as session:
        _, first = one_time_codes.issue_enrolment_code(session, actor=admin, username="tina")
        _, second = one_time_codes.issue_enrolment_code(session, actor=admin, username="tina")
    assert _enrol(engine, first).actor is None
    with uow(engine) as session:
        users.set_pin(session, actor=admin, username="tina", pin="9753")
    assert _enrol(engine, second).actor is None


def test_requiring_sign_in_needs_ones_own_pin_first(engine, admin):
    with pytest.raises(ValidationError, match="set your own PIN"), uow(engine) as session:
        identity.set_sign_in_policy(session, actor=admin, policy="required")
    with uow(engine) as session:
        users.set_pin(session, actor=admin, username="admin", pin="1357")
        identity.set_sign_in_policy(session, actor=admin, policy="required")


# --- the CLI on a database that requires sign-in ---------------------------------------------


def test_the_policy_defaults_to_required_on_a_server(empty_db_url, engine_name, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    upgraded = CliRunner().invoke(app, ["db", "upgrade", "--admin-pin-stdin"], input="1357\n")
    assert upgraded.exit_code == 0
    engine = make_engine(empty_db_url)
    with uow(engine) as session:
        expected = "trusted" if engine_name == "sqlite" else "required"
        assert identity.sign_in_policy(session).value == expected
    engine.dispose()


def test_a_new_server_database_never_has_an_admin_without_a_pin(postgres_databases, monkeypatch):
    url = postgres_databases.create()
    monkeypatch.setenv("BIOBANK_DATABASE_URL", url)
    runner, engine = CliRunner(), make_engine(url)
    refused = runner.invoke(app, ["db", "upgrade"])  # no terminal to ask in, no PIN given
    assert refused.exit_code == 2 and "--admin-pin-stdin" in refused.stderr
    assert migrate.current_revision(engine) is None  # nothing was made
    monkeypatch.setattr("biobank.cli.common.can_prompt", lambda: True)
    upgraded = runner.invoke(app, ["db", "upgrade"], input="1357\n1357\n")  # typed twice
    assert upgraded.exit_code == 0, upgraded.stderr
    assert CODE.match(upgraded.stdout.strip()) and "recovery code" in upgraded.stderr
    query = "SELECT username, pin_hash IS NOT NULL, recovery_code_sha256 IS NOT NULL FROM app_user"
    with engine.connect() as connection:
        rows = connection.execute(sa.text(query)).all()
    assert [tuple(row) for row in rows] == [("admin", True, True)]
    engine.dispose()
    # a server database migrated by other means gets no PIN-less admin when opened either
    bare = postgres_databases.create()
    migrate.upgrade(make_engine(bare))
    with pytest.raises(DatabaseNotReady, match="no users yet"):
        open_database(Settings(database_url=bare))


@pytest.fixture
def server(monkeypatch, empty_db_url, engine_name):
    """A database that requires sign-in, as a PostgreSQL server does from the start (SQLite
    is switched to it by its admin), whose first admin's PIN is 1357, and a CLI runner on it:
    `server(*args, input=None, code=0, tty=False)`; `server.recovery_code` is admin's."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0, tty: bool = False):
        monkeypatch.setattr("biobank.cli.common.can_prompt", lambda: tty)
        result = runner.invoke(app, list(args), input=input)
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    run.recovery_code = run("db", "upgrade", "--admin-pin-stdin", input="1357\n").stdout.strip()
    if engine_name == "sqlite":
        run("user", "sign-in", "required", "--reason", "a shared workstation")
    return run


def test_a_server_asks_the_cli_for_proof_from_the_first_command(server):
    no_proof = server("user", "list", code=3)
    assert "BIOBANK_TOKEN" in no_proof.stderr and "admin's PIN" in no_proof.stderr
    assert "admin" in server("user", "list", input="1357\n", tty=True).stdout
    server("-u", "admin", "user", "add", "tina", "--role", "technician", code=3)  # no terminal
    wrong = server("-u", "admin", "scan", "X", input="0000\n", tty=True, code=3)
    assert "wrong PIN" in wrong.stderr and wrong.stdout.strip() == ""
    assert (
        server("-u", "admin", "user", "sign-in", input="1357\n", tty=True).stdout.strip()
        == "required"
    )


def test_an_account_without_a_pin_is_claimed_only_with_its_enrolment_code(server):
    added = server("user", "add", "tina", "--role", "technician", input="1357\n", tty=True)
    code = added.stdout.strip()
    assert CODE.match(code) and "biobank -u tina user set-pin tina" in added.stderr

    def set_pin(*options: str, input: str, code: int = 0, tty: bool = False):
        return server("-u", "tina", "user", "set-pin", *options, input=input, code=code, tty=tty)

    taken = server("-u", "tina", "user", "set-pin", "admin", "--pin-stdin", input="2468\n", code=3)
    assert "tina has no PIN yet" in taken.stderr  # nor another account through this one
    unproven = set_pin("tina", "--pin-stdin", input="2468\n", code=3)
    assert "the enrolment code is needed" in unproven.stderr
    not_the_code = "2222-3333-4444-5555\n2468\n"
    wrong = set_pin("tina", "--code-stdin", "--pin-stdin", input=not_the_code, code=3)
    assert "wrong or used enrolment code" in wrong.stderr
    set_pin("tina", input=f"{code}\n2468\n2468\n", tty=True)  # asked in a terminal
    again = set_pin("tina", "--code-stdin", "--pin-stdin", input=f"{code}\n1111\n", code=3)
    assert "requires sign-in" in again.stderr  # tina has a PIN now: she signs in with it
    server("-u", "tina", "user", "token", "list", input="2468\n", tty=True)


def test_wrong_pins_at_the_cli_lock_and_the_recovery_code_gets_admin_back_once(server):
    for _ in range(identity.MAX_WRONG_PINS):
        server("user", "list", input="9999\n", tty=True, code=3)
    locked = server("user", "list", input="1357\n", tty=True, code=3)
    assert "admin is locked after 5 wrong PINs" in locked.stderr
    assert "biobank user unlock admin" in locked.stderr
    assert "biobank user recover admin" in locked.stderr

    def recover(code: str, pin: str, exit_code: int = 0):
        options = ("--code-stdin", "--pin-stdin")
        return server(
            "user", "recover", "admin", *options, input=f"{code}\n{pin}\n", code=exit_code
        )

    wrong = recover("2222-3333-4444-5555", "8642", exit_code=3)
    assert "wrong or used recovery code" in wrong.stderr
    back = recover(server.recovery_code, "8642")
    assert "back in" in back.stderr
    next_code = back.stdout.strip()
    assert CODE.match(next_code) and next_code != server.recovery_code
    recover(server.recovery_code, "1111", exit_code=3)  # a recovery code works once
    assert "admin" in server("user", "list", input="8642\n", tty=True).stdout
    recover(next_code, "7531")  # the next one works
    server("user", "list", input="7531\n", tty=True)


def test_a_personal_token_signs_scripts_in(server, monkeypatch, empty_db_url):
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


def test_a_script_signs_in_with_a_pin_on_stdin_and_it_counts_towards_the_lockout(
    server, empty_db_url
):
    """A provisioning script, without a terminal, makes the first personal token with the PIN
    on stdin; a wrong PIN read so counts towards the lockout as a typed one does, and only
    one bounded line is read."""

    def script(*args: str, stdin: str, token: str | None = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, "BIOBANK_DATABASE_URL": empty_db_url}
        if token is not None:
            environment["BIOBANK_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "biobank", "-u", "admin", *args], env=environment,
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    create = ("user", "token", "create", "--pin-stdin", "--json")
    no_pin = script(*create, stdin="")
    assert no_pin.returncode == 2 and "no PIN for admin on stdin" in no_pin.stderr
    endless = script(*create, stdin="1357" * 100_000)  # no line break: not read to its end
    assert endless.returncode == 2 and "longer than 256 characters" in endless.stderr
    made = script(*create, stdin="1357\n")
    assert made.returncode == 0, made.stderr
    listed = script("user", "list", "--json", stdin="", token=json.loads(made.stdout)["secret"])
    assert listed.returncode == 0, listed.stderr
    assert [u["username"] for u in json.loads(listed.stdout)] == ["admin"]

    for _ in range(identity.MAX_WRONG_PINS - 1):  # typed: neither refusal above counted
        typed = server("user", "list", input="9999\n", tty=True, code=3)
        assert "wrong PIN" in typed.stderr and "locked" not in typed.stderr
    wrong = script(*create, stdin="9999\n")
    assert (wrong.returncode, wrong.stdout) == (3, "")
    assert "admin is locked after 5 wrong PINs" in wrong.stderr
    right = script(*create, stdin="1357\n")
    assert (right.returncode, right.stdout) == (3, "") and "locked" in right.stderr
