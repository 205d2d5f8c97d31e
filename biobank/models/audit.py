"""The audit trail every change writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from biobank.models.base import Table, utcnow


class AuditEntry(Table, table=True):
    """Append-only, hash-chained record of every change (the database refuses UPDATE/DELETE).

    `before` and `after` hold canonical JSON text, so the hash is computed over exactly the
    stored bytes on every engine. `prev_hash` is unique: two writers cannot fork the chain.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (sa.Index("ix_audit_entry_entity", "entity", "entity_id"),)

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=64)
    workstation: str = Field(max_length=120)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: str = Field(max_length=64)
    before: str | None = None
    after: str | None = None
    reason: str | None = None
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)


class AuditEntryRead(SQLModel):
    id: int
    occurred_at: datetime
    actor: str
    workstation: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
