"""Monte Carlo step values: Q of each output of a step, with how it was estimated.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_values",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("output", sa.String(length=40), nullable=False),
        sa.Column("candidate_id", sa.String(length=32), nullable=True),
        sa.Column("settings", sa.String(length=200), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("q", sa.Float(), nullable=False),
        sa.Column("stderr", sa.Float(), nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("soft", sa.Float(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("rollout_policy", sa.Text(), nullable=False),
        sa.Column("rollouts", sa.Integer(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["candidates.id"], name=op.f("fk_step_values_candidate_id_candidates"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["step_id"], ["steps.id"], name=op.f("fk_step_values_step_id_steps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_values")),
        sa.UniqueConstraint("step_id", "output", "settings", name=op.f("uq_step_values_step_id")),
    )
    op.create_index(op.f("ix_step_values_step_id"), "step_values", ["step_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_step_values_step_id"), table_name="step_values")
    op.drop_table("step_values")
