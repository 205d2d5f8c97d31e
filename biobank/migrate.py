"""Schema migrations: Alembic driven from code, so they run from an installed wheel.

The migration scripts ship inside the `migrations` package. `biobank db …` and the automatic
upgrade of the embedded database both come through here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

import migrations
from biobank.errors import DatabaseNotReady


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
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
    with _migration_connection(engine) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with _migration_connection(engine) as connection:
        command.downgrade(alembic_config(connection), revision)


def schema_differences(engine: Engine) -> list[str]:
    """Where the database and the models disagree (empty when they agree)."""
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
