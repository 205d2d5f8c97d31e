"""The data dictionary and the typed values recorded against it."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from biobank.domain.vocabulary import PhenotypeScope, PhenotypeType
from biobank.models.base import Table, enum_type, utcnow


class PhenotypeVariable(Table, table=True):
    """One entry of the data dictionary (the lupus core ships with the system)."""

    __tablename__ = "phenotype_variable"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    label: str = Field(max_length=300)
    value_type: PhenotypeType = Field(sa_type=enum_type(PhenotypeType))
    scope: PhenotypeScope = Field(default=PhenotypeScope.visit, sa_type=enum_type(PhenotypeScope))
    unit: str | None = Field(default=None, max_length=32)
    min_value: float | None = None
    max_value: float | None = None
    choices: list[dict[str, str]] | None = Field(default=None, sa_type=sa.JSON())
    code_system: str | None = Field(default=None, max_length=64)
    code: str | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=64)
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # Names it had before an admin renamed it: saved queries, recorded exports and re-imports
    # that name it so still find it.
    former_names: list[str] | None = Field(default=None, sa_type=sa.JSON())
    # Retired: kept with its values, but no longer recorded, queried or exported.
    retired_at: datetime | None = None


class PhenotypeValue(Table, table=True):
    """A typed value of a participant (scope participant) or of a visit (scope visit).

    Numbers, booleans (1/0) go to `value_number`; choice codes and text to `value_text`
    (several choices joined by `|`); dates to `value_date`. One value per visit and variable,
    and one visit-less value per participant and variable: `instance` 0. A form filled in
    several times within a visit (REDCap's repeating instrument: medicines, flares, lab
    panels) gives one dated observation per filling, `instance` 1, 2, …, each with its own
    `observed_on`; what reads "the visit's value" takes the latest observed
    (`services.phenotype_at_collection`).
    """

    __tablename__ = "phenotype_value"
    __table_args__ = (
        sa.Index("ix_phenotype_value_lookup", "participant_id", "variable_id", "observed_on"),
        sa.Index("uq_phenotype_value_visit", "visit_id", "variable_id", "instance", unique=True),
        sa.Index(
            "uq_phenotype_value_participant",
            "participant_id",
            "variable_id",
            "instance",
            unique=True,
            sqlite_where=sa.text("visit_id IS NULL"),
            postgresql_where=sa.text("visit_id IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="RESTRICT")
    visit_id: int | None = Field(
        default=None, foreign_key="visit.id", index=True, ondelete="RESTRICT"
    )
    variable_id: int = Field(foreign_key="phenotype_variable.id", ondelete="RESTRICT")
    instance: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    observed_on: date | None = None
    value_number: float | None = None
    value_text: str | None = None
    value_date: date | None = None
    source: str | None = Field(default=None, max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow)


class PhenotypeMissing(Table, table=True):
    """A place of a value (a visit's variable, or a participant's visit-less one) that holds no
    value but the code of why it is missing: a REDCap missing-data code such as NASK (not
    asked) or UNK (unknown). A table of its own, so that what reads values (cohort queries,
    exports, values at collection) never takes a code for data. A place holds a value or a
    missing code, never both (`services.phenotype_missing`); uniqueness as `PhenotypeValue`'s,
    repeat instances too.
    """

    __tablename__ = "phenotype_missing"
    __table_args__ = (
        sa.Index("uq_phenotype_missing_visit", "visit_id", "variable_id", "instance", unique=True),
        sa.Index(
            "uq_phenotype_missing_participant",
            "participant_id",
            "variable_id",
            "instance",
            unique=True,
            sqlite_where=sa.text("visit_id IS NULL"),
            postgresql_where=sa.text("visit_id IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    visit_id: int | None = Field(default=None, foreign_key="visit.id", ondelete="RESTRICT")
    variable_id: int = Field(foreign_key="phenotype_variable.id", ondelete="RESTRICT")
    instance: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    code: str = Field(max_length=32)
    source: str | None = Field(default=None, max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow)
