"""The audit trail: every change appends a hash-chained entry in the same transaction.

Each entry's hash covers its own fields and the previous entry's hash, so altering, removing
or reordering any row behind the application's back breaks the chain at that row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from types import SimpleNamespace
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from biobank.db import before_commit, flush, insert_many
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AuditChainBroken
from biobank.models import AuditEntry, AuditEntryRead, utcnow
from biobank.tabular import chunks

GENESIS_HASH = "0" * 64
_ADVISORY_LOCK_KEY = 0x62696F62  # "biob": serialises appends on PostgreSQL
_PENDING_KEY = "biobank.audit_pending"
SEAL_BATCH = 5000


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
            _seal(session)  # keeps a large import's memory flat; the lock is then held to commit


def _seal(session: Session) -> None:
    """Chain the transaction's entries onto the tail and insert them in one executemany.

    Appends are serialised only here, for the last moment of the transaction: PostgreSQL
    takes an advisory lock held until commit; SQLite writers are serial already.
    """
    entries = session.info.pop(_PENDING_KEY, [])
    if not entries:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    tail = session.execute(
        sa.select(col(AuditEntry.hash)).order_by(col(AuditEntry.id).desc()).limit(1)
    ).scalar()
    prev_hash = tail or GENESIS_HASH
    times: dict[datetime, str] = {}  # all UTC (`utcnow`); thousands of an import's share one
    for entry in entries:
        entry["prev_hash"] = prev_hash
        at = entry["occurred_at"]
        occurred_at = times.get(at) or times.setdefault(at, at.isoformat())
        entry["hash"] = prev_hash = _hash({name: entry[name] for name in _HASHED}, occurred_at)
    insert_many(session, AuditEntry.__table__, entries)


@dataclass(frozen=True)
class ChainReport:
    entries: int
    last_hash: str


def verify_chain(session: Session, *, actor: Actor) -> ChainReport:
    """Walk the whole chain; raise AuditChainBroken naming the first entry that does not fit."""
    require(actor, Permission.view_audit)
    expected_prev = GENESIS_HASH
    count = 0
    rows = session.exec(
        select(AuditEntry).order_by(col(AuditEntry.id)).execution_options(yield_per=2000)
    )
    for entry in rows:
        if entry.prev_hash != expected_prev:
            raise AuditChainBroken(
                f"audit entry {entry.id} does not follow the entry before it "
                "(an entry was removed, inserted or reordered)",
                field="audit_entry.id",
                value=entry.id,
            )
        if entry_hash(entry) != entry.hash:
            raise AuditChainBroken(
                f"audit entry {entry.id} ({entry.action} {entry.entity} {entry.entity_id}) "
                "was altered after it was written",
                field="audit_entry.id",
                value=entry.id,
            )
        expected_prev = entry.hash
        count += 1
        session.expunge(entry)
    return ChainReport(entries=count, last_hash=expected_prev)


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
