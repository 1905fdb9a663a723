"""Annotation campaigns: campaigns, their versioned guidelines, items (with gold answers and claims),
assignments, and adjudications.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("assignment", sa.String(length=20), nullable=False),
        sa.Column("annotators", sa.JSON(), nullable=False),
        sa.Column("taxonomy", sa.JSON(), nullable=False),
        sa.Column("show_consequences", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("closed_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
    )
    op.create_table(
        "campaign_guidelines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        _fk("campaign_guidelines", "campaign_id", "campaigns"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_guidelines")),
        sa.UniqueConstraint("campaign_id", "version", name=op.f("uq_campaign_guidelines_campaign_id")),
    )
    op.create_table(
        "campaign_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("pair_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("gold", sa.String(length=20), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        _fk("campaign_items", "campaign_id", "campaigns"),
        _fk("campaign_items", "pair_id", "pairs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_items")),
        sa.UniqueConstraint("campaign_id", "pair_id", name=op.f("uq_campaign_items_campaign_id")),
    )
    with op.batch_alter_table("campaign_items", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_items_order", ["campaign_id", "position"], unique=False)
        batch_op.create_index(batch_op.f("ix_campaign_items_pair_id"), ["pair_id"], unique=False)
    op.create_table(
        "campaign_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("pair_id", sa.String(length=32), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.String(length=32), nullable=False),
        sa.Column("guidelines_version", sa.Integer(), nullable=True),
        _fk("campaign_assignments", "annotator_id", "annotators"),
        _fk("campaign_assignments", "campaign_id", "campaigns"),
        _fk("campaign_assignments", "pair_id", "pairs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_assignments")),
        sa.UniqueConstraint("campaign_id", "pair_id", "annotator_id", name=op.f("uq_campaign_assignments_campaign_id")),
    )
    with op.batch_alter_table("campaign_assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_assignments_annotator_id"), ["annotator_id"], unique=False)
    op.create_table(
        "adjudications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pair_id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=32), nullable=True),
        sa.Column("adjudicator", sa.String(length=200), nullable=False),
        sa.Column("choice", sa.String(length=20), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        _fk("adjudications", "campaign_id", "campaigns", ondelete="SET NULL"),
        _fk("adjudications", "pair_id", "pairs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjudications")),
        sa.UniqueConstraint("pair_id", name=op.f("uq_adjudications_pair_id")),
    )
    with op.batch_alter_table("adjudications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adjudications_campaign_id"), ["campaign_id"], unique=False)


def downgrade() -> None:
    for table in ("adjudications", "campaign_assignments", "campaign_items", "campaign_guidelines", "campaigns"):
        op.drop_table(table)
