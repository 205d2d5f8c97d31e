"""The least-privilege workstation role (`services.db_roles`): biobank works as that role on
PostgreSQL, while the server refuses it every deletion but the one biobank makes, every
TRUNCATE, any change to the audit trail and any change to a table."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from inventory import accession_tube
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from typer.testing import CliRunner

import biobank
from biobank import cli
from biobank.db import make_engine, uow
from biobank.domain.permissions import Actor
from biobank.errors import ValidationError
from biobank.models import PinLockout
from biobank.services import custody, identity, participants, storage, users
from biobank.services.db_roles import workstation_role_sql

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
ONLY_POSTGRES = pytest.mark.parametrize("engine_name", ["postgres"], indirect=True)


def _expected(table: str) -> set[str]:
    if table == "alembic_version":
        return {"SELECT"}
    if table == "audit_entry":
        return {"SELECT", "INSERT"}
    deleted = ("pin_lockout", "visit", "phenotype_value", "phenotype_missing")
    if table in deleted:  # where biobank deletes
        return {"SELECT", "INSERT", "UPDATE", "DELETE"}
    return {"SELECT", "INSERT", "UPDATE"}


@pytest.fixture
def role(engine) -> Iterator[str]:
    """A login role made by the SQL, run as the owner of a migrated database; then given more
    rights and the SQL run again, which takes them back. Dropped afterwards."""
    name = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    sql = workstation_role_sql(name)
    more = f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"'
    try:
        for statements in (sql, more, sql):
            with engine.begin() as connection:
                connection.exec_driver_sql(statements)
        yield name
    finally:
        with engine.begin() as connection:
            made = sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r")
            if connection.execute(made, {"r": name}).scalar():
                connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
                connection.exec_driver_sql(f'DROP ROLE "{name}"')


@pytest.fixture
def as_role(engine, role) -> Iterator[Engine]:
    """The same database, connected as the role (the test server trusts local logins)."""
    url = engine.url.set(username=role).render_as_string(hide_password=False)
    workstation = make_engine(url)
    yield workstation
    workstation.dispose()


def _refused(engine: Engine, sql: str) -> str:
    """The server's refusal of `sql`: a missing privilege (SQLSTATE 42501), nothing else."""
    with pytest.raises(sa.exc.ProgrammingError) as refusal, engine.begin() as connection:
        connection.exec_driver_sql(sql)
    assert refusal.value.orig.sqlstate == "42501", refusal.value
    return str(refusal.value.orig)


@ONLY_POSTGRES
def test_the_role_has_exactly_its_privileges(engine, role):
    tables = [t.name for t in SQLModel.metadata.sorted_tables] + ["alembic_version"]
    with engine.connect() as connection:
        for table in tables:
            granted = {
                p
                for p in PRIVILEGES
                if connection.execute(
                    sa.text("SELECT has_table_privilege(:r, :t, :p)"),
                    {"r": role, "t": table, "p": p},
                ).scalar()
            }
            assert granted == _expected(table), table
        owns = connection.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tableowner = :r"), {"r": role}
        ).scalar()
        assert owns == 0


@ONLY_POSTGRES
def test_biobank_runs_as_the_role(engine, admin, as_role, monkeypatch):
    monkeypatch.setenv("BIOBANK_DATABASE_URL", as_role.url.render_as_string(hide_password=False))
    runner = CliRunner()
    for args in (["study", "add", "SLE", "--title", "Lupus registry"], ["audit", "verify"]):
        result = runner.invoke(cli.app, ["-u", "admin", *args])
        assert result.exit_code == 0, (args, result.stderr)
    tech = _inventory_work(as_role, admin)
    _wrong_pins_forgotten(as_role, admin, tech)


