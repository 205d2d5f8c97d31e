"""Opening the database an entry point works on.

The embedded SQLite default is created and migrated on first use; a server database that is
behind refuses to start and says which command to run. A new database gets its first admin:
on a server only from `biobank db upgrade`, with a PIN, since a server's admin without one
could be claimed by anyone who can reach the database.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from biobank import migrate
from biobank.db import check_connection, make_engine, uow
from biobank.domain.permissions import SYSTEM, Actor
from biobank.models import User, UserRead
from biobank.services.one_time_codes import issue_recovery_code
from biobank.services.reference_data import install_reference_data
from biobank.services.users import ensure_bootstrap_admin
from biobank.settings import Settings


@dataclass
class OpenDatabase:
    engine: Engine
    created_admin: UserRead | None

    def unit_of_work(
        self, *, readonly: bool = False, lookup: bool = False
    ) -> AbstractContextManager[Session]:
        """What front ends use for each use case (see `biobank.db.uow`)."""
        return uow(self.engine, readonly=readonly, lookup=lookup)


@dataclass(frozen=True)
class FirstAdmin:
    """The first admin of a new database; made with a PIN, also its recovery code, to be
    shown once."""

    user: UserRead
    recovery_code: str | None = None


def open_database(settings: Settings) -> OpenDatabase:
    engine = make_engine(settings.database_url)
    check_connection(engine)
    migrate.ensure_current(engine, auto_upgrade=settings.is_embedded)
    first = bootstrap(engine, pin_required=not settings.is_embedded)
    return OpenDatabase(engine, first.user if first else None)


def bootstrap(
    engine: Engine, *, admin_pin: str | None = None, pin_required: bool = False
) -> FirstAdmin | None:
    """Add the shipped reference data that is missing and give a database without users its
    first admin (with `admin_pin`, and then a recovery code; without a PIN only if not
    `pin_required`); return that admin when made."""
    with uow(engine) as session:
        install_reference_data(session)
        admin = ensure_bootstrap_admin(session, pin=admin_pin, pin_required=pin_required)
        if admin is None:
            return None
        if not admin.has_pin:
            return FirstAdmin(admin)
        actor = Actor(admin.id, admin.username, admin.role, SYSTEM.workstation)
        return FirstAdmin(admin, issue_recovery_code(session, actor=actor))


def has_users(engine: Engine) -> bool:
    """Whether the database has a user yet (one without tables has none)."""
    if not sa.inspect(engine).has_table(User.__tablename__):
        return False
    with engine.connect() as connection:
        return connection.execute(sa.select(User.__table__.c.id).limit(1)).first() is not None


FIRST_ADMIN_HINT = (
    "Created the first user, 'admin' (no PIN yet). Set its PIN with: biobank user set-pin admin"
)
