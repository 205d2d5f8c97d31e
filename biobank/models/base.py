"""What every table shares: the names of its constraints, its base class, its timestamps and
how it stores an enum."""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import ClassVar

import sqlalchemy as sa
from sqlmodel import SQLModel

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

    model_config = {"defer_build": True}  # SQLModel types its config wider than ConfigDict
    # Made by SQLModel for each table; declared so that Core statements over it are typed.
    __table__: ClassVar[sa.Table]


def utcnow() -> datetime:
    return datetime.now(UTC)


def enum_type(enum_cls: type[enum.Enum]) -> sa.Enum:
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
