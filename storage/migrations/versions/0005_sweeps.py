"""Evaluation sweeps (the sweeps table, and each episode's sweep and cell) and cross-model scores.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cells", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
        sa.UniqueConstraint("name", name=op.f("uq_sweeps_name")),
    )
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("sweep_cell", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_episodes_sweep_id"), ["sweep_id"], unique=False)
    op.create_table(
        "cross_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("scorer", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.LargeBinary(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("own_total", sa.Float(), nullable=True),
        sa.Column("preferred", sa.Text(), nullable=True),
        sa.Column("action_logprobs", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["step_id"], ["steps.id"], name=op.f("fk_cross_scores_step_id_steps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cross_scores")),
        sa.UniqueConstraint("step_id", "scorer", name=op.f("uq_cross_scores_step_id")),
    )
    op.create_index(op.f("ix_cross_scores_step_id"), "cross_scores", ["step_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cross_scores_step_id"), table_name="cross_scores")
    op.drop_table("cross_scores")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_index(batch.f("ix_episodes_sweep_id"))
        batch.drop_column("sweep_cell")
        batch.drop_column("sweep_id")
    op.drop_table("sweeps")
