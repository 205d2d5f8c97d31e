"""Engines and the unit of work.

SQLite (the embedded default) runs in WAL mode with foreign keys on, a busy timeout, and write
transactions begun with `BEGIN IMMEDIATE` so two writers queue instead of failing half-way.
PostgreSQL (shared by several workstations) checks a pooled connection before use, so a restarted
server costs the unit of work that was running when it went away, never the next; its sessions
run in UTC, as every time is stored (the driver then hands back times with the plain UTC zone,
not a zone database entry that is slow to ask for its offset).
"""

from __future__ import annotations

import os
import re
import select
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel

import biobank.models  # noqa: F401  (fills the metadata constraint names are looked up in)
from biobank import stored_text
from biobank.errors import (
    ConcurrentChange,
    ConstraintViolation,
    DatabaseUnavailable,
    ValidationError,
)
from biobank.redact import hide_secrets

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_PRAGMAS = (  # every connection to a SQLite file
    "journal_mode=WAL",
    "foreign_keys=ON",
    f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "synchronous=NORMAL",  # in WAL mode: a commit survives a crash of the program, not of power
)
COPY_FROM = 100  # rows from which `insert_many` uses PostgreSQL's COPY
BULK_CACHE_KIB = 32 * 1024  # SQLite's page cache while an import writes
_BULK_WRITING = "biobank.bulk_writing"  # how to give a pooled connection back its own settings

stored_text.guard(Session)  # every unit of work's text, checked alike on both engines


def make_engine(url: str) -> Engine:
    """Build an engine for `url` with the settings each engine needs; a URL that is not one
    (a bad port, an unknown kind of database) is refused in one line, its password hidden."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend} is not a database biobank runs on (SQLite, PostgreSQL)")
    except (ValueError, exc.ArgumentError) as error:
        raise ValidationError(
            f"the database URL {hide_secrets(str(url))} cannot be used: {error}",
            field="database_url",
        ) from None
    if backend == "sqlite":
        return _giving_back(_sqlite_engine(parsed))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        utc = {} if "options" in parsed.query else {"options": "-c TimeZone=UTC"}
        engine = sa.create_engine(parsed, connect_args=utc)
    except ModuleNotFoundError as error:
        raise DatabaseUnavailable(
            f"no driver for {parsed.drivername} ({error.name} is not installed); "
            "for PostgreSQL install biobank[postgres]",
            field="database_url",
        ) from error

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: object) -> None:
        _check_alive(engine.dialect, dbapi_connection)

    return _giving_back(engine)


def _giving_back(engine: Engine) -> Engine:
    """The engine, each of its connections given back what a unit of work set for itself
    (`prepare_bulk_writing`) as it returns to the pool, after the commit or the rollback; a
    connection that cannot take it is not the news."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        give_back = record.info.pop(_BULK_WRITING, None)
        if give_back is not None and dbapi_connection is not None:
            with suppress(engine.dialect.loaded_dbapi.Error):
                give_back(dbapi_connection)

    return engine


def _check_alive(dialect: sa.Dialect, dbapi_connection: Any) -> None:
    """Check a pooled PostgreSQL connection before use without a round trip: a server that
    ended the session (a restart, `pg_terminate_backend`) has said so on its socket, which is
    then readable, while a connection that is well has nothing to read when idle. Only then is
    it pinged; if the ping fails, the pool connects afresh. (SQLAlchemy's `pool_pre_ping`
    pings every time: a round trip that costs a scan more than its own query.)"""
    try:
        news = _readable(dbapi_connection.fileno())
    except (OSError, ValueError, dialect.loaded_dbapi.Error):  # closed: no socket to ask
        raise exc.DisconnectionError() from None
    if not news:
        return
    try:
        dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as error:
        if dialect.is_disconnect(error, dbapi_connection, None):
            raise exc.DisconnectionError() from error
        raise


