"""The audit trail: every change appends a hash-chained entry in the same transaction.

Each entry's hash covers its own fields and the previous entry's hash, so altering, removing
or reordering any row behind the application's back breaks the chain at that row.

The chain's tail moves only at commit, under a bank-wide lock held for a moment: a unit of
work of a few entries chains them onto the tail there; a larger one (an import) writes its
entries as it goes, chained among themselves from a start of their own and under no lock, and
at commit chains one seal entry onto the tail that names the batch's start, its last hash and
how many entries it holds. The chain is in the order of commits, a batch lands with its
business rows or not at all, and no import makes another terminal wait for more than a seal.

Verification walks the entries in id order, following each batch apart until its seal. A
verified checkpoint, itself an entry of the chain, lets routine verification walk only what
came after it; a full walk trusts none.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from types import SimpleNamespace
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from biobank.db import before_commit, driver_cursor, flush, insert_many
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AuditChainBroken
from biobank.models import AuditEntry, AuditEntryRead, utcnow
from biobank.tabular import chunks

GENESIS_HASH = "0" * 64
_ADVISORY_LOCK_KEY = 0x62696F62  # "biob": serialises appends on PostgreSQL
_PENDING_KEY = "biobank.audit_pending"
_BATCH_KEY = "biobank.audit_batch"
SEAL_BATCH = 5000  # entries waiting in memory at most; more are written as a batch
CHAINED_AT_COMMIT = 100  # a unit of work of at most these many is chained at commit, no seal
BATCH_START = "batch-"  # how a batch's first `prev_hash` begins (then random hex, 64 in all)
SEAL = {"action": "audit.seal", "entity": "audit_chain", "entity_id": "seal"}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot record {type(value).__name__} in the audit trail")


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)  # one encoder: `json.dumps` with options builds a new one per call, a third of a small entry


def _canonical_bytes(data: dict[str, Any]) -> bytes:
    """Keys sorted, no spaces, text as UTF-8: orjson's encoding, which is the standard
    library's (`_CANONICAL`) byte for byte for every dict of text and nulls, as each entry's
    hashed fields are (a property test holds it to that: the chains written before orjson still
    verify). It is ten times as fast on a row's snapshot, where it may differ from the
    standard library in a float's exponent (`1e-7`), in a time zone offset with seconds
    (rounded to the minute) and in accepting times of day and UUIDs. What orjson refuses (an
    integer beyond 64 bits) the standard library encodes; a lone surrogate, never valid UTF-8,
    fails in both."""
    try:
        return orjson.dumps(data, default=_json_default, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _CANONICAL.encode(data).encode()


def canonical_json(data: dict[str, Any] | None) -> str | None:
    """A `before`/`after` as the text stored and hashed (keys sorted, no spaces); None stays
    None."""
    if data is None:
        return None
    return _canonical_bytes(data).decode()


def snapshot(row: SQLModel, *, hide: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A row's column values for `before`/`after`; secrets in `hide` show only whether set."""
    data = {}
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        value = getattr(row, column.key)
        data[column.key] = (value is not None) if column.key in hide else value
    return data


# with `occurred_at`, the fields an entry's hash is of
_HASHED = (
    "actor", "workstation", "action", "entity", "entity_id", "before", "after", "reason",
    "prev_hash",
)  # fmt: skip


def entry_hash(entry: AuditEntry | SimpleNamespace) -> str:
    """The SHA-256 an entry stores: of its own fields and the hash before it, so changing any
    entry, or what comes before it, shows at that entry."""
    fields = {name: getattr(entry, name) for name in _HASHED}
    return _hash(fields, entry.occurred_at.isoformat())


def _hash(fields: dict[str, Any], occurred_at: str) -> str:
    fields["occurred_at"] = occurred_at
    return hashlib.sha256(_canonical_bytes(fields)).hexdigest()


def _pending(session: Session) -> list[dict[str, Any]]:
    """Entries wait in the session and are chained just before commit (see `_seal`)."""
    before_commit(session, "audit", _seal)
    pending: list[dict[str, Any]] = session.info.setdefault(_PENDING_KEY, [])
    return pending


def _entry(actor: Actor, item: Mapping[str, Any], occurred_at: datetime) -> dict[str, Any]:
    return {
        "occurred_at": occurred_at,
        "actor": actor.username,
        "workstation": actor.workstation,
        "action": item["action"],
        "entity": item["entity"],
        "entity_id": str(item["entity_id"]),
        "before": canonical_json(item.get("before")),
        "after": canonical_json(item.get("after")),
        "reason": item.get("reason"),
    }


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Append one audit entry to the caller's transaction."""
    item = {"action": action, "entity": entity, "entity_id": entity_id}
    item |= {"before": before, "after": after, "reason": reason}
    _pending(session).append(_entry(actor, item, utcnow()))


