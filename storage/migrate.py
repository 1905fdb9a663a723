"""Schema versions: every database is brought to the newest schema when it is opened.

The schema is owned by the Alembic migrations in ``storage/migrations``. Opening a
database that is older than this code upgrades it (an SQLite file is first copied to a
backup next to it); a database written by a newer Agent Studio is refused with a message,
and so is a database that was not made by Agent Studio at all. Nothing is changed then.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from agent_studio.storage.db import BEGIN_MODE, Database, describe_url, first_line, make_engine
from studio.errors import StudioError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The key of the PostgreSQL advisory lock that serialises schema upgrades ("agentstu" in ASCII).
MIGRATION_LOCK = int.from_bytes(b"agentstu", "big") >> 1


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database: Database) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` in one transaction.

    The transaction holds the write lock from its start (SQLite's BEGIN IMMEDIATE,
    PostgreSQL's advisory lock), so when several processes open a new database at once,
    one migrates and the others find it done.
    """
    engine = database.write_engine
    if database.is_sqlite:  # table rebuilds must not cascade: foreign keys off, checked before commit
        engine = make_engine(database.url, foreign_keys=False).execution_options(**{BEGIN_MODE: "IMMEDIATE"})
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # PostgreSQL runs concurrent DDL side by side (two processes creating the same
                # table collide); this lock, held to the end of the transaction, makes it one at a time.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            target = head_revision() if revision == "head" else revision
            if MigrationContext.configure(connection).get_current_revision() == target:
                return
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if database.is_sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise StudioError("The schema upgrade would break links between rows; nothing was changed.")
    finally:
        if engine is not database.write_engine:
            engine.dispose()


def backup_sqlite(database: Database, revision: str) -> Path:
    """Copy an SQLite database next to itself (consistent even while others write)."""
    path = Path(database.engine.url.database)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.backup-{revision}-{stamp}")
    source = sqlite3.connect(path)
    try:
        destination = sqlite3.connect(target)
        with destination:
            source.backup(destination)  # SQLite's online backup: includes the WAL's committed pages
        destination.close()
    finally:
        source.close()
    return target


def prepare(database: Database) -> Path | None:
    """Bring ``database`` to the newest schema; return the backup made first, if any."""
    try:
        known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        current = current_revision(database)
        if current == head_revision():
            return None
        if current is not None and current not in known:
            raise StudioError(
                f"The database {describe_url(database.url)} was written by a newer Agent Studio "
                f"(schema {current}; this version knows up to {head_revision()}); upgrade Agent Studio to open it."
            )
        tables = set(inspect(database.engine).get_table_names()) if current is None else set()
        # (alembic_version is made with the tables, in one transaction: a process that migrated
        # a moment ago leaves both, never tables alone.)
        if tables and "alembic_version" not in tables:
            raise StudioError(
                f"The database {describe_url(database.url)} has tables but was not made by Agent Studio; use another file."
            )
        backup = backup_sqlite(database, current) if current is not None and database.is_sqlite else None
        upgrade(database)
        return backup
    except StudioError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise StudioError(f"Cannot open the database {describe_url(database.url)}: {first_line(exc)}") from None
