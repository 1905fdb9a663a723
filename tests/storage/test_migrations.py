"""Migrations: a database made with the first schema upgrades with its data intact; migrations equal the models."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from agent_studio.storage import open_store
from agent_studio.storage.db import Database, make_engine, resolve_url
from agent_studio.storage.episodes import EpisodeStore
from agent_studio.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from agent_studio.storage.orm import Base
from studio.agents.scripted import make_policy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from tests.support.store_helpers import run_react


def downgrade(database: Database, revision: str) -> None:
    """Alembic's downgrade, with SQLite's foreign keys off as the upgrade has them (table rebuilds)."""
    engine = make_engine(database.url, foreign_keys=False)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_a_first_schema_database_upgrades_to_head_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    database = Database(resolve_url(path))
    upgrade(database)
    runner = EpisodeRunner(
        "household",
        make_policy("expert"),
        sinks=[EpisodeStore(database).sink()],
        config=RunnerConfig(record_frames=True),
    )
    runner.reset(seed=5)
    episode = runner.run()
    # Every migration's downgrade, down to the first schema (episodes only), keeps the episode.
    downgrade(database, "0001")
    assert current_revision(database) == "0001"
    database.dispose()
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "episodes" in tables and "pairs" not in tables

    store = open_store(path)
    assert current_revision(store.db) == head_revision() != "0001"
    # The step limit came with revision 0006: the downgrade below it forgot it, and nothing else.
    assert store.episodes.get(episode.id).to_dict() == {**episode.to_dict(), "max_steps": None}
    assert episode.max_steps == 50
    # The backup next to it is the old database, untouched.
    assert store.backup is not None and store.backup.parent == tmp_path and "0001" in store.backup.name
    with sqlite3.connect(store.backup) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert connection.execute("SELECT count(*) FROM steps").fetchone()[0] == episode.length
    # The new tables work on the upgraded data.
    fork = run_react(store, seed=0, steps=2)
    assert store.preferences.pairs_from_candidates().created == 6
    item = store.preferences.queue("ada", limit=1)[0]
    store.preferences.annotate(item.pair_id, "ada", "left")
    assert store.episodes.count()["episodes"] == 2 and fork.id != episode.id
    # Opening it again changes nothing and makes no second backup.
    store.close()
    assert open_store(path).backup is None


def not_full_text_index(name: str | None, kind: str, parent: object) -> bool:
    """SQLite's FTS5 tables (and their shadow tables) and PostgreSQL's GIN expression indexes are made by
    migration 0010 in SQL of their own: no model describes them (storage/search.py reads them)."""
    return not (name or "").startswith(("steps_fts", "notes_fts", "ix_steps_fts", "ix_notes_fts"))


def test_migrations_create_exactly_the_models_schema(store_url: str) -> None:
    with open_store(store_url) as store, store.db.engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True, "include_name": not_full_text_index}),
            Base.metadata,
        )
    assert differences == []


def test_rebuilding_tables_keeps_every_linked_row(tmp_path: Path) -> None:
    """0003 rebuilds episodes, steps and models on SQLite: nothing may cascade away."""
    path = tmp_path / "second.db"
    database = Database(resolve_url(path))
    upgrade(database)  # written by today's store, then taken back to the second schema
    from agent_studio.storage.store import Store

    old = Store(database)
    run_react(old, seed=0, steps=2)
    old.preferences.pairs_from_candidates()
    item = old.preferences.queue("ada", limit=1)[0]
    old.preferences.annotate(item.pair_id, "ada", "left")
    episode_id = old.episodes.summaries()[0].id
    old.preferences.label_step(episode_id, 1, "ada", "good")
    downgrade(database, "0002")
    tables = ("episodes", "steps", "candidates", "models", "pairs", "annotations", "step_labels")

    def counts(db_path: Path) -> dict[str, int]:
        with sqlite3.connect(db_path) as connection:
            return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    before = counts(path)
    database.dispose()
    assert min(before.values()) > 0
    with open_store(path) as store:
        assert current_revision(store.db) == head_revision()
        assert counts(path) == before
        assert store.episodes.save(store.episodes.get(episode_id)).outcome == "unchanged"


def test_several_processes_opening_a_new_database_at_once_migrate_it_once(store_url: str) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = "import sys; from agent_studio.storage import open_store; s = open_store(sys.argv[1]); print(s.episodes.count()['episodes'])"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, store_url], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], results
    assert all(out.strip() == "0" for out, _ in results)
    with open_store(store_url) as store, store.db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
