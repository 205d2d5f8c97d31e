"""Alembic migrations, shipped inside the wheel. `biobank db upgrade` applies them."""

# The newest revision. A database stamped with it is current, known without loading Alembic
# (`biobank.migrate.ensure_current`); tests/test_migrations.py checks it against the scripts.
HEAD = "0014"
