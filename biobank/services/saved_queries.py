"""Cohort queries kept under a name, to look at or run again as they were saved, and how a
request names the query it runs: a saved one, narrowed by the filters given beside it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, select

from biobank.domain.cohort import CohortQuery, load_query, narrowed
from biobank.domain.permissions import Actor, Permission, require
from biobank.errors import AlreadyExists, NotFound, ValidationError
from biobank.models import SavedQuery, User, utcnow
from biobank.services import audit
from biobank.services.cohorts import prepare


class SavedQueryRead(BaseModel):
    name: str
    description: str | None
    query: CohortQuery
    created_by: str | None
    updated_at: datetime


def resolve_query(
    session: Session, *, actor: Actor, query: CohortQuery | None, saved: str | None
) -> tuple[CohortQuery, SavedQueryRead | None]:
    """The query a request names: a saved one narrowed by the filters given beside it
    (`cohort.narrowed`: never wider, never ignored), or the filters alone."""
    if saved is None or not saved.strip():
        return query or CohortQuery(), None
    kept = get_saved_query(session, actor=actor, name=saved)
    return (kept.query if query is None else narrowed(kept.query, query)), kept


def _saved_read(session: Session, row: SavedQuery) -> SavedQueryRead:
    creator = session.get(User, row.created_by_id) if row.created_by_id else None
    return SavedQueryRead(
        name=row.name,
        description=row.description,
        query=load_query(row.query),
        created_by=creator.username if creator else None,
        updated_at=row.updated_at,
    )


def save_query(
    session: Session,
    *,
    actor: Actor,
    name: str,
    query: CohortQuery,
    description: str | None = None,
    replace: bool = False,
) -> SavedQueryRead:
    """Keep a query under a name; replacing one is audited with what it was."""
    require(actor, Permission.query)
    name = name.strip()
    if not name or len(name) > 120:
        raise ValidationError("a query name is 1-120 characters", field="name", value=name)
    prepare(session, query)
    row = session.exec(select(SavedQuery).where(SavedQuery.name == name)).first()
    if row is not None and not replace:
        raise AlreadyExists(
            f"a saved query {name!r} exists (replace it with --replace)", field="name", value=name
        )
    action = "saved_query.add" if row is None else "saved_query.replace"
    kept = query.model_dump(mode="json")
    row = row or SavedQuery(name=name, query=kept, created_by_id=actor.user_id)
    with audit.audited(session, row, actor=actor, action=action, entity="saved_query"):
        row.query = kept
        row.description = description.strip() if description else None
        row.updated_at = utcnow()
    return _saved_read(session, row)


def get_saved_query(session: Session, *, actor: Actor, name: str) -> SavedQueryRead:
    """A saved query by name, to look at or to run again as it was saved."""
    require(actor, Permission.query)
    row = session.exec(select(SavedQuery).where(SavedQuery.name == name.strip())).first()
    if row is None:
        raise NotFound(f"no saved query {name!r}", field="name", value=name)
    return _saved_read(session, row)


def list_saved_queries(session: Session, *, actor: Actor) -> list[SavedQueryRead]:
    """Every saved query, by name: what can be run again without writing it out."""
    require(actor, Permission.query)
    rows = session.exec(select(SavedQuery).order_by(SavedQuery.name)).all()
    return [_saved_read(session, r) for r in rows]
