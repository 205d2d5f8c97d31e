"""Opening the database an entry point works on.

The embedded SQLite default is created and migrated on first use; a server database that is
behind refuses to start and says which command to run. A new database gets its first admin.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from biobank import migrate
from biobank.db import check_connection, make_engine, uow
from biobank.models import UserRead
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


def open_database(settings: Settings) -> OpenDatabase:
    engine = make_engine(settings.database_url)
    check_connection(engine)
    migrate.ensure_current(engine, auto_upgrade=settings.is_embedded)
    return OpenDatabase(engine, bootstrap(engine))


def bootstrap(engine: Engine) -> UserRead | None:
    """Add the shipped reference data that is missing and give a database without users its
    first admin; return that admin when created."""
    with uow(engine) as session:
        install_reference_data(session)
        return ensure_bootstrap_admin(session)


FIRST_ADMIN_HINT = (
    "Created the first user, 'admin' (no PIN yet). Set its PIN with: biobank user set-pin admin"
)
