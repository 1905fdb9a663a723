"""The store: one object per database, with episodes and preference data.

store = open_store("runs.db")          # a file path, an SQLAlchemy URL, or None (default file)
runner = EpisodeRunner("gridworld", policy, sinks=[store.episodes.sink()])
store.preferences.pairs_from_candidates()
item = store.preferences.queue("ada")[0]
store.preferences.annotate(item.pair_id, "ada", "left")
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent_studio.storage.campaigns import CampaignStore
from agent_studio.storage.db import Database, check_sqlite_file, describe_url, resolve_url, sqlite_path
from agent_studio.storage.cross_scores import CrossScoreStore
from agent_studio.storage.episodes import EpisodeStore
from agent_studio.storage.migrate import prepare
from agent_studio.storage.preferences import PreferenceStore
from agent_studio.storage.rubrics import RubricStore
from agent_studio.storage.search import SearchStore
from agent_studio.storage.sweeps import SweepStore
from agent_studio.storage.training_runs import TrainingStore


class Store:
    """Episodes (``store.episodes``), preference data (``store.preferences``) and sweeps
    (``store.sweeps``) and cross-model scores (``store.cross_scores``) in one database."""

    def __init__(self, database: Database, backup: Path | None = None) -> None:
        self.db = database
        self.episodes = EpisodeStore(database)
        self.preferences = PreferenceStore(database, self.episodes)
        self.sweeps = SweepStore(database)
        self.cross_scores = CrossScoreStore(database)
        self.search = SearchStore(database)
        self.rubrics = RubricStore(database)
        self.training = TrainingStore(database)
        self.campaigns = CampaignStore(database, self.preferences)
        #: The copy made before an older database was upgraded, if one was.
        self.backup = backup

    @property
    def url(self) -> str:
        """Where the data lives (without a password)."""
        return describe_url(self.db.url)

    def free_bytes(self) -> int | None:
        """Free space on the disk an SQLite file lives on (what a big run would fill); None for a
        server database, whose disk this process cannot see."""
        path = sqlite_path(self.db.url)
        if path is None:
            return None
        return shutil.disk_usage(path.parent).free

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_store(target: str | os.PathLike[str] | None = None, create: bool = True) -> Store:
    """Open (creating or upgrading as needed) the database at ``target``.

    ``target`` is a file path, an SQLAlchemy URL or None for the default file in the user's
    data directory. With ``create=False`` a database that does not exist is an error (for
    commands that only read). An existing SQLite file is checked before anything writes to it
    (see :func:`~storage.db.check_sqlite_file`). Raises :class:`~studio.errors.StudioError`
    with one line when it cannot.
    """
    url = resolve_url(target, create=create)
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path)
    database = Database(url)
    try:
        backup = prepare(database)
    except BaseException:
        database.dispose()
        raise
    return Store(database, backup)
