"""A copy of the whole database, and putting one back.

SQLite: the online backup API, a consistent copy while workstations keep working. PostgreSQL:
`pg_dump`'s custom format, checked in a scratch database and then restored with
`pg_restore` in one transaction. A backup holds PHI
and a restore replaces everything, so both are for admins, and both are in the audit trail
(a backup's entry is written after the copy, so it describes a copy that does not hold it).

A backup is written to a temporary file and renamed, so a file under the given name is
whole. A restore first checks the copy: a database of this schema version whose audit chain
verifies; after it, the chain is verified again on the live database.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from biobank import migrate
from biobank.db import make_engine, uow
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import BackupFailed, ValidationError
from biobank.services import audit

SQLITE_HEADER = b"SQLite format 3\x00"


class BackupRead(BaseModel):
    path: Path
    engine: str
    bytes: int
    sha256: str
    audit_entries: int


def backup(engine: Engine, *, actor: Actor, path: Path, replace: bool = False) -> BackupRead:
    """Copy the database to `path`: refused if it exists, unless `replace`, and always if it is
    not a regular file (a device such as /dev/null, a pipe, a folder), whose place the copy
    would take."""
    require(actor, Permission.back_up)
    path = Path(path).expanduser()
    if path.exists() and not path.is_file():
        raise ValidationError(
            f"{path} is not a regular file (a device, a pipe or a folder): give a file's path",
            field="path",
            value=str(path),
        )
    if path.exists() and not replace:
        raise ValidationError(
            f"{path} exists (replace it with --force)", field="path", value=str(path)
        )
    if not path.parent.is_dir():
        raise ValidationError(f"no folder {path.parent}", field="path", value=str(path))
    with uow(engine, readonly=True) as session:
        entries = audit.verify_chain(session, actor=actor).entries
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if engine.dialect.name == "sqlite":
            _sqlite_copy(engine, Path(temporary))
        else:
            _run_pg(engine, "pg_dump", "--format=custom", "--no-owner", f"--file={temporary}")
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    made = BackupRead(
        path=path, engine=engine.dialect.name, bytes=path.stat().st_size, sha256=_sha256(path),
        audit_entries=entries,
    )  # fmt: skip
    with uow(engine) as session:
        audit.record(
            session, actor=actor, action="database.backup", entity="database",
            entity_id=engine.dialect.name, after=made.model_dump(mode="json"),
        )  # fmt: skip
    return made


def restore(engine: Engine, *, actor: Actor, path: Path) -> BackupRead:
    """Replace the database with the copy at `path`, once the copy is checked."""
    require(actor, Permission.back_up)
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValidationError(f"no backup file {path}", field="path", value=str(path))
    if engine.dialect.name == "sqlite":
        _restore_sqlite(engine, path, actor)
    else:
        _restore_postgres(engine, path, actor)
    with uow(engine) as session:
        _check_schema(engine)
        entries = audit.verify_chain(session, actor=actor).entries
        restored = BackupRead(
            path=path, engine=engine.dialect.name, bytes=path.stat().st_size,
            sha256=_sha256(path), audit_entries=entries,
        )  # fmt: skip
        audit.record(
            session, actor=actor, action="database.restore", entity="database",
            entity_id=engine.dialect.name, after=restored.model_dump(mode="json"),
        )  # fmt: skip
    return restored


def _sqlite3(connection: PoolProxiedConnection) -> sqlite3.Connection:
    """The sqlite3 connection a pooled connection of a SQLite engine wraps."""
    driver = connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _sqlite_copy(engine: Engine, target: Path) -> None:
    source = engine.raw_connection()
    try:
        copy = sqlite3.connect(target)
        with copy:
            _sqlite3(source).backup(copy)
        copy.close()
    finally:
        source.close()


def _restore_sqlite(engine: Engine, path: Path, actor: Actor) -> None:
    """Take one snapshot of the backup (through SQLite, so a journal beside it counts), check
    that snapshot, and restore that same snapshot."""
    with path.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise ValidationError(f"{path} is not a SQLite database", field="path",
                                  value=str(path))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="biobank-restore-") as folder:
        snapshot = Path(folder) / "restore.sqlite"
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        copy = sqlite3.connect(snapshot)
        try:
            source.backup(copy)
        except sqlite3.DatabaseError as error:
            raise ValidationError(
                f"{path} is not a whole SQLite database ({error})", field="path",
                value=str(path),
            ) from None  # fmt: skip
        finally:
            source.close()
            copy.close()
        _check_sqlite_copy(snapshot, path, actor)
        target = engine.raw_connection()
        try:
            source = sqlite3.connect(snapshot)
            source.backup(_sqlite3(target))
            source.close()
        finally:
            target.close()


def _restore_postgres(engine: Engine, path: Path, actor: Actor) -> None:
    """Restore a private copy of the dump into a scratch database first, check everything
    there (the schema version, the audit chain), and only then restore the same copy over the
    live database in one transaction: a dump that fails any check replaces nothing."""
    with path.open("rb") as file:
        if file.read(5) != b"PGDMP":
            raise ValidationError(
                f"{path} is not a PostgreSQL backup (pg_dump's custom format)",
                field="path", value=str(path),
            )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="biobank-restore-") as folder:
        copy = Path(folder) / "restore.dump"  # what is checked is what is restored
        shutil.copyfile(path, copy)
        with _scratch_database(engine) as scratch:
            _run_pg(scratch, "pg_restore", "--no-owner", "--single-transaction",
                    "--exit-on-error", str(copy))  # fmt: skip
            _check_schema(scratch)
            with uow(scratch, readonly=True) as session:
                audit.verify_chain(session, actor=actor)
        engine.dispose()  # pg_restore --clean drops the tables: no pooled session may hold them
        _run_pg(engine, "pg_restore", "--clean", "--if-exists", "--no-owner",
                "--single-transaction", "--exit-on-error", str(copy))  # fmt: skip


@contextmanager
def _scratch_database(engine: Engine) -> Iterator[Engine]:
    """An empty database beside the live one (the server role needs CREATEDB), dropped after."""
    name = f"{engine.url.database}_restore_{secrets.token_hex(4)}"[-63:]
    maintenance = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with maintenance.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.DBAPIError as error:
        raise BackupFailed(
            f"a restore is checked in a scratch database first, and it could not be made "
            f"(the database role needs CREATEDB): {str(error.orig).strip().splitlines()[0]}"
        ) from None
    scratch = make_engine(engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield scratch
    finally:
        scratch.dispose()
        with maintenance.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_sqlite_copy(snapshot: Path, path: Path, actor: Actor) -> None:
    """Whole, of this schema version, and its audit chain verifies."""
    checking = sa.create_engine(f"sqlite:///{snapshot}")
    try:
        try:
            with checking.connect() as connection:
                problems = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
        except sa.exc.DatabaseError as error:
            problems = [str(error.orig)]
        if problems != ["ok"]:
            raise ValidationError(
                f"{path} fails SQLite's integrity check: {problems[0]}", field="path",
                value=str(path),
            )  # fmt: skip
        _check_schema(checking)
        with uow(checking, readonly=True) as session:
            audit.verify_chain(session, actor=actor)
    finally:
        checking.dispose()


def _check_schema(engine: Engine) -> None:
    found, head = migrate.current_revision(engine), migrate.head_revision()
    if found != head:
        raise ValidationError(
            f"the backup's schema is {found or 'empty'}, this version's is {head}: restore it "
            "with the version that made it, then `biobank db upgrade`",
            field="path",
        )


def _run_pg(engine: Engine, tool: str, *arguments: str) -> None:
    """Run pg_dump or pg_restore on the engine's database. The password goes in the tool's
    environment, not on its command line, which every user of the machine may read."""
    if shutil.which(tool) is None:
        raise BackupFailed(f"{tool} is not installed (PostgreSQL's client tools)")
    url = engine.url
    in_query = url.query.get("password")  # a str, or a tuple when given more than once
    password = url.password or (in_query if isinstance(in_query, str) else None)
    server = url._replace(drivername="postgresql", password=None)  # (`set` keeps a None)
    server = server.difference_update_query(["password"])
    dbname = f"--dbname={server.render_as_string(hide_password=False)}"
    environment = {**os.environ, "PGPASSWORD": password} if password else None
    done = subprocess.run(
        [tool, dbname, *arguments], capture_output=True, text=True, env=environment
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["failed"])[0]
        raise BackupFailed(f"{tool}: {first}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
