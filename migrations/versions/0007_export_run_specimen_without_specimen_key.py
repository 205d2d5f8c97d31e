"""export_run_specimen without a foreign key to specimen

The record of which specimens an export included no longer checks each one against `specimen`:
specimens are never deleted (their custody events hold them), and on PostgreSQL the check took
a row lock on every exported specimen.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "fk_export_run_specimen_specimen_id_specimen"


def upgrade() -> None:
    with op.batch_alter_table("export_run_specimen", schema=None) as batch_op:
        batch_op.drop_constraint(KEY, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("export_run_specimen", schema=None) as batch_op:
        batch_op.create_foreign_key(KEY, "specimen", ["specimen_id"], ["id"], ondelete="RESTRICT")
