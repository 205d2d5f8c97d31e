"""Schema migrations: Alembic driven from code, so they run from an installed wheel.

The migration scripts ship inside the `migrations` package. `biobank db …` and the automatic
upgrade of the embedded database both come through here. Alembic (with Mako, and Pygments if
installed) takes half a second to import, so it is loaded only when there is migrating to do:
every start checks the stamp against `migrations.HEAD` with one query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

import migrations
from biobank.errors import DatabaseNotReady

if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[sa.Connection]:
    """A connection for schema changes. SQLite rebuilds tables in batch mode, which needs
    foreign keys off while it runs; they are checked and turned back on afterwards."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            yield connection
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                connection.rollback()
                if broken:
                    raise DatabaseNotReady(f"a migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with _migration_connection(engine) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with _migration_connection(engine) as connection:
        command.downgrade(alembic_config(connection), revision)


def schema_differences(engine: Engine) -> list[str]:
    """Where the database and the models disagree (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import biobank.models  # noqa: F401  (registers the tables)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return [repr(diff) for diff in compare_metadata(context, SQLModel.metadata)]


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision) of the database."""
    return current_revision(engine), head_revision()


def ensure_current(engine: Engine, *, auto_upgrade: bool) -> None:
    """Make sure the schema is at head: upgrade the embedded database, refuse a server's."""
    if _stamped(engine) == [migrations.HEAD]:  # the everyday case: no Alembic to load
        return
    from alembic.script import ScriptDirectory

    current, head = schema_state(engine)
    if current == head:
        return
    script = ScriptDirectory.from_config(alembic_config())
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise DatabaseNotReady(
            f"the database is at revision {current}, newer than this version of biobank "
            f"knows (head {head}); install the newer biobank"
        )
    if auto_upgrade:
        upgrade(engine)
        return
    raise DatabaseNotReady(
        f"the database schema is at revision {current or 'none (empty)'}, this version of "
        f"biobank needs {head}: run `biobank db upgrade`"
    )


def _stamped(engine: Engine) -> list[str]:
    """The revisions the database is stamped with (none before its first migration)."""
    with engine.connect() as connection:
        try:
            return list(
                connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
            )
        except sa.exc.DBAPIError:
            return []
