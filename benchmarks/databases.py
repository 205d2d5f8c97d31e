"""The throwaway databases a run works on, and raw driver connections to them.

SQLite is a file in a temporary directory (or `--dir`); PostgreSQL is a fresh database
`biobank_bench_<size>` created beside the maintenance database `BIOBANK_BENCH_POSTGRES_URL`
names. Both are removed after the run unless `--keep`. A baseline that must commit what it
writes works on a scratch copy (`scratch_copy`), so the database the benchmarks share is left
as it was.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from biobank.db import SQLITE_PRAGMAS

ENGINES = ("sqlite", "postgres")
POSTGRES_ENV = "BIOBANK_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class BenchDatabase:
    engine_name: str  # "sqlite" or "postgres"
    url: str  # for biobank.db.make_engine

    def connect(self):
        """A raw DB-API connection (sqlite3 in autocommit mode, or psycopg), set as biobank's
        own connections are."""
        parsed = make_url(self.url)
        if self.engine_name == "sqlite":
            connection = sqlite3.connect(parsed.database, isolation_level=None, timeout=10)
            for pragma in SQLITE_PRAGMAS:
                connection.execute(f"PRAGMA {pragma}")
            return connection
        import psycopg

        return psycopg.connect(
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        )

    def driver(self):
        """The DB-API module, for its exception classes."""
        if self.engine_name == "sqlite":
            return sqlite3
        import psycopg

        return psycopg

    def sql(self, query: str) -> str:
        """`?` placeholders in the driver's own style."""
        return query if self.engine_name == "sqlite" else query.replace("?", "%s")

    @contextmanager
    def scratch_copy(self) -> Iterator[BenchDatabase]:
        """A copy of this database, dropped afterwards. On PostgreSQL nothing may be connected
        to this one while it is copied (it is the copy's template)."""
        parsed = make_url(self.url)
        if self.engine_name == "sqlite":
            path = Path(f"{parsed.database}.copy")
            try:
                with (
                    closing(sqlite3.connect(parsed.database)) as source,
                    closing(sqlite3.connect(path)) as copy,
                ):
                    source.backup(copy)
                yield BenchDatabase("sqlite", f"sqlite:///{path}")
            finally:
                _remove_sqlite(path)
            return
        with postgres_database(
            self.url, f"{parsed.database}_copy", template=parsed.database
        ) as copy:
            yield copy

    def server_version(self) -> str:
        if self.engine_name == "sqlite":
            return sqlite3.sqlite_version
        with self.connect() as connection:
            return connection.execute("SHOW server_version").fetchone()[0]


class Unreachable(Exception):
    """The PostgreSQL server to benchmark cannot be reached."""


def postgres_maintenance_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)


@contextmanager
def postgres_database(
    url: str, name: str, *, template: str | None = None
) -> Iterator[BenchDatabase]:
    """A database `name` beside `url`'s (empty, or a copy of `template`), dropped afterwards."""
    admin = sa.create_engine(
        make_url(postgres_maintenance_url()).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
    )
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    create = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(drop)
            connection.exec_driver_sql(create)
        url = make_url(url).set(database=name).render_as_string(hide_password=False)
        yield BenchDatabase("postgres", url)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(drop)
        admin.dispose()


@contextmanager
def bench_database(
    engine_name: str, *, size: int, directory: Path | None, keep: bool
) -> Iterator[BenchDatabase]:
    name = f"biobank_bench_{size}"
    if engine_name == "sqlite":
        with _sqlite_file(name, directory, keep) as path:
            yield BenchDatabase("sqlite", f"sqlite:///{path}")
        return
    maintenance = make_url(postgres_maintenance_url()).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(maintenance, isolation_level="AUTOCOMMIT")
    try:
        connection = admin.connect()
    except sa.exc.OperationalError as error:
        raise Unreachable(
            f"cannot reach PostgreSQL at {maintenance.render_as_string()} ({error.orig}); "
            f"set {POSTGRES_ENV} or run with --engines sqlite"
        ) from error
    with connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = maintenance.set(database=name).render_as_string(hide_password=False)
        yield BenchDatabase("postgres", url)
    finally:
        if keep:
            print(f"kept PostgreSQL database {name}", file=sys.stderr)
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def _sqlite_file(name: str, directory: Path | None, keep: bool) -> Iterator[Path]:
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="biobank_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.sqlite"
    _remove_sqlite(path)
    try:
        yield path
    finally:
        if keep:
            print(f"kept SQLite database {path}", file=sys.stderr)
        elif directory:
            _remove_sqlite(path)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_sqlite(path: Path) -> None:
    """A SQLite file and its write-ahead log."""
    for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))):
        file.unlink(missing_ok=True)
