"""Shared test settings: no display, no sound, no analytics, the repo on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Episodes run by the CLI are stored; tests must never write to the user's own database.
import tempfile  # noqa: E402

os.environ["AGENT_STUDIO_DB"] = str(Path(tempfile.mkdtemp(prefix="agent-studio-tests-")) / "studio.db")
# Nor its trained models: a user's model:NAME verifiers would join every verifier list the tests check.
os.environ["AGENT_STUDIO_TRAINED"] = str(Path(tempfile.mkdtemp(prefix="agent-studio-tests-trained-")))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this test session (fails, never skips, when it cannot start)."""
    from tests.support.postgres import PostgresCluster

    try:
        cluster = PostgresCluster()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"PostgreSQL could not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A new, empty database of each kind the store supports: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "studio.db")
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture()
def store(store_url):
    """An open, empty store on each kind of database (the tests that use it run twice)."""
    from agent_studio.storage import open_store

    with open_store(store_url) as opened:
        yield opened
