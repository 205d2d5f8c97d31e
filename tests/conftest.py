"""Shared fixtures: real databases on both engines, migrated with Alembic.

Database tests run on a SQLite file and on PostgreSQL. PostgreSQL comes from
`BIOBANK_TEST_POSTGRES_URL` (a database the tests may create siblings of); without it the
PostgreSQL half is skipped on a developer machine and fails in CI (`CI=true`).

Each test gets its own database, copied from one migrated per run (a file copy for SQLite,
`CREATE DATABASE … TEMPLATE` for PostgreSQL), so tests never share state.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cohort_seed import seed_cohort
from request_flow import place_in_boxes, receiving_site, send
from sqlalchemy.engine import Engine, make_url
from typer.testing import CliRunner

from biobank import migrate
from biobank.bootstrap import bootstrap
from biobank.cli import app
from biobank.db import make_engine, uow
from biobank.domain.permissions import Actor
from biobank.domain.vocabulary import Role
from biobank.models import SiteSetting
from biobank.services.identity import SignInPolicy, actor_for
from biobank.services.reference_data import install_reference_data
from biobank.services.users import add_user

ENGINES = ("sqlite", "postgres")
_names = itertools.count()


@pytest.fixture(autouse=True)
def _heap_thawed():
    """The workstation freezes the heap at its first sign-in, for the life of its process; a
    test's is the test's: what it froze is thawed after it, to be collected."""
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Never touch the developer's own settings or data: platform dirs point into tmp."""
    home = tmp_path_factory.mktemp("home")
    for var in ("BIOBANK_DATABASE_URL", "BIOBANK_USER", "BIOBANK_WORKSTATION", "BIOBANK_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("BIOBANK_CONFIG", str(home / "config" / "biobank" / "config.toml"))


def postgres_base_url() -> str:
    url = os.environ.get("BIOBANK_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail("BIOBANK_TEST_POSTGRES_URL is not set: CI runs every PostgreSQL test")
    pytest.skip("PostgreSQL tests need BIOBANK_TEST_POSTGRES_URL")


class PostgresDatabases:
    """Creates and drops throwaway databases beside the one the tests were given."""

    def __init__(self, base_url: str):
        self.base = make_url(base_url)
        if self.base.drivername == "postgresql":
            self.base = self.base.set(drivername="postgresql+psycopg")
        # pinged: a server restarted under the tests (tests/test_server_restart.py) drops it
        self.admin = sa.create_engine(self.base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.created: list[str] = []

    def create(self, template: str | None = None) -> str:
        name = f"{self.base.database}_{os.getpid()}_{next(_names)}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(postgres_base_url())
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory) -> dict[str, object]:
    """Filled lazily: one migrated database per engine, the template for every test's copy."""
    return {}


def _fresh_database(request, engine_name: str, *, migrated: bool) -> str:
    if engine_name == "sqlite":
        path = request.getfixturevalue("tmp_path") / f"db{next(_names)}.sqlite"
        if migrated:
            shutil.copy(_sqlite_template(request), path)
        return f"sqlite:///{path}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    if not migrated:
        return databases.create()
    return databases.create(template=_postgres_template(request, databases))


def _migrate_with_reference_data(engine: Engine) -> None:
    """What every opened database has: the schema and the shipped reference data."""
    migrate.upgrade(engine)
    with uow(engine) as session:
        install_reference_data(session)


def act_by_name(engine: Engine) -> None:
    """Let the CLI act as the user it is told, as on SQLite, for tests about something else;
    tests/test_sign_in.py covers a server's default (a PIN or a token required)."""
    with uow(engine) as session:
        session.add(SiteSetting(key="cli_sign_in", value=SignInPolicy.trusted.value))


def _sqlite_template(request) -> Path:
    templates = request.getfixturevalue("migrated_templates")
    if "sqlite" not in templates:
        path = request.getfixturevalue("tmp_path_factory").mktemp("template") / "t.sqlite"
        engine = make_engine(f"sqlite:///{path}")
        _migrate_with_reference_data(engine)
        engine.dispose()  # the last connection to close checkpoints the WAL into the file
        templates["sqlite"] = path
    return templates["sqlite"]


def _postgres_template(request, databases: PostgresDatabases) -> str:
    templates = request.getfixturevalue("migrated_templates")
    if "postgres" not in templates:
        url = databases.create()
        engine = make_engine(url)
        _migrate_with_reference_data(engine)
        act_by_name(engine)
        engine.dispose()
        templates["postgres"] = make_url(url).database
    return templates["postgres"]


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def empty_db_url(request, engine_name) -> str:
    """A new, empty database (no tables)."""
    return _fresh_database(request, engine_name, migrated=False)


@pytest.fixture
def db_url(request, engine_name) -> str:
    """A new database migrated to head, without users."""
    return _fresh_database(request, engine_name, migrated=True)


@pytest.fixture
def admin_db_url(db_url) -> str:
    """`db_url` with its first admin (no PIN, as tests act by name: see `act_by_name`), as
    `biobank db upgrade` leaves a server database; the CLI refuses a server without users."""
    engine = make_engine(db_url)
    bootstrap(engine)
    engine.dispose()
    return db_url


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    engine = make_engine(db_url)
    bootstrap(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(request) -> Iterator[Engine]:
    """A migrated PostgreSQL database, for what only PostgreSQL has."""
    engine = make_engine(_fresh_database(request, "postgres", migrated=True))
    bootstrap(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def admin(engine) -> Actor:
    with uow(engine) as session:
        return actor_for(session, username="admin", workstation="test-bench")


@pytest.fixture
def actors(engine, admin) -> dict[Role, Actor]:
    """One signed-in actor per role (PINs: 4444)."""
    result = {Role.admin: admin}
    with uow(engine) as session:
        for role in (Role.technician, Role.pi):
            add_user(session, actor=admin, username=f"{role.value}1", role=role, pin="4444")
    for role in (Role.technician, Role.pi):
        with uow(engine) as session:
            result[role] = actor_for(session, username=f"{role.value}1", workstation="test-bench")
    return result


@pytest.fixture
def cohort_db(engine, admin) -> Engine:
    """Five participants with phenotypes, consent, PHI and serum (tests/cohort_seed.py)."""
    return seed_cohort(engine, admin)


@pytest.fixture
def boxes(cohort_db, actors) -> list[str]:
    """The cohort's serum placed in two boxes of a freezer (tests/request_flow.py)."""
    return place_in_boxes(cohort_db, actors)


@pytest.fixture
def sent(cohort_db, boxes, actors, tmp_path):
    """A request of the cohort picked, packed and sent: its shipment, manifest and tubes."""
    return send(cohort_db, actors, tmp_path)


@pytest.fixture
def receiver(request, engine_name):
    """The receiving biobank: a database of its own, with study EXT and a box; its engine,
    admin and box."""
    engine, admin, box = receiving_site(_fresh_database(request, engine_name, migrated=True))
    yield engine, admin, box
    engine.dispose()


@pytest.fixture
def fresh_cli(monkeypatch, empty_db_url):
    """The CLI run in-process on a fresh database it upgrades itself: `fresh_cli(*args,
    input=None, code=0)` asserts the exit code and returns the result."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", empty_db_url)
    runner = CliRunner()

    def run(*args: object, input: str | None = None, code: int = 0):
        result = runner.invoke(app, [str(a) for a in args], input=input)
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    run("db", "upgrade", "--admin-pin-stdin", input="1357\n")  # a server's admin has one at once
    engine = make_engine(empty_db_url)
    act_by_name(engine)
    engine.dispose()
    return run


@pytest.fixture
def demo_cli(monkeypatch, admin_db_url):
    """The CLI run in-process on a demo database (three participants): `demo_cli(*args,
    code=0)` asserts the exit code and returns the result."""
    monkeypatch.setenv("BIOBANK_DATABASE_URL", admin_db_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    run("demo", "--participants", "3")
    return run
