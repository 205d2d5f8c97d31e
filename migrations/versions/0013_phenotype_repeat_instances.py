"""Phenotype repeat instances

- `phenotype_value.instance`, `phenotype_missing.instance`: 0 for the value of a visit (or a
  participant's visit-less one), 1, 2, … for each filling of a form repeated within a visit
  (REDCap's repeating instrument), a dated observation of its own; the unique indexes take the
  instance in, so a visit holds one value per variable and instance.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 09:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VISIT_LESS = sa.text("visit_id IS NULL")
TABLES = ("phenotype_value", "phenotype_missing")


def _indexes(batch_op: BatchOperations, table: str, columns: list[str]) -> None:
    batch_op.create_index(
        f"uq_{table}_participant",
        ["participant_id", "variable_id", *columns],
        unique=True,
        sqlite_where=VISIT_LESS,
        postgresql_where=VISIT_LESS,
    )
    batch_op.create_index(f"uq_{table}_visit", ["visit_id", "variable_id", *columns], unique=True)


def _drop_indexes(batch_op: BatchOperations, table: str) -> None:
    batch_op.drop_index(f"uq_{table}_visit")
    batch_op.drop_index(
        f"uq_{table}_participant", sqlite_where=VISIT_LESS, postgresql_where=VISIT_LESS
    )


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("instance", sa.Integer(), server_default="0", nullable=False)
            )
            _drop_indexes(batch_op, table)
            _indexes(batch_op, table, ["instance"])


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            _drop_indexes(batch_op, table)
            batch_op.drop_column("instance")
            _indexes(batch_op, table, [])
