"""Studies and their pseudonymous participants, the identity (PHI) kept apart from them, and
their visits."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from biobank.domain.vocabulary import ParticipantStatus, Sex
from biobank.models.base import Table, enum_type, utcnow


class Study(Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    title: str = Field(max_length=300)
    id_prefix: str = Field(max_length=8, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class StudyRead(SQLModel):
    id: int
    code: str
    title: str
    id_prefix: str
    created_at: datetime


class Participant(Table, table=True):
    """A pseudonymous research participant. PHI lives only in ParticipantIdentity."""

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="study.id", index=True, ondelete="RESTRICT")
    code: str = Field(max_length=32, unique=True)
    sex: Sex = Field(default=Sex.unknown, sa_type=enum_type(Sex))
    birth_year: int | None = None
    enrolled_on: date | None = None
    status: ParticipantStatus = Field(
        default=ParticipantStatus.active, sa_type=enum_type(ParticipantStatus)
    )
    created_at: datetime = Field(default_factory=utcnow)


class ParticipantIdentity(Table, table=True):
    """Protected health information. Only admins read it; no export ever touches it."""

    __tablename__ = "participant_identity"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", unique=True, ondelete="RESTRICT")
    mrn: str | None = Field(default=None, max_length=64, unique=True)
    family_name: str | None = Field(default=None, max_length=200)
    given_name: str | None = Field(default=None, max_length=200)
    date_of_birth: date | None = None
    # Other identifiers an import brings (a REDCap field marked `Identifier? = y`), by name.
    other: dict[str, str] | None = Field(default=None, sa_type=sa.JSON())


class IdentityRead(SQLModel):
    mrn: str | None = None
    family_name: str | None = None
    given_name: str | None = None
    date_of_birth: date | None = None
    other: dict[str, str] | None = None


class ParticipantExternalId(Table, table=True):
    """A participant's ID in another system (a REDCap record ID), kept as that system writes it:
    case and leading zeros count. One per participant, system and namespace (a project of the
    study); `phi` when the ID identifies the person (shown only with identity access)."""

    __tablename__ = "participant_external_id"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "system", "namespace", "value"),
        sa.UniqueConstraint("participant_id", "system", "namespace"),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="RESTRICT")
    study_id: int = Field(foreign_key="study.id", ondelete="RESTRICT")
    system: str = Field(max_length=32)
    namespace: str = Field(default="", max_length=100, sa_column_kwargs={"server_default": ""})
    value: str = Field(max_length=100, index=True)
    phi: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = Field(default_factory=utcnow)


class ExternalIdRead(SQLModel):
    system: str
    namespace: str
    value: str
    phi: bool


class Visit(Table, table=True):
    __table_args__ = (sa.UniqueConstraint("participant_id", "label"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    label: str = Field(max_length=64)
    visit_date: date
    created_at: datetime = Field(default_factory=utcnow)


class VisitRead(SQLModel):
    id: int
    participant_code: str
    label: str
    visit_date: date


class ParticipantRead(SQLModel):
    id: int
    study_code: str
    code: str
    sex: Sex
    birth_year: int | None
    enrolled_on: date | None
    status: ParticipantStatus
    visits: list[VisitRead] = []
    identity: IdentityRead | None = None
    # PHI external IDs only when the identity is read
    external_ids: list[ExternalIdRead] = []
