"""A copy of the whole database, and putting one back.

SQLite: the online backup API, a consistent copy while workstations keep working. PostgreSQL:
`pg_dump`'s custom format, checked in a scratch database and then restored with
`pg_restore` in one transaction. A backup holds PHI
and a restore replaces everything, so both are for admins, and both are in the audit trail
(a backup's entry is written after the copy, so it describes a copy that does not hold it).

A backup is written to a temporary file and renamed, so a file under the given name is
whole. It verifies the audit chain after the last verified checkpoint first and appends a new
checkpoint, which the copy holds. A restore first checks the copy: a database of this schema
version whose audit chain verifies, after the copy's own checkpoint if this database recorded
the backup of exactly that file (its SHA-256, no journal beside it), else all of it; after the
restore the live database's chain must end where the checked one did, and is not walked again.
"""

from __future__ import annotations

import hashlib
import json
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
from sqlmodel import Session, col

from biobank import migrate
from biobank.db import make_engine, uow
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import BackupFailed, ValidationError
from biobank.models import AuditEntry
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
        verified = audit.verify_chain(session, actor=actor, incremental=True)
    with uow(engine) as session:
        audit.record_verified(session, actor=actor, report=verified)  # in the copy too
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
        audit_entries=verified.entries,
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
    sha256 = _sha256(path)
    since_checkpoint = _backed_up_here(engine, sha256) and not _journal_beside(path)
    if engine.dialect.name == "sqlite":
        checked = _restore_sqlite(engine, path, actor, since_checkpoint)
    else:
        checked = _restore_postgres(engine, path, actor, since_checkpoint)
    with uow(engine) as session:
        _check_schema(engine)
        _holds_what_was_checked(session, checked)
        restored = BackupRead(
            path=path, engine=engine.dialect.name, bytes=path.stat().st_size,
            sha256=sha256, audit_entries=checked.entries,
        )  # fmt: skip
        audit.record(
            session, actor=actor, action="database.restore", entity="database",
            entity_id=engine.dialect.name, after=restored.model_dump(mode="json"),
        )  # fmt: skip
    return restored


def _backed_up_here(engine: Engine, sha256: str) -> bool:
    """Whether this database's trail records a backup of exactly these bytes: a copy made
    here, just after its chain was verified up to the checkpoint it holds, and unchanged since,
    whose check may start from that checkpoint. A database that cannot tell (empty, or too
    damaged to read, which is why one restores) does not vouch for it."""
    query = (
        sa.select(col(AuditEntry.after))
        .where(col(AuditEntry.entity) == "database")
        .where(col(AuditEntry.action) == "database.backup")
    )
    try:
        with engine.connect() as connection:
            made = connection.execute(query).scalars().all()
    except sa.exc.DBAPIError:
        return False
    return any(json.loads(after or "{}").get("sha256") == sha256 for after in made)


def _journal_beside(path: Path) -> bool:
    """A SQLite journal beside the file holds changes its SHA-256 does not cover."""
    return any(
        Path(f"{path}{suffix}").is_file() and Path(f"{path}{suffix}").stat().st_size > 0
        for suffix in ("-wal", "-journal")
    )


def _holds_what_was_checked(session: Session, checked: audit.ChainReport) -> None:
    """The restored database's chain ends where the checked copy's did, with as many entries:
    it is that copy, and needs no second walk."""
    newest = sa.select(col(AuditEntry.id), col(AuditEntry.hash)).order_by(col(AuditEntry.id).desc())
    tail = tuple(session.execute(newest.limit(1)).first() or (0, audit.GENESIS_HASH))
    count = session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar_one()
    if (tail, count) != ((checked.through, checked.last_hash), checked.entries):
        raise BackupFailed(
            "the restored database's audit trail is not the one checked in the backup "
            f"({count} entries, {checked.entries} checked): restore it again"
        )


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


def _restore_sqlite(
    engine: Engine, path: Path, actor: Actor, since_checkpoint: bool
) -> audit.ChainReport:
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
        checked = _check_sqlite_copy(snapshot, path, actor, since_checkpoint)
        target = engine.raw_connection()
        try:
            source = sqlite3.connect(snapshot)
            source.backup(_sqlite3(target))
            source.close()
        finally:
            target.close()
    return checked


def _restore_postgres(
    engine: Engine, path: Path, actor: Actor, since_checkpoint: bool
) -> audit.ChainReport:
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
                checked = audit.verify_chain(session, actor=actor, incremental=since_checkpoint)
        engine.dispose()  # pg_restore --clean drops the tables: no pooled session may hold them
        _run_pg(engine, "pg_restore", "--clean", "--if-exists", "--no-owner",
                "--single-transaction", "--exit-on-error", str(copy))  # fmt: skip
    return checked


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


def _check_sqlite_copy(
    snapshot: Path, path: Path, actor: Actor, since_checkpoint: bool
) -> audit.ChainReport:
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
            return audit.verify_chain(session, actor=actor, incremental=since_checkpoint)
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
