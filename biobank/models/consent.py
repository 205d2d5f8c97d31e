"""Consent documents and their statements, what each participant signed and answered, and
what they later withdrew."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import WithdrawalDisposition
from biobank.models.base import Table, enum_type, utcnow


class ConsentStatement(Table, table=True):
    __tablename__ = "consent_statement"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    text: str


class ConsentDocument(Table, table=True):
    __tablename__ = "consent_document"
    __table_args__ = (sa.UniqueConstraint("code", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64)
    version: str = Field(max_length=32)
    title: str = Field(max_length=300)
    effective_on: date


class ConsentDocumentStatement(Table, table=True):
    """The statements a consent document asks, in order."""

    __tablename__ = "consent_document_statement"
    __table_args__ = (sa.UniqueConstraint("document_id", "statement_id"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="consent_document.id", ondelete="RESTRICT")
    statement_id: int = Field(foreign_key="consent_statement.id", ondelete="RESTRICT")
    position: int = 0


class ParticipantConsent(Table, table=True):
    """A signed consent document."""

    __tablename__ = "participant_consent"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    document_id: int = Field(foreign_key="consent_document.id", ondelete="RESTRICT")
    signed_on: date
    recorded_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)


class ConsentAnswer(Table, table=True):
    __tablename__ = "consent_answer"
    __table_args__ = (sa.UniqueConstraint("participant_consent_id", "statement_id"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_consent_id: int = Field(foreign_key="participant_consent.id", ondelete="RESTRICT")
    statement_id: int = Field(foreign_key="consent_statement.id", ondelete="RESTRICT")
    answer: bool


class ConsentWithdrawal(Table, table=True):
    """A withdrawal of one statement (statement_id set) or of everything (statement_id null)."""

    __tablename__ = "consent_withdrawal"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    statement_id: int | None = Field(
        default=None, foreign_key="consent_statement.id", ondelete="RESTRICT"
    )
    withdrawn_on: date
    requested_by: str = Field(max_length=200)
    disposition: WithdrawalDisposition = Field(sa_type=enum_type(WithdrawalDisposition))
    reason: str | None = None
    recorded_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)
