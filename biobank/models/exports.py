"""Cohort queries kept to run again, the exports made from them, the data use agreements that
cover limited data sets, and which specimens each export included."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import DeidentificationMode
from biobank.models.base import Table, enum_type, utcnow


class SavedQuery(Table, table=True):
    """A named cohort query (`biobank.domain.cohort.CohortQuery` as JSON), kept to run again."""

    __tablename__ = "saved_query"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    description: str | None = None
    query: dict[str, Any] = Field(sa_type=sa.JSON())
    created_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ExportRun(Table, table=True):
    """The manifest of a PI export: enough to audit it or replay it."""

    __tablename__ = "export_run"

    id: int | None = Field(default=None, primary_key=True)
    run_code: str = Field(max_length=40, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    actor_id: int = Field(foreign_key="app_user.id", ondelete="RESTRICT")
    query: dict[str, Any] = Field(sa_type=sa.JSON())
    uses: list[str] = Field(sa_type=sa.JSON())
    mode: DeidentificationMode = Field(sa_type=enum_type(DeidentificationMode))
    formats: list[str] = Field(sa_type=sa.JSON())
    dua_reference: str | None = Field(default=None, max_length=120)
    reserve_request: str | None = Field(default=None, max_length=120)
    software_version: str = Field(max_length=32)
    as_of: date  # consent was asked as of this day
    window_days: int  # how far back a phenotype value at collection could reach
    # The key of this export's participant and specimen codes: secret, kept so a replay
    # gives the same codes and the biobank (only) can link them back.
    code_key: str = Field(max_length=64)
    counts: dict[str, Any] = Field(sa_type=sa.JSON())
    exclusions: dict[str, Any] = Field(sa_type=sa.JSON())
    files: dict[str, Any] = Field(sa_type=sa.JSON())
    manifest_sha256: str = Field(max_length=64)


class DataUseAgreement(Table, table=True):
    """A data use agreement an admin registered: which PI may receive a limited data set of
    which study, for which uses, from when until when. A limited export names one that
    covers it on the day it runs."""

    __tablename__ = "data_use_agreement"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=120, unique=True)
    pi_id: int = Field(foreign_key="app_user.id", ondelete="RESTRICT")
    study_id: int = Field(foreign_key="study.id", ondelete="RESTRICT")
    uses: list[str] = Field(sa_type=sa.JSON())
    starts_on: date
    expires_on: date
    registered_by_id: int | None = Field(
        default=None, foreign_key="app_user.id", ondelete="RESTRICT"
    )
    registered_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoke_reason: str | None = None


class ExportRunSpecimen(Table, table=True):
    """Which specimens an export included, for withdrawal impact reports; keyed by the pair.

    Neither column has a foreign key. The rows are written by the export, in its transaction,
    with their run, and neither runs nor specimens are ever deleted (a specimen's custody
    events hold it), so the keys would guard nothing. On PostgreSQL each fired a check per
    exported specimen (the specimen key's also locked the tube's row, FOR KEY SHARE): together
    more than half the time of writing the record."""

    __tablename__ = "export_run_specimen"

    export_run_id: int = Field(primary_key=True)
    specimen_id: int = Field(primary_key=True, index=True)