@contextmanager
def audited(
    session: Session,
    row: SQLModel,
    *,
    actor: Actor,
    action: str,
    entity: str,
    reason: str | None = None,
    hide: frozenset[str] = frozenset(),
) -> Iterator[SQLModel]:
    """Record the change the block makes to `row`: its values before (none for a row not
    written yet, which the block fills in), the change flushed (a refused constraint is
    reported here, by the service that caused it), then its values after, in one entry. A
    block that raises records nothing; its unit of work rolls back.

        with audit.audited(session, row, actor=actor, action="agreement.revoke",
                           entity="data_use_agreement", reason=reason):
            row.revoked_at = utcnow()
    """
    before = snapshot(row, hide=hide) if sa.inspect(row).has_identity else None
    yield row
    session.add(row)
    flush(session)
    after = snapshot(row, hide=hide)
    record(session, actor=actor, action=action, entity=entity, entity_id=after["id"],
           before=before, after=after, reason=reason)  # fmt: skip


def record_many(session: Session, *, actor: Actor, entries: Iterable[Mapping[str, Any]]) -> None:
    """Append many entries at once (imports write thousands); each item holds the keyword
    arguments of `record` (action, entity, entity_id, and optionally before, after, reason)."""
    occurred_at = utcnow()
    for chunk in chunks(entries, SEAL_BATCH):  # `entries` may be a generator of thousands
        pending = _pending(session)
        pending.extend(_entry(actor, item, occurred_at) for item in chunk)
        if len(pending) >= SEAL_BATCH:
            _write_batch(session)  # keeps a large import's memory flat, under no lock


@dataclass
class _Batch:
    """The entries a large unit of work has written so far, chained from `start`."""

    start: str
    head: str
    entries: int = 0
    actor: str = ""  # who the seal is by: the batch's last entry's actor, at its workstation
    workstation: str = ""


