"""Who uses the inventory and how they sign in: accounts, PIN lockouts per workstation,
personal tokens, and the site-wide settings (the sign-in policy) admins keep."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from biobank.domain.vocabulary import Role
from biobank.models.base import Table, enum_type, utcnow


class UserBase(SQLModel):
    username: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=200)
    role: Role = Field(sa_type=enum_type(Role))


class User(UserBase, Table, table=True):
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
