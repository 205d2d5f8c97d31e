"""Handing out accession IDs: opaque, per-study prefix, check character, never reused.

Serials come from one counter for every study. PostgreSQL uses a sequence (`nextval` is
never rolled back). SQLite, whose writers are serialised anyway, counts in a table inside the
transaction; if that transaction rolls back, the serials it took are burned afterwards, so an
ID that was ever shown is never issued again.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from biobank.db import after_rollback
from biobank.domain.identifiers import format_specimen_id

COUNTER = "specimen"


def allocate_accession_ids(session: Session, *, prefix: str, count: int) -> list[str]:
    """`count` new accession IDs with this prefix, never issued before; serials whose check
    character would be `*` are skipped."""
    ids: list[str] = []
    while len(ids) < count:
        for serial in _next_serials(session, count - len(ids)):
            accession = format_specimen_id(prefix, serial)
            if accession is not None:  # serials whose check character would be '*' are skipped
                ids.append(accession)
    return ids


# Built once: every accession takes a serial.
_FROM_SEQUENCE = sa.text("SELECT nextval('specimen_serial') FROM generate_series(1, :n)")
_FROM_COUNTER = sa.text(
    "UPDATE serial_counter SET next_value = next_value + :n WHERE name = :name RETURNING next_value"
)


def _next_serials(session: Session, count: int) -> list[int]:
    if session.get_bind().dialect.name == "postgresql":
        return list(session.execute(_FROM_SEQUENCE, {"n": count}).scalars())
    last = session.execute(_FROM_COUNTER, {"n": count, "name": COUNTER}).scalar()
    if last is None:
        session.execute(
            sa.text("INSERT INTO serial_counter (name, next_value) VALUES (:name, :next)"),
            {"name": COUNTER, "next": count + 1},
        )
        last = count + 1
    burned = last

    def burn(connection: sa.Connection) -> None:
        connection.execute(
            sa.text(
                "INSERT INTO serial_counter (name, next_value) VALUES (:name, :next) "
                "ON CONFLICT (name) DO UPDATE SET next_value = MAX(next_value, :next)"
            ),
            {"name": COUNTER, "next": burned},
        )

    after_rollback(session, burn)
    return list(range(last - count, last))
