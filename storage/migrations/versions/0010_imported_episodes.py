"""Episodes from elsewhere (where each came from), tags, notes, rubric labels and full-text search.

SQLite: an FTS5 index over the steps' thoughts, actions and observations and one over the notes,
kept by triggers (external content: the text is not stored twice). PostgreSQL: GIN indexes over
``to_tsvector('simple', ...)`` of the same text. Both are filled from what is stored already.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: The text a step is found by (kept in step with storage/search.py's STEP_TEXT_SQL).
STEP_TEXT = "coalesce(thought, '') || ' ' || coalesce(action, '') || ' ' || observation"

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE steps_fts USING fts5(thought, action, observation, content='steps', content_rowid='id')",
    "CREATE TRIGGER steps_fts_insert AFTER INSERT ON steps BEGIN INSERT INTO steps_fts(rowid, thought, action, "
    "observation) VALUES (new.id, new.thought, new.action, new.observation); END",
    "CREATE TRIGGER steps_fts_delete AFTER DELETE ON steps BEGIN INSERT INTO steps_fts(steps_fts, rowid, thought, "
    "action, observation) VALUES ('delete', old.id, old.thought, old.action, old.observation); END",
    "CREATE TRIGGER steps_fts_update AFTER UPDATE ON steps BEGIN INSERT INTO steps_fts(steps_fts, rowid, thought, "
    "action, observation) VALUES ('delete', old.id, old.thought, old.action, old.observation); INSERT INTO "
    "steps_fts(rowid, thought, action, observation) VALUES (new.id, new.thought, new.action, new.observation); END",
    "INSERT INTO steps_fts(steps_fts) VALUES ('rebuild')",
    "CREATE VIRTUAL TABLE notes_fts USING fts5(text, content='notes', content_rowid='id')",
    "CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN INSERT INTO notes_fts(rowid, text) "
    "VALUES (new.id, new.text); END",
    "CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN INSERT INTO notes_fts(notes_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
]
POSTGRES_FTS = [
    f"CREATE INDEX ix_steps_fts ON steps USING gin (to_tsvector('simple', {STEP_TEXT}))",
    "CREATE INDEX ix_notes_fts ON notes USING gin (to_tsvector('simple', text))",
]


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("source", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("source_format", sa.String(length=40), nullable=True))
        batch.create_index("ix_episodes_source_format", ["source_format"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(length=32), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name="fk_tags_episode_id_episodes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
    )
    op.create_index("ix_tags_episode_id", "tags", ["episode_id"])
    op.create_index("ix_tags_tag_episode", "tags", ["tag", "episode_id"])
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(length=32), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name="fk_notes_episode_id_episodes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
    )
    op.create_index("ix_notes_episode_id", "notes", ["episode_id"])
    op.create_table(
        "rubric_labels",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("episode_id", sa.String(length=32), nullable=False),
        sa.Column("rubric", sa.String(length=100), nullable=False),
        sa.Column("judge", sa.String(length=200), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name="fk_rubric_labels_episode_id_episodes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rubric_labels"),
        sa.UniqueConstraint("episode_id", "rubric", "judge", name="uq_rubric_labels_episode_id"),
    )
    op.create_index("ix_rubric_labels_episode_id", "rubric_labels", ["episode_id"])
    op.create_index("ix_rubric_labels_rubric", "rubric_labels", ["rubric"])
    statements = SQLITE_FTS if op.get_bind().dialect.name == "sqlite" else POSTGRES_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("steps_fts_insert", "steps_fts_delete", "steps_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS steps_fts")
        op.execute("DROP TABLE IF EXISTS notes_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_steps_fts")
    op.drop_table("rubric_labels")
    op.drop_table("notes")
    op.drop_table("tags")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_index("ix_episodes_source_format")
        batch.drop_column("source_format")
        batch.drop_column("source")
