"""Anchors for the audit trail, outside the database.

The chain's hashes need no secret: whoever can write the table can delete its last entries, or
edit one and recompute every hash after it, and the chain still verifies. A checkpoint records
the chain's head (its last entry's id and hash, and how many entries there are) under an HMAC
keyed by a secret that never enters the database (a file only its owner reads, made on first
use), in a file outside the database, and is printed for the admins' records. `audit verify`
then checks every checkpoint of this database: an entry a checkpoint names that is gone
(truncation), a hash that differs (rewriting), a count that differs (removal before it), a
checkpoint whose HMAC fails (a forged line); and it names the entries written since the last
checkpoint, which nothing anchors yet. A restore puts an older chain back on purpose: it
appends a keyed mark, and only the checkpoints after the last mark count.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col

from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AuditChainBroken, ValidationError
from biobank.models import AuditEntry, utcnow
from biobank.services.audit import GENESIS_HASH, entries_up_to, verify_chain

KEY_BYTES = 32


class Checkpoint(BaseModel):
    """One line of the checkpoints file: the head of one database's chain, or (`kind`
    "restore") the mark of a restore that put an older chain back."""

    kind: str = "checkpoint"
    database: str
    entry: int
    hash: str
    entries: int
    at: datetime
    by: str
    mac: str = ""

    def signed(self, key: bytes) -> Checkpoint:
        return self.model_copy(update={"mac": _mac(key, self)})

    def genuine(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, _mac(key, self))


class AnchorReport(BaseModel):
    checkpoints: int
    last_checkpoint: Checkpoint | None
    unanchored: int  # entries written after the last checkpoint


def _mac(key: bytes, checkpoint: Checkpoint) -> str:
    fields = checkpoint.model_dump(mode="json", exclude={"mac"})
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def database_name(session: Session) -> str:
    """The database a checkpoint belongs to, without a password: one file may hold several."""
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{Path(url.database or '').resolve()}"
    return f"postgresql://{url.host or ''}:{url.port or 5432}/{url.database}"


def load_key(path: Path, *, create: bool) -> bytes | None:
    """The secret (hex in a file its owner alone reads); made when `create`, else None when
    there is none. A key others may read is refused: it would let them forge checkpoints."""
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(KEY_BYTES) + "\n")
    if path.stat().st_mode & 0o077:
        raise ValidationError(
            f"the audit key {path} may be read by others: chmod 600 {path}",
            field="audit_key_file",
            value=str(path),
        )
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ValidationError(f"{path} holds no audit key", field="audit_key_file") from None


def _head(session: Session) -> tuple[int, str, int]:
    entry, digest = session.execute(
        sa.select(col(AuditEntry.id), col(AuditEntry.hash))
        .order_by(col(AuditEntry.id).desc())
        .limit(1)
    ).one_or_none() or (0, GENESIS_HASH)
    count = session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar_one()
    return entry, digest, count


def add_checkpoint(
    session: Session, *, actor: Actor, key: bytes, path: Path, kind: str = "checkpoint"
) -> Checkpoint:
    """Verify the chain, then append its head, keyed, to the checkpoints file. `kind`
    "restore" marks a restore (the caller has just verified the chain it put back)."""
    require(actor, Permission.view_audit)
    verify_chain(session, actor=actor, incremental=True)
    entry, digest, count = _head(session)
    checkpoint = Checkpoint(
        kind=kind, database=database_name(session), entry=entry, hash=digest, entries=count,
        at=utcnow(), by=actor.username,
    ).signed(key)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(checkpoint.model_dump_json() + "\n")
        file.flush()
        os.fsync(file.fileno())
    return checkpoint


def _read(path: Path) -> Iterator[tuple[int, Checkpoint]]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                try:
                    yield number, Checkpoint.model_validate_json(line)
                except ValueError:
                    raise AuditChainBroken(
                        f"line {number} of {path} is not a checkpoint", field="checkpoints"
                    ) from None


def _check_keyed(found: list[tuple[int, Checkpoint]], key: bytes | None, path: Path) -> None:
    """Every checkpoint `found` (on its line of `path`) was made with the audit key."""
    if key is None:
        raise AuditChainBroken(
            f"{path} holds checkpoints but the audit key is missing: they cannot be checked",
            field="audit_key_file",
        )
    for number, checkpoint in found:
        if not checkpoint.genuine(key):
            raise AuditChainBroken(
                f"checkpoint on line {number} of {path} was not made with the audit key "
                "(forged or edited)",
                field="checkpoints",
            )


def check_checkpoints(
    session: Session, *, actor: Actor, key: bytes | None, path: Path
) -> AnchorReport:
    """Hold the chain to every checkpoint of this database since its last restore; raise
    AuditChainBroken naming the first that does not hold."""
    require(actor, Permission.view_audit)
    mine = database_name(session)
    found = [(n, c) for n, c in _read(path) if c.database == mine] if path.exists() else []
    if found:
        _check_keyed(found, key, path)
    restores = [at for at, (_, c) in enumerate(found) if c.kind == "restore"]
    found = found[restores[-1] :] if restores else found
    for number, c in found:
        stored = session.execute(
            sa.select(col(AuditEntry.hash)).where(col(AuditEntry.id) == c.entry)
        ).scalar_one_or_none()
        if c.entry and stored is None:
            raise AuditChainBroken(
                f"audit entry {c.entry}, the head at the checkpoint of {c.at:%Y-%m-%d %H:%M} "
                f"(line {number}), is gone: the trail was truncated",
                field="audit_entry.id",
                value=c.entry,
            )
        if c.entry and stored != c.hash:
            raise AuditChainBroken(
                f"audit entry {c.entry} differs from the checkpoint of {c.at:%Y-%m-%d %H:%M} "
                f"(line {number}): the chain was rewritten",
                field="audit_entry.id",
                value=c.entry,
            )
        count = entries_up_to(session, through=c.entry)
        if count != c.entries:
            raise AuditChainBroken(
                f"{c.entries} audit entries up to entry {c.entry} at the checkpoint of "
                f"{c.at:%Y-%m-%d %H:%M}, {count} now: entries were removed",
                field="audit_entry.id",
                value=c.entry,
            )
    last = found[-1][1] if found else None
    after = last.entry if last else 0
    unanchored = session.execute(
        sa.select(sa.func.count()).select_from(AuditEntry).where(col(AuditEntry.id) > after)
    ).scalar_one()
    return AnchorReport(checkpoints=len(found), last_checkpoint=last, unanchored=unanchored)