def _write_batch(session: Session) -> None:
    """Write the waiting entries chained onto the unit of work's batch (begun here), under no
    lock: nothing else writes to it, and the seal at commit fixes its place in the chain."""
    entries = session.info.pop(_PENDING_KEY, [])
    if not entries:
        return
    batch = session.info.get(_BATCH_KEY)
    if batch is None:
        start = BATCH_START + secrets.token_hex(32 - len(BATCH_START) // 2)
        batch = session.info[_BATCH_KEY] = _Batch(start=start, head=start)
    batch.head = _chain(entries, batch.head)
    batch.entries += len(entries)
    insert_many(session, AuditEntry.__table__, entries)
    batch.actor, batch.workstation = entries[-1]["actor"], entries[-1]["workstation"]


def _seal(session: Session) -> None:
    """Just before commit: chain a small unit of work's entries onto the tail, or write the
    rest of a large one's batch and chain its seal. Only that is serialised: PostgreSQL takes
    an advisory lock held until the commit right after; SQLite writers are serial already.
    What the unit of work has pending is written first, outside the lock (and a refused
    constraint reported as a flush reports it)."""
    flush(session)
    pending = session.info.get(_PENDING_KEY, [])
    if _BATCH_KEY not in session.info and len(pending) <= CHAINED_AT_COMMIT:
        _append(session, session.info.pop(_PENDING_KEY, []))
        return
    _write_batch(session)
    batch: _Batch = session.info.pop(_BATCH_KEY)
    first = session.execute(
        sa.select(col(AuditEntry.id)).where(col(AuditEntry.prev_hash) == batch.start)
    ).scalar_one()
    seal = {"occurred_at": utcnow(), "actor": batch.actor, "workstation": batch.workstation,
            **SEAL, "before": None, "reason": None,
            "after": canonical_json({"first": first, "start": batch.start, "head": batch.head,
                                     "entries": batch.entries})}  # fmt: skip
    _append(session, [seal], batch_from=first)


def _append(
    session: Session, entries: list[dict[str, Any]], *, batch_from: int | None = None
) -> None:
    """Chain `entries` onto the tail and insert them, holding the chain until commit. The lock
    and the tail's read go through the driver's cursor: every unit of work that changes
    anything runs them, and SQLAlchemy's part in a statement costs more than the server's."""
    if not entries:
        return
    with _tail_reader(session, batch_from) as tail:  # ready before the lock is taken
        if session.get_bind().dialect.name == "postgresql":
            with driver_cursor(session) as cursor:
                cursor.execute(_LOCK_CHAIN, (_ADVISORY_LOCK_KEY,))
        _chain(entries, tail() or GENESIS_HASH)
    insert_many(session, AuditEntry.__table__, entries)


_LOCK_CHAIN = "SELECT pg_advisory_xact_lock(%s)"
_TAIL = "SELECT hash FROM audit_entry ORDER BY id DESC LIMIT 1"
_TAIL_BELOW = "SELECT hash FROM audit_entry WHERE id < ? ORDER BY id DESC LIMIT 1"  # SQLite's


@contextmanager
def _tail_reader(session: Session, batch_from: int | None) -> Iterator[Callable[[], str | None]]:
    """What reads the newest committed entry's hash (every commit ends with one chained onto
    the tail). A unit of work with a batch (from id `batch_from`) sees its own entries above
    the tail: SQLite has one writer, so all below its batch is committed; on PostgreSQL others
    commit above its first entry too, and a connection of its own reads what is committed
    (opened before the lock: that takes longer than the seal)."""
    bind = session.get_bind()
    if batch_from is None or bind.dialect.name == "sqlite":
        query, parameters = (_TAIL, ()) if batch_from is None else (_TAIL_BELOW, (batch_from,))
        with driver_cursor(session) as cursor:
            yield lambda: _first(cursor.execute(query, parameters).fetchone())
        return
    with bind.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        yield lambda: _first(connection.exec_driver_sql(_TAIL).fetchone())


def _first(row: Any) -> str | None:
    return row[0] if row is not None else None


def _chain(entries: list[dict[str, Any]], prev_hash: str) -> str:
    """Give each entry its `prev_hash` and `hash`, the first following `prev_hash`; return the
    last hash."""
    times: dict[datetime, str] = {}  # all UTC (`utcnow`); thousands of an import's share one
    for entry in entries:
        entry["prev_hash"] = prev_hash
        at = entry["occurred_at"]
        occurred_at = times.get(at) or times.setdefault(at, at.isoformat())
        entry["hash"] = prev_hash = _hash({name: entry[name] for name in _HASHED}, occurred_at)
    return prev_hash


VERIFIED = {"action": "audit.verified", "entity": "audit_chain", "entity_id": "verified"}
_COLUMNS = (
    "id", "occurred_at", "actor", "workstation", "action", "entity", "entity_id", "before",
    "after", "reason", "prev_hash", "hash",
)  # fmt: skip
_STREAM = 5000  # rows a PostgreSQL walk fetches at a time


@dataclass(frozen=True)
class ChainReport:
    """`entries` in the chain, the newest (the tail) `through` with hash `last_hash`; `checked`
    of them were walked, after the verified checkpoint at entry `since` (None: from the
    first)."""

    entries: int
    last_hash: str
    through: int = 0
    checked: int = 0
    since: int | None = None


def verify_chain(session: Session, *, actor: Actor, incremental: bool = False) -> ChainReport:
    """Walk the chain in order and raise AuditChainBroken naming the first entry that does not
    fit: the whole chain, or (`incremental`) what came after the last verified checkpoint
    (`record_verified`), from the tail that checkpoint names."""
    require(actor, Permission.view_audit)
    checkpoint = _last_checkpoint(session) if incremental else None
    walk = _Walk(session, checkpoint)
    with closing(_rows(session, after=walk.since)) as rows:  # its cursor closed, come what may
        walk.run(rows)
    walk.finish()
    return ChainReport(
        entries=walk.entries + (checkpoint["entries"] if checkpoint else 0),
        last_hash=walk.tail, through=max(walk.through, walk.since), checked=walk.entries,
        since=checkpoint["through"] if checkpoint else None,
    )  # fmt: skip


def record_verified(session: Session, *, actor: Actor, report: ChainReport) -> None:
    """Append a verified checkpoint: the chain up to `report.through` verified, so that the
    next incremental verification starts there. It is an entry of the chain, so it cannot be
    changed or removed unseen; a full verification (`verify_chain`) trusts none."""
    require(actor, Permission.view_audit)
    after = {"through": report.through, "hash": report.last_hash, "entries": report.entries}
    record(session, actor=actor, action=VERIFIED["action"], entity=VERIFIED["entity"],
           entity_id=VERIFIED["entity_id"], after=after)  # fmt: skip


def _last_checkpoint(session: Session) -> dict[str, Any] | None:
    """The newest verified checkpoint, held to the entry it names, which comes before it (so
    the walk from there hashes the checkpoint itself too)."""
    found = session.execute(
        sa.select(col(AuditEntry.id), col(AuditEntry.after))
        .where(col(AuditEntry.entity) == VERIFIED["entity"])
        .where(col(AuditEntry.entity_id) == VERIFIED["entity_id"])
        .order_by(col(AuditEntry.id).desc())
        .limit(1)
    ).one_or_none()
    if found is None:
        return None
    checkpoint: dict[str, Any] = orjson.loads(found.after)
    stored = session.execute(
        sa.select(col(AuditEntry.hash)).where(col(AuditEntry.id) == checkpoint["through"])
    ).scalar()
    if checkpoint["through"] >= found.id:
        raise AuditChainBroken(
            f"the verified checkpoint (entry {found.id}) names a later entry: it was altered",
            field="audit_entry.id",
            value=found.id,
        )
    if checkpoint["through"] and stored != checkpoint["hash"]:
        raise AuditChainBroken(
            f"audit entry {checkpoint['through']} is not what the verified checkpoint "
            f"(entry {found.id}) found: it was altered or removed since "
            "(a full verification names the first entry that does not fit)",
            field="audit_entry.id",
            value=checkpoint["through"],
        )
    return checkpoint


def _rows(session: Session, *, after: int, up_to: int | None = None) -> Generator[tuple[Any, ...]]:
    """The entries after id `after` (up to `up_to`) in id order, as the driver reads them: a
    walk of millions reads a few times faster so than through result objects. In one
    statement, so in one snapshot: PostgreSQL's through a cursor of the server, a batch at a
    time (its driver would read them all into memory first); SQLite's steps as it is read."""
    dialect = session.get_bind().dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(dialect.identifier_preparer.quote(name) for name in _COLUMNS)
    bounds = (after,) if up_to is None else (after, up_to)
    where = " AND ".join([f"id > {mark}", f"id <= {mark}"][: len(bounds)])
    query = f"SELECT {names} FROM audit_entry WHERE {where} ORDER BY id"
    with driver_cursor(session) as cursor:
        if dialect.name != "postgresql":
            yield from cursor.execute(query, bounds)
            return
        name = f"audit_walk_{secrets.token_hex(4)}"  # a walk may run inside another
        cursor.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {query}", bounds)
        while rows := cursor.execute(f"FETCH {_STREAM} FROM {name}").fetchall():
            yield from rows
        cursor.execute(f"CLOSE {name}")


def _iso(at: datetime | str) -> str:
    """An entry's time as hashed, from the value the driver reads (SQLite: text in UTC)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).isoformat()


class _Walk:
    """A walk along the chain in id order. Entries chained onto the tail move it; a batch's
    entries are followed apart (several units of work write theirs at once, and their ids
    interleave) until the seal that names the batch's start, last hash and size."""

    def __init__(self, session: Session, checkpoint: dict[str, Any] | None) -> None:
        self.session = session
        self.since: int = checkpoint["through"] if checkpoint else 0
        self.tail: str = checkpoint["hash"] if checkpoint else GENESIS_HASH
        self.through = 0
        self.entries = 0
        # a batch's newest hash -> [the prev_hash its first entry walked follows, entries, id]
        self.open: dict[str, list[Any]] = {}

    def run(self, rows: Iterable[Any]) -> None:
        """The hot loop: a few microseconds an entry (fields in sorted order, hashed as
        `entry_hash` hashes them)."""
        sha256, dumps, open_ = hashlib.sha256, orjson.dumps, self.open
        tail, count = self.tail, 0
        times: dict[Any, str] = {}
        for id_, at, actor, workstation, action, entity, entity_id, before, after, reason, \
                prev, digest in rows:  # fmt: skip
            occurred_at = times.get(at)
            if occurred_at is None:
                if len(times) > 4096:
                    times.clear()
                occurred_at = times[at] = _iso(at)
            fields = {"action": action, "actor": actor, "after": after, "before": before,
                      "entity": entity, "entity_id": entity_id, "occurred_at": occurred_at,
                      "prev_hash": prev, "reason": reason, "workstation": workstation}  # fmt: skip
            if sha256(dumps(fields)).hexdigest() != digest:
                raise AuditChainBroken(
                    f"audit entry {id_} ({action} {entity} {entity_id}) was altered after it "
                    "was written",
                    field="audit_entry.id",
                    value=id_,
                )
            if prev == tail:
                if entity == SEAL["entity"] and action == SEAL["action"]:
                    self._seal(id_, after)
                tail, self.through = digest, id_
            elif prev in open_:
                batch = open_.pop(prev)
                batch[1] += 1
                open_[digest] = batch
            elif prev.startswith(BATCH_START) or self.since:  # (a batch begun before `since`)
                open_[digest] = [prev, 1, id_]
            else:
                raise _out_of_place(id_)
            count += 1
        self.tail = tail
        self.entries += count

    def _seal(self, id_: int, after: str) -> None:
        seal = orjson.loads(after)
        batch = self.open.pop(seal["head"], None)
        if seal["first"] <= self.since and (batch is None or batch[0] != seal["start"]):
            batch = self._begun_before(seal, batch)
        if batch != [seal["start"], seal["entries"], seal["first"]]:
            raise AuditChainBroken(
                f"audit entry {id_} seals {seal['entries']} entries from entry {seal['first']} "
                "that are not there as it found them (one was removed, inserted or reordered)",
                field="audit_entry.id",
                value=id_,
            )

    def _begun_before(self, seal: dict[str, Any], batch: list[Any] | None) -> list[Any] | None:
        """The batch of `seal`, begun before the checkpoint this walk starts from, whose
        entries after the checkpoint, if any, are `batch`: its entries up to the checkpoint
        are walked too."""
        earlier = _batch_up_to(self.session, seal, self.since)
        if earlier is None or earlier[0] != (batch[0] if batch else seal["head"]):
            return None
        self.entries += earlier[1]
        return [seal["start"], earlier[1] + (batch[1] if batch else 0), seal["first"]]

    def finish(self) -> None:
        """A batch never sealed is entries inserted behind the application's back (a unit of
        work that rolls back leaves none), or what follows one that was removed."""
        if self.open:
            raise _out_of_place(min(first for _, _, first in self.open.values()))


def _batch_up_to(session: Session, seal: dict[str, Any], through: int) -> tuple[str, int] | None:
    """The last hash and the number of the entries up to id `through` of the batch `seal`
    names, each checked, or None if they are not one chain from its start. (On PostgreSQL a
    batch's first ids may come before entries another unit of work committed first.)"""
    walk = _Walk(session, None)
    with closing(_rows(session, after=seal["first"] - 1, up_to=through)) as rows:
        walk.run(row for row in rows if row[-2] == seal["start"] or row[-2] in walk.open)
    found = list(walk.open.items())
    if len(found) != 1 or found[0][1][0] != seal["start"]:
        return None
    return found[0][0], found[0][1][1]


def entries_up_to(session: Session, *, through: int) -> int:
    """How many entries the chain held when entry `through` was its tail: those up to it,
    but for the entries there of batches sealed after it."""
    count: int = session.execute(
        sa.select(sa.func.count()).select_from(AuditEntry).where(col(AuditEntry.id) <= through)
    ).scalar_one()
    seals = session.execute(
        sa.select(col(AuditEntry.after))
        .where(col(AuditEntry.entity) == SEAL["entity"])
        .where(col(AuditEntry.entity_id) == SEAL["entity_id"])
        .where(col(AuditEntry.id) > through)
    ).scalars()
    for seal in map(orjson.loads, seals):
        if seal["first"] <= through:
            earlier = _batch_up_to(session, seal, through)
            count -= earlier[1] if earlier else 0
    return count


def _out_of_place(id_: int) -> AuditChainBroken:
    return AuditChainBroken(
        f"audit entry {id_} does not follow the entry before it "
        "(an entry was removed, inserted or reordered)",
        field="audit_entry.id",
        value=id_,
    )


def audit_log(
    session: Session,
    *,
    actor: Actor,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntryRead]:
    """The newest entries first, optionally for one entity or one record."""
    require(actor, Permission.view_audit)
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if entity is not None:
        query = query.where(AuditEntry.entity == entity)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == str(entity_id))
    return [_entry_read(e) for e in session.exec(query)]


def _entry_read(entry: AuditEntry) -> AuditEntryRead:
    assert entry.id is not None  # read from the table
    return AuditEntryRead(
        id=entry.id,
        occurred_at=entry.occurred_at,
        actor=entry.actor,
        workstation=entry.workstation,
        action=entry.action,
        entity=entry.entity,
        entity_id=entry.entity_id,
        before=json.loads(entry.before) if entry.before else None,
        after=json.loads(entry.after) if entry.after else None,
        reason=entry.reason,
    )
