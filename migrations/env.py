"""Alembic environment: uses the connection `biobank.migrate` hands over, or, when `alembic`
is run by hand in a checkout, the database URL from the biobank settings."""

from alembic import context
from sqlmodel import SQLModel

import biobank.models  # noqa: F401  (registers the tables)
from biobank.db import make_engine
from biobank.settings import load_settings

target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(load_settings().database_url)
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("biobank migrations run online only: use `biobank db upgrade`")
run_online()
