"""Names as unbounded text: policy, actor, end reason and model name.

PostgreSQL enforces VARCHAR lengths where SQLite ignores them, so a policy name of 150
characters stored in SQLite was refused by PostgreSQL. These columns become TEXT (the
record limits in ``studio.validation`` bound what reaches them). On SQLite this rebuilds
the three tables (with foreign keys off and checked after: see ``storage/migrate.py``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: table -> (column, its old type, nullable)
WIDENED = {
    "models": [("name", sa.String(length=300), False)],
    "episodes": [("policy", sa.String(length=100), False), ("end_reason", sa.String(length=200), True)],
    "steps": [("actor", sa.String(length=100), False)],
}


def upgrade() -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch_op:
            for column, old, nullable in columns:
                batch_op.alter_column(column, type_=sa.Text(), existing_type=old, existing_nullable=nullable)


def downgrade() -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch_op:
            for column, old, nullable in columns:
                batch_op.alter_column(column, type_=old, existing_type=sa.Text(), existing_nullable=nullable)
