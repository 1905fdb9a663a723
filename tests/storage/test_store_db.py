"""Opening databases: URLs, SQLite settings, and every way it can go wrong (one line, nothing lost)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from agent_studio.storage.db import resolve_url
from agent_studio.storage.migrate import head_revision
from studio.errors import StudioError
from tests.support.store_helpers import new_store, run_scripted

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content(path: Path) -> str:
    """Everything an SQLite database holds, as SQL (the file's bytes move with WAL checkpoints)."""
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def test_paths_and_urls_resolve_to_sqlalchemy_urls(tmp_path: Path) -> None:
    assert resolve_url(tmp_path / "a.db") == f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_url(f"sqlite:///{tmp_path / 'b.db'}") == f"sqlite:///{tmp_path / 'b.db'}"
    assert resolve_url("postgresql://user:pw@db.example/studio") == "postgresql://user:pw@db.example/studio"
    assert (tmp_path / "a.db").exists() is False  # resolving creates no file


def test_sqlite_is_set_up_for_several_processes(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with store.db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_foreign_keys_cascade_from_episodes_to_steps(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    episode = run_scripted(store, "expert", seed=0)
    with store.db.write_engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM episodes WHERE id = ?", (episode.id,))
        assert connection.exec_driver_sql("SELECT count(*) FROM steps").scalar() == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuchdialect://x/y", "No database driver for 'nosuchdialect'"),
        ("postgresql+nosuchdriver://u@localhost/db", "No database driver"),
        ("postgresql+pg8000://u@127.0.0.1:1/db", "pip install 'psycopg"),  # a driver that is not installed
        ("postgresql+psycopg://u@127.0.0.1:1/db", "Cannot open the database .*Connection refused"),  # no server there
        ("sqlite:////proc/no/such/dir/x.db", "Cannot create the folder"),
    ],
)
def test_bad_urls_are_one_clear_error(target: str, message: str) -> None:
    with pytest.raises(StudioError, match=message) as error:
        open_store(target)
    assert "\n" not in str(error.value)


def test_a_folder_or_a_path_through_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudioError, match="is a folder"):
        open_store(tmp_path)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(StudioError, match="is a file, not a folder"):
        open_store(tmp_path / "plain.txt" / "studio.db")


def test_a_database_from_a_newer_studio_is_refused_and_left_alone(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    run_scripted(store, "expert", seed=0)
    store.close()
    path = tmp_path / "studio.db"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_future'")
    connection.close()
    before = content(path)
    assert 'INSERT INTO "steps"' in before
    with pytest.raises(StudioError, match=r"newer Agent Studio \(schema 9999_future"):
        open_store(path)
    assert content(path) == before
    result = cli("stats", "--db", str(path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "newer Agent Studio" in result.stderr and content(path) == before


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("INSERT INTO notes (text) VALUES ('keep me')")
    with pytest.raises(StudioError, match="not made by Agent Studio"):
        open_store(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
        assert connection.execute("SELECT name FROM sqlite_master WHERE name = 'episodes'").fetchall() == []


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("just some text, not SQLite\n" * 20)
    before = digest(path)
    with pytest.raises(StudioError, match="Cannot open the database"):
        open_store(path)
    assert digest(path) == before


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--env", "gridworld"],
        ["pairs", "--from", "candidates"],
        ["export", "--format", "dpo", "--out", "x.jsonl"],
        ["stats"],
        ["serve"],
    ],
)
def test_every_command_reports_a_bad_database_in_one_line(command: list[str], tmp_path: Path) -> None:
    result = cli(*command, "--db", "nosuchdialect://nowhere")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: No database driver") and len(result.stderr.strip().splitlines()) == 1
    result = cli(*command, "--db", str(tmp_path))
    assert result.returncode == 2 and "is a folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_schema_revision_is_recorded(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    with sqlite3.connect(tmp_path / "studio.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]


def test_a_write_failing_mid_episode_is_one_clear_error(tmp_path: Path) -> None:
    from studio.agents.scripted import make_policy
    from studio.episodes.runner import EpisodeRunner

    store = new_store(tmp_path)
    runner = EpisodeRunner("gridworld", make_policy("expert"), sinks=[store.episodes.sink()])
    runner.reset(seed=0)
    runner.step()
    with store.db.write_engine.begin() as connection:  # someone breaks the schema under us
        connection.exec_driver_sql("ALTER TABLE steps RENAME TO steps_gone")
    with pytest.raises(StudioError, match="Could not write episode .* to the database: no such table: steps"):
        runner.step()


def test_a_foreign_sqlite_file_is_refused_before_anything_writes_to_it(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("INSERT INTO notes (text) VALUES ('keep me')")
    connection.close()
    before = digest(path)
    for attempt in (lambda: open_store(path), lambda: open_store(path, create=False)):
        with pytest.raises(StudioError, match="not made by Agent Studio"):
            attempt()
    result = cli("stats", "--db", str(path))
    assert result.returncode == 2 and "not made by Agent Studio" in result.stderr
    assert digest(path) == before  # not even switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal or -shm beside it


def test_a_damaged_database_is_refused_and_not_written_to(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for seed in range(4):
        run_scripted(store, "expert", seed=seed, env="household")
    store.close()
    path = tmp_path / "studio.db"
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page : 6 * page] = bytes((i * 37) % 251 for i in range(page))  # one page of garbage
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StudioError, match="is damaged") as error:
        open_store(path)
    assert "\n" not in str(error.value)
    for command in (
        ["stats"],
        ["export", "--format", "episodes", "--out", str(tmp_path / "x.jsonl")],
        ["run", "--env", "gridworld"],
    ):
        result = cli(*command, "--db", str(path))
        assert result.returncode == 2 and "is damaged" in result.stderr and result.stderr.count("\n") == 1, (
            result.stderr
        )
    assert digest(path) == before


def test_commands_that_only_read_refuse_a_database_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    for command in (["stats"], ["export", "--format", "dpo", "--out", str(tmp_path / "out.jsonl")]):
        for target in (str(missing), f"sqlite:///{missing}"):
            result = cli(*command, "--db", target)
            assert result.returncode == 2 and "No database at" in result.stderr and result.stderr.count("\n") == 1, (
                result.stderr
            )
    assert not (tmp_path / "no").exists() and not (tmp_path / "out.jsonl").exists()
