"""A copy of the whole database, and putting one back.

SQLite: the online backup API, a consistent copy while workstations keep working. PostgreSQL:
`pg_dump`'s custom format, restored in one transaction. A backup holds PHI
and a restore replaces everything, so both are for admins, and both are in the audit trail
(a backup's entry is written after the copy, so it describes a copy that does not hold it).

A backup is written to a temporary file and renamed, so a file under the given name is
whole. It verifies the audit chain after the last verified checkpoint first and appends a new
checkpoint, which the copy holds. A restore copies the backup privately, hashing it in the same
pass, and checks that copy before it restores the same copy: a database of this schema version
whose audit chain verifies — after the copy's own checkpoint if this database recorded the
backup of exactly those bytes (its SHA-256, no journal beside it), else all of it. A SQLite copy
must pass SQLite's quick check if so vouched for, its full integrity check if not; a PostgreSQL
dump's audit trail and schema version are restored into a scratch database to be checked, while
the whole dump is restored over the live database in a transaction committed only once they
pass. After the restore the live database's chain must end where the checked one did, and is
not walked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

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
_KINDS = {  # what a backup file begins with, and what it is
    "sqlite": (SQLITE_HEADER, "a SQLite database"),
    "postgresql": (b"PGDMP", "a PostgreSQL backup (pg_dump's custom format)"),
}
COPY_BLOCK = 1 << 20  # bytes read at a time


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
    _check_kind(engine, path)
    with tempfile.TemporaryDirectory(prefix="biobank-restore-") as folder:
        snapshot = Path(folder) / "restore.copy"  # what is checked is what is restored
        sha256, whole = _take_snapshot(engine, path, snapshot)
        since_checkpoint = whole and _backed_up_here(engine, sha256)
        if engine.dialect.name == "sqlite":
            checked = _restore_sqlite(engine, snapshot, path, actor, since_checkpoint)
        else:
            checked = _restore_postgres(engine, snapshot, Path(folder), actor, since_checkpoint)
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


def _check_kind(engine: Engine, path: Path) -> None:
    """A SQLite database for SQLite, a dump in pg_dump's custom format for PostgreSQL."""
    header, kind = _KINDS[engine.dialect.name]
    with path.open("rb") as file:
        if file.read(len(header)) != header:
            raise ValidationError(f"{path} is not {kind}", field="path", value=str(path))


def _take_snapshot(engine: Engine, path: Path, snapshot: Path) -> tuple[str, bool]:
    """Copy the backup privately in one pass that hashes it, so the SHA-256 is that of the
    bytes checked and restored; and whether those bytes are the whole backup. A SQLite journal
    beside the file holds changes its bytes do not: that copy is taken through SQLite, journal
    and all, and the file's hash cannot vouch for it."""
    if engine.dialect.name == "sqlite" and _journal_beside(path):
        _sqlite_snapshot(path, snapshot)
        return _sha256(path), False
    digest = hashlib.sha256()
    with path.open("rb") as source, snapshot.open("wb") as copy:
        for block in iter(lambda: source.read(COPY_BLOCK), b""):
            digest.update(block)
            copy.write(block)
    return digest.hexdigest(), True


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


def _sqlite_snapshot(path: Path, snapshot: Path) -> None:
    """One snapshot of the backup and the journal beside it, read through SQLite."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    copy = sqlite3.connect(snapshot)
    try:
        source.backup(copy)
    except sqlite3.DatabaseError as error:
        raise ValidationError(
            f"{path} is not a whole SQLite database ({error})", field="path", value=str(path)
        ) from None
    finally:
        source.close()
        copy.close()


def _restore_sqlite(
    engine: Engine, snapshot: Path, path: Path, actor: Actor, since_checkpoint: bool
) -> audit.ChainReport:
    """Check the snapshot, then put it back over the live database with SQLite's online
    backup API (workstations wait on its lock, then see the restored database). The pages go
    through the write-ahead log, which is folded back into the database file at once: left
    there, the whole database would be copied again at a workstation's next commit."""
    checked = _check_sqlite_copy(snapshot, path, actor, since_checkpoint)
    target = engine.raw_connection()
    try:
        source = sqlite3.connect(snapshot)
        source.backup(_sqlite3(target))
        source.close()
        _sqlite3(target).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        target.close()
    return checked


def _restore_postgres(
    engine: Engine, snapshot: Path, folder: Path, actor: Actor, since_checkpoint: bool
) -> audit.ChainReport:
    """Restore the private copy of the dump over the live database in one transaction, and
    meanwhile restore what the checks read — the audit trail and the schema version — into a
    scratch database and check them there; commit only once they pass. A dump that fails a
    check, or fails to restore, replaces nothing: its transaction is rolled back whole."""
    listing = folder / "checked.list"
    listing.write_text(_checked_entries(snapshot))
    with _scratch_database(engine) as scratch:
        engine.dispose()  # the restore drops the tables: no pooled session may hold them
        with _restoring(engine, snapshot, folder) as commit:
            _run_pg(scratch, "pg_restore", "--no-owner", "--single-transaction",
                    "--exit-on-error", f"--use-list={listing}", str(snapshot))  # fmt: skip
            _check_schema(scratch)
            with uow(scratch, readonly=True) as session:
                checked = audit.verify_chain(session, actor=actor, incremental=since_checkpoint)
            commit()
    with engine.begin() as connection:
        # A dump holds no planner statistics: gathered now, or every query is planned blind
        # until autovacuum comes round (the home screen's counts took 0.3 s at 1M specimens).
        connection.exec_driver_sql("ANALYZE")
    return checked