def _inventory_work(workstation: Engine, admin: Actor) -> Actor:
    """Storage, a participant, a tube placed (a serial from its sequence, a box's free count
    updated under a row lock), checked out and in; returns a technician who has a PIN."""
    drawn = datetime(2024, 3, 1, 9, 0).astimezone()
    with uow(workstation) as s:
        storage.add_unit(s, actor=admin, kind="box", name="Box", barcode="BOX-1", grid=(9, 9))
        participants.add_participant(s, actor=admin, study="SLE", code="P-0001")
        tube = accession_tube(s, admin, "P-0001", collected_at=drawn, destination="BOX-1")
        custody.check_out(s, actor=admin, accession=tube.accession_id)
        custody.check_in(s, actor=admin, accession=tube.accession_id)
        users.add_user(s, actor=admin, username="tech1", role="technician", pin="4444")
    with uow(workstation) as s:
        return identity.actor_for(s, username="tech1", workstation="bench")


def _wrong_pins_forgotten(workstation: Engine, admin: Actor, tech: Actor) -> None:
    """The deletions biobank makes: a workstation's wrong PINs, forgotten when the right PIN
    comes (an ORM delete), and when an admin lifts the lock (a bulk delete)."""

    def sign_in(pin: str) -> None:
        with uow(workstation) as s:
            identity.sign_in(s, username=tech.username, pin=pin, workstation="bench")

    def counts() -> int:
        with workstation.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(PinLockout)).scalar()

    sign_in("0000")
    assert counts() == 1
    sign_in("4444")
    assert counts() == 0
    sign_in("0000")
    with uow(workstation) as s:
        identity.unlock_user(s, actor=admin, username=tech.username)
    assert counts() == 0


@ONLY_POSTGRES
def test_the_server_refuses_the_role_what_it_must_not_do(as_role):
    _refused(as_role, "DELETE FROM specimen")
    _refused(as_role, "DELETE FROM audit_entry")
    _refused(as_role, "TRUNCATE audit_entry")
    _refused(as_role, "TRUNCATE specimen CASCADE")
    _refused(as_role, "UPDATE audit_entry SET reason = 'x'")
    _refused(as_role, "UPDATE alembic_version SET version_num = 'x'")
    assert "must be owner" in _refused(as_role, "DROP TABLE specimen")
    _refused(as_role, "ALTER TABLE specimen ADD COLUMN x integer")
    _refused(as_role, "CREATE TABLE x (id integer)")
    with as_role.begin() as connection:  # what it may do
        connection.exec_driver_sql("UPDATE specimen SET notes = notes")
        connection.exec_driver_sql("DELETE FROM pin_lockout")


@ONLY_POSTGRES
def test_the_owner_is_not_made_a_workstation_role(engine):
    owner = engine.url.username
    with pytest.raises(sa.exc.DBAPIError, match="has the rights of the tables' owner"):
        with engine.begin() as connection:
            connection.exec_driver_sql(workstation_role_sql(owner))


@pytest.mark.parametrize("name", ["Bench", "9bench", 'x"; DROP TABLE specimen; --', "a" * 64, ""])
def test_a_role_name_is_checked(name):
    with pytest.raises(ValidationError, match="not a role name"):
        workstation_role_sql(name)


def test_the_command_prints_the_sql(monkeypatch):
    """Registered under a name of its own here; the lead wires it as `db workstation-role`."""
    command = ("biobank.cli.role_commands", "workstation_role_command")
    monkeypatch.setitem(cli.COMMANDS, "workstation-role", command)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["workstation-role", "bench"])
    assert result.exit_code == 0 and result.stdout == workstation_role_sql("bench")
    refused = runner.invoke(cli.app, ["workstation-role", "Bench"])
    assert refused.exit_code == 2 and "not a role name" in refused.stderr


def test_biobank_deletes_only_wrong_pin_counts():
    """The role may DELETE where biobank deletes, nowhere else: a new deletion needs its grant
    (`services.db_roles`), or workstations are refused it."""
    services = Path(biobank.__file__).parent / "services"
    found = sorted(
        f"{path.name}: {line.strip()}"
        for path in services.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"\.delete\(|DELETE FROM", line)
    )
    assert found == [
        "identity.py: session.delete(here)",  # here: a PinLockout
        "participants.py: session.delete(gone)",  # a merged visit, and its values the kept one has
        "phenotypes.py: session.delete(row)",  # a value or missing-data code gone or replaced
        "users.py: session.execute("
        "sa.delete(PinLockout).where(col(PinLockout.user_id) == user.id))",
    ], "a new deletion: grant it in services/db_roles.py"
