"""Counts for the home screen: what the inventory holds at a glance, and whether it holds
anything yet (an empty one is offered the demo cohort)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlmodel import Session, SQLModel, col, func, select

from biobank.domain.permissions import Actor, Permission, require
from biobank.domain.vocabulary import SpecimenStatus
from biobank.models import Participant, Specimen, Study, Visit


class Overview(BaseModel):
    studies: int
    participants: int
    visits: int
    specimens_available: int


def inventory_overview(session: Session, *, actor: Actor) -> Overview:
    """The counts a home screen shows: studies, participants, visits and available tubes."""
    require(actor, Permission.view_inventory)

    def count(model: type[SQLModel], *where: ColumnElement[bool]) -> int:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()

    return Overview(
        studies=count(Study),
        participants=count(Participant),
        visits=count(Visit),
        specimens_available=count(Specimen, col(Specimen.status) == SpecimenStatus.available),
    )


def is_empty(session: Session) -> bool:
    """No study and no participant yet: the state the demo may be loaded into."""
    study = session.exec(select(Study.id).limit(1)).first()
    participant = session.exec(select(Participant.id).limit(1)).first()
    return study is None and participant is None