@contextmanager
def _restoring(engine: Engine, snapshot: Path, folder: Path) -> Iterator[Callable[[], None]]:
    """Restore the dump over the live database in a transaction left open: `pg_restore`
    writes it as SQL, which `psql` runs after a BEGIN, and the COMMIT is sent only when the
    caller calls what this yields. Until then no one sees any of it; if the caller raises, or
    this process ends, psql ends without it and the server rolls it all back."""
    dbname, environment = _pg_target(engine, "psql")
    _pg_target(engine, "pg_restore")
    log = folder / "restore.log"
    with log.open("wb") as errors:
        script = subprocess.Popen(
            ["pg_restore", "--clean", "--if-exists", "--no-owner", "--file=-", str(snapshot)],
            stdout=subprocess.PIPE, stderr=errors,
        )  # fmt: skip
        runner = subprocess.Popen(
            ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=environment,
        )  # fmt: skip
        assert script.stdout is not None and runner.stdin is not None
        into = runner.stdin
        with suppress(BrokenPipeError):  # psql could not connect: said at the commit
            into.write(b"BEGIN;\n")
        feeding = threading.Thread(target=_feed, args=(script.stdout, into), daemon=True)
        feeding.start()

        def commit() -> None:
            feeding.join()
            restored = script.wait() == 0
            with suppress(BrokenPipeError):  # psql stopped at an error: said below
                if restored:
                    into.write(b"COMMIT;\n")
                into.close()  # without the COMMIT, psql ends and the server rolls back
            if not restored or runner.wait() != 0:
                raise BackupFailed(f"the restore failed, and nothing was replaced: {_first(log)}")

        try:
            yield commit
        finally:
            for process in (script, runner):
                if process.poll() is None:
                    process.kill()
                process.wait()
            feeding.join()


def _feed(source: IO[bytes], target: IO[bytes]) -> None:
    """Copy what pg_restore writes to psql, until either ends (pg_restore then stops too)."""
    try:
        with suppress(BrokenPipeError, ValueError):  # psql gone, or its input closed
            shutil.copyfileobj(source, target, COPY_BLOCK)
    finally:
        source.close()


def _first(log: Path) -> str:
    """The first error a tool logged (psql's notices, such as objects to drop not being
    there yet, are not errors)."""
    lines = log.read_text(errors="replace").splitlines()
    found = [line for line in lines if line.strip() and "NOTICE" not in line]
    return (found or ["failed"])[0].strip()


# the dump's entries a check reads: the tables, their rows, the audit trail's primary key
_CHECKED_ENTRY = re.compile(
    r"^\d+; \d+ \d+ (TABLE|TABLE DATA) \S+ (audit_entry|alembic_version) "
    r"|^\d+; \d+ \d+ CONSTRAINT \S+ audit_entry pk_audit_entry "
)


def _checked_entries(snapshot: Path) -> str:
    """The lines of the dump's table of contents (`pg_restore --list`) a check restores."""
    if shutil.which("pg_restore") is None:
        raise BackupFailed("pg_restore is not installed (PostgreSQL's client tools)")
    done = subprocess.run(["pg_restore", "--list", str(snapshot)], capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["failed"])[0]
        raise BackupFailed(f"pg_restore: {first}")
    return "".join(f"{line}\n" for line in done.stdout.splitlines() if _CHECKED_ENTRY.match(line))


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
    """Whole, of this schema version, and its audit chain verifies. A copy this database made
    and recorded, unchanged since (its SHA-256), is a page-for-page copy of a database SQLite
    kept whole: SQLite's quick check of its pages and records suffices, as the walk of its chain
    from its checkpoint does; any other copy gets the full integrity check, which also holds
    every index to its table (three to four times as long)."""
    check = "quick_check" if since_checkpoint else "integrity_check"
    checking = sa.create_engine(f"sqlite:///{snapshot}")
    try:
        try:
            with checking.connect() as connection:
                problems = connection.exec_driver_sql(f"PRAGMA {check}").scalars().all()
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
    """Run pg_dump or pg_restore on the engine's database."""
    dbname, environment = _pg_target(engine, tool)
    done = subprocess.run(
        [tool, dbname, *arguments], capture_output=True, text=True, env=environment
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["failed"])[0]
        raise BackupFailed(f"{tool}: {first}")


def _pg_target(engine: Engine, tool: str) -> tuple[str, dict[str, str] | None]:
    """The engine's database as a client tool's `--dbname`, and the tool's environment: the
    password goes there, not on its command line, which every user of the machine may read."""
    if shutil.which(tool) is None:
        raise BackupFailed(f"{tool} is not installed (PostgreSQL's client tools)")
    url = engine.url
    in_query = url.query.get("password")  # a str, or a tuple when given more than once
    password = url.password or (in_query if isinstance(in_query, str) else None)
    server = url._replace(drivername="postgresql", password=None)  # (`set` keeps a None)
    server = server.difference_update_query(["password"])
    dbname = f"--dbname={server.render_as_string(hide_password=False)}"
    return dbname, {**os.environ, "PGPASSWORD": password} if password else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(COPY_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
