"""Alembic migrations, shipped inside the wheel. `biobank db upgrade` applies them."""
