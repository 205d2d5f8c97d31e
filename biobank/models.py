"""The data model: SQLModel tables and the plain read models services return.

Alembic migrations are the only thing that creates these tables; the metadata here is what
`biobank db check` compares the database against. Timestamps are timezone-aware UTC; every
table has an integer key and human-facing identifiers live in separate unique columns.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from biobank.domain.vocabulary import (
    DeidentificationMode,
    FillOrder,
    ParticipantStatus,
    PhenotypeScope,
    PhenotypeType,
    PositionLabels,
    QuantityUnit,
    Role,
    Sex,
    SpecimenKind,
    SpecimenStatus,
    WithdrawalDisposition,
)

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Table(SQLModel):
    """The base of the tables: their validators are built when first asked for, not at import.
    Rows are made from the database, seldom validated, and building all of them cost a tenth
    of every start of the workstation."""

    model_config = ConfigDict(defer_build=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    """Enums are stored as their values in a VARCHAR with a CHECK (no native PostgreSQL types,
    so later migrations add values the same way on both engines)."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_cls.__name__).lower()
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


# --- People -------------------------------------------------------------------------------


class UserBase(SQLModel):
    username: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=200)
    role: Role = Field(sa_type=_enum_type(Role))


class User(UserBase, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    pin_hash: str | None = Field(default=None, max_length=255)
    badge: str | None = Field(default=None, max_length=64, unique=True)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    # Wrong PINs in a row at all workstations together; enough of them lock the whole account
    # until `locked_until`, for longer after each of its `lockouts` (`services.identity`).
    failed_pins: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    locked_until: datetime | None = None
    lockouts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # One-time codes, kept as SHA-256 digests (`services.one_time_codes`): the one a user
    # without a PIN sets their first with, until it expires, and an admin's recovery code.
    enrolment_code_sha256: str | None = Field(default=None, max_length=64)
    enrolment_expires_at: datetime | None = None
    recovery_code_sha256: str | None = Field(default=None, max_length=64)


class UserRead(UserBase):
    id: int
    active: bool
    has_pin: bool
    badge: str | None = None
    created_at: datetime
    locked_until: datetime | None = None
    enrolment_expires_at: datetime | None = None


class PinLockout(Table, table=True):
    """A user's wrong PINs in a row at one workstation and the lock they earn there, so that
    wrong PINs at one bench do not lock the user out of the others (`services.identity`)."""

    __tablename__ = "pin_lockout"
    __table_args__ = (sa.UniqueConstraint("user_id", "workstation"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", ondelete="RESTRICT")
    workstation: str = Field(max_length=120)
    failed_pins: int = 0
    lockouts: int = 0
    locked_until: datetime | None = None


class PersonalToken(Table, table=True):
    """A secret a user's scripts present instead of a PIN (`BIOBANK_TOKEN`). Only its SHA-256
    is kept: the secret is shown once, when it is made."""

    __tablename__ = "personal_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="RESTRICT")
    label: str = Field(default="", max_length=100)
    secret_sha256: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class PersonalTokenRead(SQLModel):
    id: int
    username: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class SiteSetting(Table, table=True):
    """A setting of the whole inventory (every workstation), kept in the database so that no
    workstation can choose its own; changed by admins, in the audit trail."""

    __tablename__ = "site_setting"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    value: str = Field(max_length=200)


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
    sex: Sex = Field(default=Sex.unknown, sa_type=_enum_type(Sex))
    birth_year: int | None = None
    enrolled_on: date | None = None
    status: ParticipantStatus = Field(
        default=ParticipantStatus.active, sa_type=_enum_type(ParticipantStatus)
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


# --- Phenotypes ---------------------------------------------------------------------------


class PhenotypeVariable(Table, table=True):
    """One entry of the data dictionary (the lupus core ships with the system)."""

    __tablename__ = "phenotype_variable"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    label: str = Field(max_length=300)
    value_type: PhenotypeType = Field(sa_type=_enum_type(PhenotypeType))
    scope: PhenotypeScope = Field(default=PhenotypeScope.visit, sa_type=_enum_type(PhenotypeScope))
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
    and one visit-less value per participant and variable.
    """

    __tablename__ = "phenotype_value"
    __table_args__ = (
        sa.Index("ix_phenotype_value_lookup", "participant_id", "variable_id", "observed_on"),
        sa.Index("uq_phenotype_value_visit", "visit_id", "variable_id", unique=True),
        sa.Index(
            "uq_phenotype_value_participant",
            "participant_id",
            "variable_id",
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
    observed_on: date | None = None
    value_number: float | None = None
    value_text: str | None = None
    value_date: date | None = None
    source: str | None = Field(default=None, max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow)


# --- Consent ------------------------------------------------------------------------------


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
    disposition: WithdrawalDisposition = Field(sa_type=_enum_type(WithdrawalDisposition))
    reason: str | None = None
    recorded_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)


# --- Storage and specimens ----------------------------------------------------------------


class StorageUnit(Table, table=True):
    """One node of the storage tree (site > freezer > shelf > rack > box, kinds configurable).

    A unit sits at a position of its parent the way a tube sits at a position of its box; the
    unique constraint on (parent, row, column) makes a double-booked position impossible.
    """

    __tablename__ = "storage_unit"
    __table_args__ = (
        sa.UniqueConstraint("parent_id", "position_row", "position_col"),
        sa.UniqueConstraint("parent_id", "name"),
        sa.CheckConstraint(
            "(position_row IS NULL) = (position_col IS NULL)", name="position_complete"
        ),
        sa.CheckConstraint(
            "(grid_rows IS NULL AND grid_cols IS NULL) OR (grid_rows > 0 AND grid_cols > 0)",
            name="grid_positive",
        ),
        sa.CheckConstraint("free_slots IS NULL OR free_slots >= 0", name="free_slots_valid"),
        # Freezer-wide allocation walks this index: boxes with room, in physical order.
        sa.Index(
            "ix_storage_unit_free_boxes",
            "sort_key",
            sqlite_where=sa.text("free_slots > 0"),
            postgresql_where=sa.text("free_slots > 0"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(
        default=None, foreign_key="storage_unit.id", index=True, ondelete="RESTRICT"
    )
    kind: str = Field(max_length=32)
    name: str = Field(max_length=120)
    barcode: str = Field(max_length=64, unique=True)
    grid_rows: int | None = None
    grid_cols: int | None = None
    position_labels: PositionLabels = Field(
        default=PositionLabels.letter_number, sa_type=_enum_type(PositionLabels)
    )
    position_row: int | None = None
    position_col: int | None = None
    temperature_class: str | None = Field(default=None, max_length=32)
    allowed_types: list[str] | None = Field(default=None, sa_type=sa.JSON())
    holds_specimens: bool = False
    fill_order: FillOrder = Field(default=FillOrder.row_major, sa_type=_enum_type(FillOrder))
    # Maintained occupancy (boxes only): allocation never scans positions to find room.
    free_slots: int | None = None
    # Physical order in the tree, e.g. "0001.0003.0012": a subtree is a range of sort keys.
    # Compared byte by byte on PostgreSQL too ("C" collation): subtree ranges rely on '/'
    # sorting just before '0', which a language collation does not promise.
    sort_key: str = Field(
        default="",
        index=True,
        sa_type=sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql"),
    )
    # Names from the root, e.g. "-80 #3 > Shelf 1 > Rack 2 > Box 7": a tube's location is
    # one join away, which keeps scan lookups fast.
    path: str = ""
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class SerialCounter(Table, table=True):
    """Specimen serials on SQLite (PostgreSQL uses the `specimen_serial` sequence).

    A serial handed out in a transaction that rolls back is burned afterwards, never reissued.
    """

    __tablename__ = "serial_counter"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=32, unique=True)
    next_value: int = 1


class Specimen(Table, table=True):
    __table_args__ = (
        sa.UniqueConstraint("box_id", "position_row", "position_col"),
        sa.CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        sa.CheckConstraint("initial_quantity >= 0", name="initial_quantity_not_negative"),
        sa.CheckConstraint("freeze_thaw_count >= 0", name="freeze_thaws_not_negative"),
        sa.CheckConstraint(
            "(box_id IS NULL AND position_row IS NULL AND position_col IS NULL)"
            " OR (box_id IS NOT NULL AND position_row IS NOT NULL AND position_col IS NOT NULL)",
            name="location_complete",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    accession_id: str = Field(max_length=32, unique=True)
    legacy_id: str | None = Field(default=None, max_length=64, index=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="RESTRICT")
    visit_id: int | None = Field(
        default=None, foreign_key="visit.id", index=True, ondelete="RESTRICT"
    )
    parent_id: int | None = Field(
        default=None, foreign_key="specimen.id", index=True, ondelete="RESTRICT"
    )
    kind: SpecimenKind = Field(sa_type=_enum_type(SpecimenKind))
    specimen_type: str = Field(max_length=3, index=True)
    container_type: str | None = Field(default=None, max_length=3)
    sprec_code: str | None = Field(default=None, max_length=40)
    collected_at: datetime | None = None
    received_at: datetime | None = None
    processed_at: datetime | None = None
    frozen_at: datetime | None = None
    precentrifugation_temperature: str | None = Field(default=None, max_length=8)
    postcentrifugation_temperature: str | None = Field(default=None, max_length=8)
    initial_quantity: float
    quantity: float
    unit: QuantityUnit = Field(sa_type=_enum_type(QuantityUnit))
    status: SpecimenStatus = Field(
        default=SpecimenStatus.available, sa_type=_enum_type(SpecimenStatus), index=True
    )
    freeze_thaw_count: int = 0
    checked_out_at: datetime | None = None
    minutes_out: int = 0
    box_id: int | None = Field(default=None, foreign_key="storage_unit.id", ondelete="RESTRICT")
    position_row: int | None = None
    position_col: int | None = None
    notes: str | None = None
    # Set when a consent withdrawal covers the tube: flagged, never deleted.
    consent_withdrawal_id: int | None = Field(
        default=None, foreign_key="consent_withdrawal.id", index=True, ondelete="RESTRICT"
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @declared_attr
    def __mapper_args__(cls) -> dict[str, Any]:
        # Optimistic locking: an UPDATE names the version it read, so a stale edit from a
        # second terminal is refused instead of silently overwriting the first.
        return {"version_id_col": cls.__table__.c.version}


class ReservedAccession(Table, table=True):
    """An accession ID printed on a collection kit before the draw, for one participant's
    visit; accessioning the tube at receipt uses it (`specimen_id` then set)."""

    __tablename__ = "reserved_accession"

    id: int | None = Field(default=None, primary_key=True)
    accession_id: str = Field(max_length=32, unique=True)
    kit_code: str = Field(max_length=40, index=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="RESTRICT")
    visit_id: int = Field(foreign_key="visit.id", ondelete="RESTRICT")
    specimen_type: str | None = Field(default=None, max_length=3)
    reserved_at: datetime = Field(default_factory=utcnow)
    reserved_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    specimen_id: int | None = Field(
        default=None, foreign_key="specimen.id", unique=True, ondelete="RESTRICT"
    )


class SpecimenReservation(Table, table=True):
    """A tube set aside for one request, with the uses it is for. Exclusive: a tube has at
    most one standing reservation (`ended_at` empty), which the database enforces. It ends
    when it is released, when the tube is handed over, or when the tube's status leaves
    `reserved` any other way; it is never deleted."""

    __tablename__ = "specimen_reservation"
    __table_args__ = (
        sa.Index(
            "ix_specimen_reservation_standing",
            "specimen_id",
            unique=True,
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    specimen_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")
    request: str = Field(max_length=120, index=True)
    uses: list[str] = Field(sa_type=sa.JSON())
    owner_id: int = Field(foreign_key="app_user.id", ondelete="RESTRICT")
    export_run_id: int | None = Field(
        default=None, foreign_key="export_run.id", ondelete="RESTRICT"
    )
    reserved_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    ended_by_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    end_reason: str | None = None


class SpecimenPoolSource(Table, table=True):
    """The parents of a pool and how much each gave."""

    __tablename__ = "specimen_pool_source"
    __table_args__ = (sa.UniqueConstraint("pool_id", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="specimen.id", ondelete="RESTRICT")
    source_id: int = Field(foreign_key="specimen.id", index=True, ondelete="RESTRICT")
    quantity_used: float


class SpecimenEvent(Table, table=True):
    """Custody history: accessioned, aliquoted, moved, checked out/in, thawed, printed…"""

    __tablename__ = "specimen_event"
    __table_args__ = (sa.Index("ix_specimen_event_history", "specimen_id", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True)
    specimen_id: int = Field(foreign_key="specimen.id", ondelete="RESTRICT")
    event_type: str = Field(max_length=32)
    occurred_at: datetime = Field(default_factory=utcnow)
    actor_id: int | None = Field(default=None, foreign_key="app_user.id", ondelete="RESTRICT")
    workstation: str | None = Field(default=None, max_length=120)
    from_box_id: int | None = Field(
        default=None, foreign_key="storage_unit.id", ondelete="RESTRICT"
    )
    from_row: int | None = None
    from_col: int | None = None
    to_box_id: int | None = Field(default=None, foreign_key="storage_unit.id", ondelete="RESTRICT")
    to_row: int | None = None
    to_col: int | None = None
    quantity_change: float | None = None
    status_before: str | None = Field(default=None, max_length=32)
    status_after: str | None = Field(default=None, max_length=32)
    reason: str | None = None
    details: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON())


# --- Audit and exports --------------------------------------------------------------------


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
    mode: DeidentificationMode = Field(sa_type=_enum_type(DeidentificationMode))
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
