"""Preference data: annotators, pairs, annotations and step labels.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "annotators",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotators")),
        sa.UniqueConstraint("name", name=op.f("uq_annotators_name")),
    )

    op.create_table(
        "pairs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("env", sa.String(length=200), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("left_episode_id", sa.String(length=32), nullable=False),
        sa.Column("left_candidate_id", sa.String(length=32), nullable=True),
        sa.Column("right_episode_id", sa.String(length=32), nullable=False),
        sa.Column("right_candidate_id", sa.String(length=32), nullable=True),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("shuffle", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["left_candidate_id"],
            ["candidates.id"],
            name=op.f("fk_pairs_left_candidate_id_candidates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["left_episode_id"], ["episodes.id"], name=op.f("fk_pairs_left_episode_id_episodes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["right_candidate_id"],
            ["candidates.id"],
            name=op.f("fk_pairs_right_candidate_id_candidates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["right_episode_id"], ["episodes.id"], name=op.f("fk_pairs_right_episode_id_episodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairs")),
        sa.UniqueConstraint("key", name=op.f("uq_pairs_key")),
    )
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.create_index("ix_pairs_filter", ["kind", "env", "source"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairs_left_episode_id"), ["left_episode_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairs_right_episode_id"), ["right_episode_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pairs_shuffle"), ["shuffle"], unique=False)

    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pair_id", sa.String(length=32), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=20), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["annotator_id"], ["annotators.id"], name=op.f("fk_annotations_annotator_id_annotators"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"], ["pairs.id"], name=op.f("fk_annotations_pair_id_pairs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
        sa.UniqueConstraint("pair_id", "annotator_id", name=op.f("uq_annotations_pair_id")),
    )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index("ix_annotations_annotator_updated", ["annotator_id", "updated_at"], unique=False)

    op.create_table(
        "step_labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotator_id"], ["annotators.id"], name=op.f("fk_step_labels_annotator_id_annotators"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["step_id"], ["steps.id"], name=op.f("fk_step_labels_step_id_steps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_labels")),
        sa.UniqueConstraint("step_id", "annotator_id", name=op.f("uq_step_labels_step_id")),
    )
    with op.batch_alter_table("step_labels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_labels_step_id"), ["step_id"], unique=False)


def downgrade() -> None:
    op.drop_table("step_labels")
    op.drop_table("annotations")
    op.drop_table("pairs")
    op.drop_table("annotators")