def _readable(fd: int) -> bool:
    """Whether the socket `fd` has something to read, asked without waiting (`poll`, which
    takes any descriptor; Windows has only `select`, for its sockets)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def check_connection(engine: Engine) -> None:
    """Fail early, with the (password-free) URL, when the database cannot be reached."""
    with opening(engine.url), engine.connect():
        pass


@contextmanager
def opening(url: str | sa.URL) -> Iterator[None]:
    """What the database refuses while it is opened, its schema brought up to date or its
    first rows made (unreachable, a read-only file, a full disk) as one line naming it: a
    front end opening it says so, and exits with DatabaseUnavailable's code."""
    try:
        yield
    except exc.DBAPIError as error:
        shown = hide_secrets(str(url))  # a password in the query string too
        raise DatabaseUnavailable(
            f"cannot open the database at {shown}: {_first_line(error.orig)}",
            field="database_url",
            value=shown,
        ) from error


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        _create_private(Path(url.database).expanduser())
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see `_on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        options = connection.get_execution_options()
        if options.get("lookup"):  # each statement on its own (see `uow`)
            return
        mode = "DEFERRED" if options.get("readonly") else "IMMEDIATE"
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _create_private(path: Path) -> None:
    """A new database file is its owner's alone (0600, in a folder biobank makes 0700), whatever
    the umask: it holds names and MRNs. Made here, before SQLite makes it with the umask's
    mode; SQLite gives the -wal and -shm files beside it the database file's mode. The mode of
    a file or folder that exists is left as its owner set it.

    The folder must be writable: SQLite writes its journal (-wal, -shm) beside the file, and
    in a read-only folder the first write fails, or a read of a database whose journal is not
    there. A folder that cannot be made or written is refused here, before any connection."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise _unopenable(path, f"its folder {folder} cannot be made ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unopenable(
            path, f"its folder {folder} is not writable (SQLite writes its journal there)"
        )
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _unopenable(path: Path, reason: str) -> DatabaseUnavailable:
    url = f"sqlite:///{path}"
    return DatabaseUnavailable(
        f"cannot open the database at {url}: {reason}", field="database_url", value=url
    )


@contextmanager
def uow(engine: Engine, *, readonly: bool = False, lookup: bool = False) -> Iterator[Session]:
    """One unit of work: commits once at the end, or rolls everything back.

    Services never commit; front ends wrap each use case in one `uow`. Driver errors that
    escape the services are turned into domain errors here, in one place.

    `readonly` work reads one snapshot and changes nothing. A `lookup` is read-only work that
    needs no single snapshot, such as resolving a scan and reading the view it opens: it opens
    no transaction, so each statement sees what is committed when it runs, and the BEGIN and
    ROLLBACK that would cost more than the query itself are saved (on PostgreSQL the connection
    runs in autocommit, which is why it is not for server-side cursors such as `yield_per`).
    A view read in one may, for a moment, mix two commits; a change made from it still names
    the version it showed. On SQLite a lookup's session is kept for the next one
    (`_KeptLookups`).
    """
    kept = _kept_lookups(engine) if lookup else None
    session = kept.take() if kept else _session(engine, readonly=readonly, lookup=lookup)
    readonly = readonly or lookup
    committing = False
    try:
        yield session
        if not readonly:  # read-only work ends as the session closes: rolled back
            for hook in session.info.pop(_COMMIT_HOOKS, {}).values():
                hook(session)
            committing = True
            session.commit()
            committing = False
            for done in session.info.pop(_AFTER_COMMIT_HOOKS, []):
                done()
    except BaseException as error:
        kept = None  # a session that failed is closed, never kept
        session.rollback()
        lost = error if isinstance(error, exc.DBAPIError) and error.connection_invalidated else None
        try:
            _after_rollback(engine, session)
        except exc.DBAPIError as refused:
            # With the server gone, the lost connection is the news; else the database refused
            # even this (a full disk), which is reported like any other refusal.
            if not lost:
                error = refused
        if lost:
            raise _lost_connection(lost, committing=committing) from error
        if isinstance(error, exc.IntegrityError):
            raise constraint_error(error) from error
        if isinstance(error, orm_exc.StaleDataError):
            raise _stale() from error
        if isinstance(error, exc.DataError):  # a value the server cannot hold (a NUL…)
            raise ValidationError(
                f"the database refused a value: {_first_line(error.orig)}"
            ) from error
        if isinstance(error, exc.OperationalError):
            raise DatabaseUnavailable(  # unreachable (a server restarting), locked, full, …
                f"database error: {_first_line(error.orig)}; nothing of this was saved"
            ) from error
        raise error
    finally:
        if kept is not None:
            kept.give_back(session)
        else:
            session.close()


_LOOKUP = "biobank.lookup"
_TAKEN_AFTER = "biobank.lookup_taken_after"  # how many disposals came before (`_KeptLookups`)


@event.listens_for(Session, "before_flush")
def _no_flush_in_a_lookup(session: Session, *_: object) -> None:
    _refuse_in_a_lookup(session)


@event.listens_for(Session, "do_orm_execute")
def _no_change_in_a_lookup(state: ORMExecuteState) -> None:
    if not state.is_select:
        _refuse_in_a_lookup(state.session)


def _refuse_in_a_lookup(session: sa.orm.Session) -> None:
    """A lookup has no transaction to roll back: a change in one would be kept at once."""
    if session.info.get(_LOOKUP):
        raise RuntimeError("a lookup unit of work changes nothing; use uow(engine) to change")


def _session(engine: Engine, *, readonly: bool = False, lookup: bool = False) -> Session:
    bind = _bound(engine, "lookup" if lookup else "readonly" if readonly else None)
    return Session(bind, expire_on_commit=False, info={_LOOKUP: True} if lookup else None)


class _KeptLookups:
    """SQLite lookup sessions kept open from one lookup to the next.

    A lookup on SQLite holds no transaction (no BEGIN: each statement commits on its own), so
    a session that keeps its connection still sees every commit, and one emptied of what it
    loaded is as good as new. Keeping it saves making a session, its transaction and a pool
    checkout and release, which cost a scan more than its query. Any thread may take an idle
    session (the file's connections are not tied to a thread: the TUI runs each scan in a
    worker thread of its own); one in use is never shared. A session that failed is closed,
    not kept, and so is one taken before the engine was disposed. On PostgreSQL each lookup
    checks a connection out of the pool with a ping, so a restarted server costs nothing but
    the lookup that was running.
    """

    IDLE = 4  # idle sessions kept; more lookups at once make and then close sessions

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.idle: list[Session] = []
        self.lock = threading.Lock()
        self.disposals = 0  # a session taken before the last dispose holds an old connection
        self.pid = os.getpid()
        event.listen(engine, "engine_disposed", self.close)

    def take(self) -> Session:
        if self.pid != os.getpid():  # a forked child: the pool's connections are its parent's
            self.engine.dispose(close=False)  # a pool of its own; `close` drops, not closes
            self.pid = os.getpid()
        with self.lock:
            session = self.idle.pop() if self.idle else None
            disposals = self.disposals
        session = session or _session(self.engine, lookup=True)
        session.info[_TAKEN_AFTER] = disposals
        return session

    def give_back(self, session: Session) -> None:
        """Empty the session for the next lookup: the rows it loaded and what it noted in
        `info`. (A result must not outlive its lookup, here as anywhere: a read it left
        unfinished would hold its connection to the snapshot that read began in.)"""
        taken_after = session.info.get(_TAKEN_AFTER)
        if session.identity_map or session.new:  # most scans load no ORM object
            session.expunge_all()
        session.info.clear()
        session.info[_LOOKUP] = True
        with self.lock:
            if len(self.idle) < self.IDLE and taken_after == self.disposals:
                self.idle.append(session)
                return
        session.close()

    def close(self, _engine: Engine | None = None) -> None:
        """Close the idle sessions (their connections go back to the pool): on dispose."""
        with self.lock:
            idle, self.idle = self.idle, []
            self.disposals += 1
        if self.pid == os.getpid():
            for session in idle:
                session.close()


def _kept_lookups(engine: Engine) -> _KeptLookups | None:
    if engine.dialect.name != "sqlite":
        return None
    kept: _KeptLookups | None = engine.__dict__.get("_biobank_lookups")
    if kept is None:
        kept = engine.__dict__.setdefault("_biobank_lookups", _KeptLookups(engine))
    return kept


def _bound(engine: Engine, mode: str | None) -> Engine:
    """The engine with a mode's execution options (made once per engine and mode: making one
    is a copy of the engine's options, which a scan should not pay for)."""
    if mode is None:
        return engine
    # Kept with the engine it copies.
    made: dict[str, Engine] = engine.__dict__.setdefault("_biobank_modes", {})
    if mode not in made:
        options: dict[str, bool | str] = {"readonly": True}
        if mode == "lookup":
            options["lookup"] = True
            if engine.dialect.name == "postgresql":
                options["isolation_level"] = "AUTOCOMMIT"
        made[mode] = engine.execution_options(**options)
    return made[mode]


@contextmanager
def driver_cursor(session: Session) -> Iterator[Any]:
    """The DB-API cursor of the session's connection, for the hottest reads (a scan's). Its
    errors come out as SQLAlchemy's, as from any other statement, so `uow` reports them alike;
    a lost connection is invalidated, so the pool connects afresh."""
    connection = session.connection()
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    assert driver is not None  # a connection in use has its driver's
    cursor = driver.cursor()
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            None, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost,
            dialect=dialect,
        ) from error  # fmt: skip
    finally:
        with suppress(dialect.loaded_dbapi.Error):
            cursor.close()


def prepare_bulk_writing(session: Session) -> None:
    """Set the connection up for the rest of this unit of work (its commit included) while an
    import writes its thousands of rows and reads back, a batch at a time, what it wrote; the
    connection gets its own settings back as it returns to the pool (`_giving_back`).

    SQLite: a larger page cache. Each audit entry lands at a random place in the hash chain's
    two unique indexes, and with SQLite's default 2 MB a connection reads the same pages of
    them again and again.

    PostgreSQL: no statement prepared. The driver prepares one run five times, and the server
    then keeps a generic plan for it, made while the import's tables were nearly empty: a scan
    of the whole table for a batch's `= ANY` of ids or codes, against tables that grow with
    every batch (none of it committed, so no statistics tell the server otherwise), took an
    import of 100,000 records-events 18 s of 85. Unprepared, each is planned for its own
    values, at a millisecond a batch. (The server's `plan_cache_mode` would do it too, but
    would also plan anew the foreign-key checks of every row a COPY writes.)"""
    connection = session.connection()
    record = connection.connection.info
    if _BULK_WRITING in record:
        return
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        before = driver.prepare_threshold
        driver.prepare_threshold = None
        record[_BULK_WRITING] = lambda dbapi: setattr(dbapi, "prepare_threshold", before)
        return
    (before,) = connection.exec_driver_sql("PRAGMA cache_size").one()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    record[_BULK_WRITING] = lambda dbapi: dbapi.execute(f"PRAGMA cache_size={before}")


T = TypeVar("T")


def one_of(
    session: Session, column: sa.SQLColumnExpression[T], values: Iterable[T]
) -> sa.ColumnElement[bool]:
    """`column IN values`, for the long lists a batch asks about. On PostgreSQL one array
    parameter (`= ANY`): an IN list of thousands of parameters costs SQLAlchemy and the driver
    more to render and parse each time than the server takes to run it."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        column_type: sa.types.TypeEngine[T] = column.label(None).type  # an ORM attribute's too
        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column_type)))
    return column.in_(values)


def insert_many(session: Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows of the same keys in bulk (`insert_rows`), for imports' thousands. Each row
    names every column it sets: column defaults are not filled in here."""
    if rows:
        keys = list(rows[0])
        if len(keys) == 1:
            insert_rows(session, table, keys, [[row[keys[0]]] for row in rows])
            return
        values = itemgetter(*keys)  # a tuple of them, in C: a list of lookups costs twice that
        insert_rows(session, table, keys, [list(values(row)) for row in rows])
    else:
        _refuse_in_a_lookup(session)


def insert_rows(
    session: Session, table: sa.Table, keys: Sequence[str], rows: list[list[Any]]
) -> None:
    """Insert rows, each the values of the columns `keys` names in that order, in bulk:
    PostgreSQL's COPY (from `COPY_FROM` rows: it costs a round trip more than an INSERT), else
    the driver's executemany. The rows are the caller's no more: their values are turned into
    the driver's in place.

    Core's executemany builds and processes a parameter dict per row, which costs more than
    the database takes to store the row; here each column's bind processor is found once and
    the driver is handed plain rows, so the values stored are those Core would store."""
    _refuse_in_a_lookup(session)
    if not rows:
        return
    dialect = session.get_bind().dialect
    for index, key in enumerate(keys):
        process = table.c[key].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            _processed(process, rows, index)
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(table.c[key].name) for key in keys)
    with driver_cursor(session) as cursor:
        if dialect.name == "postgresql" and len(rows) >= COPY_FROM:
            with cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            markers = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(keys))
            sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({markers})"
            if len(rows) == 1:  # a unit of work's audit entry: psycopg's executemany costs more
                cursor.execute(sql, rows[0])
            else:
                cursor.executemany(sql, rows)


def new_ids(session: Session, table: sa.Table, count: int) -> list[int]:
    """Ids for `count` new rows of `table`, for a bulk insert that names them and so reads
    none back: PostgreSQL's drawn from the column's own sequence, as its default draws them;
    SQLite's those past the largest, as it gives them (the unit of work holds the only
    writer's lock, `BEGIN IMMEDIATE`, so none is taken meanwhile)."""
    _refuse_in_a_lookup(session)
    if count <= 0:
        return []
    dialect = session.get_bind().dialect
    with driver_cursor(session) as cursor:
        if dialect.name == "postgresql":
            cursor.execute(  # in one array: a row each costs twice as much to fetch
                "SELECT array_agg(nextval(q.s)) FROM generate_series(1, %s), "
                "(SELECT pg_get_serial_sequence(%s, 'id')::regclass AS s) AS q",
                (count, table.name),
            )
            ids: list[int] = cursor.fetchone()[0]
            return ids
        quote = dialect.identifier_preparer.quote
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {quote(table.name)}")
        (last,) = cursor.fetchone()
    return list(range(last + 1, last + 1 + count))


def _processed(process: Callable[[Any], Any], params: list[list[Any]], index: int) -> None:
    """Process one column of the rows, once per distinct value: an import's values repeat (a
    batch's times, the types, units and states), and processing one costs more than finding
    it again. A time is told apart by its offset too (equal instants in two zones, or an hour
    that a change of clocks repeats, are equal and may be stored apart); unhashable values
    (JSON) are processed each."""
    made: dict[Any, Any] = {}
    last, done = object(), None  # the value before, and what it became: rows share a time
    for values in params:
        value = values[index]
        if value is last:
            values[index] = done
            continue
        key = (value, value.utcoffset()) if isinstance(value, datetime) else value
        try:
            values[index] = made[key]
        except KeyError:
            values[index] = made[key] = process(value)
        except TypeError:
            values[index] = process(value)
        last, done = value, values[index]


_ROLLBACK_HOOKS = "biobank.after_rollback"
_COMMIT_HOOKS = "biobank.before_commit"


def before_commit(session: Session, key: str, hook: Callable[[Session], None]) -> None:
    """Run `hook` once, just before this unit of work commits (inside its transaction)."""
    session.info.setdefault(_COMMIT_HOOKS, {}).setdefault(key, hook)


_AFTER_COMMIT_HOOKS = "biobank.after_commit"


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Run `hook` once this unit of work has committed (for what must not be seen unless the
    change it describes is kept, such as an export's manifest)."""
    session.info.setdefault(_AFTER_COMMIT_HOOKS, []).append(hook)


def after_rollback(session: Session, hook: Callable[[sa.Connection], None]) -> None:
    """Run `hook` in a fresh transaction if this unit of work rolls back (for what must
    outlive a rollback, such as burning specimen serials that were handed out)."""
    session.info.setdefault(_ROLLBACK_HOOKS, []).append(hook)


def _after_rollback(engine: Engine, session: Session) -> None:
    hooks = session.info.pop(_ROLLBACK_HOOKS, [])
    if hooks:
        with engine.begin() as connection:
            for hook in hooks:
                hook(connection)


def constraint_error(error: exc.IntegrityError) -> ConstraintViolation:
    """Name the constraint (and its columns) instead of showing a driver traceback."""
    orig = error.orig
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    detail = getattr(diag, "message_detail", None)
    if name is None:
        name, detail = _sqlite_constraint(_first_line(orig))
    message = f"the database refused the change ({name})"
    if detail:
        message += f": {detail}"
    return ConstraintViolation(message, field=name)


def _sqlite_constraint(text: str) -> tuple[str, str | None]:
    """SQLite names a unique constraint by its columns; find the constraint's own name."""
    match = re.search(r"UNIQUE constraint failed: (.+)$", text)
    if not match:
        match = re.search(r"constraint failed: (.+)$", text)
        return (match.group(1) if match else text), None
    columns = [c.strip() for c in match.group(1).split(",")]
    table_name = columns[0].split(".")[0]
    wanted = {c.split(".")[1] for c in columns}
    table = SQLModel.metadata.tables.get(table_name)
    for constraint in table.constraints if table is not None else ():
        if isinstance(constraint, sa.UniqueConstraint) and {c.name for c in constraint} == wanted:
            return str(constraint.name), f"{', '.join(columns)} already in use"
    return match.group(1), "already in use"


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def flush(session: Session) -> None:
    """Flush now so a refused constraint is reported by the service that caused it."""
    try:
        session.flush()
    except exc.IntegrityError as error:
        raise constraint_error(error) from error
    except orm_exc.StaleDataError as error:
        raise _stale() from error


def _lost_connection(error: exc.DBAPIError, *, committing: bool) -> DatabaseUnavailable:
    """The server went away (restarted, or the network dropped) in the middle of a unit of
    work. Before the commit the server has rolled it back; during the commit nobody can tell.
    The pool has dropped the dead connection: the next unit of work connects again."""
    cause = _first_line(error.orig)
    if committing:
        return DatabaseUnavailable(
            f"the connection to the database was lost while saving ({cause}): the change may "
            "or may not have been kept; look (the audit log says) before doing it again"
        )
    return DatabaseUnavailable(
        f"the connection to the database was lost ({cause}); nothing of this was saved: "
        "try again when the server is back"
    )


def _stale() -> ConcurrentChange:
    return ConcurrentChange(
        "the record was changed at another terminal since it was read; reload and try again",
        field="version",
    )
