"""Database URLs, engines and session scopes.

A database is named by a file path (an SQLite file) or any SQLAlchemy URL
(``sqlite:///runs.db``, ``postgresql+psycopg://user@host/studio`` for a team). SQLite
connections get the pragmas that make several processes safe on one file: WAL (readers
never block the writer), foreign keys on, a busy timeout instead of an immediate
"database is locked", and write transactions that take the write lock when they begin
(``BEGIN IMMEDIATE``) so two writers queue instead of failing half-way through.

Every failure to open a database is a :class:`~studio.errors.StudioError` with one line.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from studio.errors import StudioError
from studio.processes import pid_alive

#: Seconds a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 60
BEGIN_MODE = "studio_sqlite_begin"
SQLITE_HEADER = b"SQLite format 3\x00"
T = TypeVar("T")
DRIVER_HINTS = {
    "postgresql": "for PostgreSQL: pip install 'psycopg[binary]'",
    "mysql": "for MySQL: pip install pymysql and use mysql+pymysql://",
}


def process_name() -> str:
    """This process as the store records who runs something: ``HOST pid N``."""
    return f"{socket.gethostname()[:60]} pid {os.getpid()}"


def process_gone(name: str | None) -> bool:
    """Whether a :func:`process_name` (perhaps followed by more words) names a process of this machine
    that is no longer running; False for another machine's (which this one cannot see)."""
    host, _, rest = (name or "").partition(" pid ")
    pid = rest.split(" ", 1)[0]
    if host != socket.gethostname()[:60] or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def default_db_path() -> Path:
    """Where episodes and annotations are kept unless ``--db`` says otherwise."""
    override = os.environ.get("AGENT_STUDIO_DB")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("agent-studio", appauthor=False)) / "studio.db"


def resolve_url(target: str | os.PathLike[str] | None, create: bool = True) -> str:
    """An SQLAlchemy URL for a file path, a URL, or None (the default database file).

    With ``create=False`` (commands that only read) an SQLite file that does not exist is an
    error: a mistyped path must not leave an empty database (and its folders) behind.
    """
    if target is None or str(target).strip() == "":
        return _sqlite_file_url(default_db_path(), create=create)
    text = str(target).strip()
    if len(text) > 4096:
        raise StudioError("The database path or URL is longer than 4,096 characters.")
    if "://" not in text:
        return _sqlite_file_url(Path(text).expanduser(), create=create)
    try:
        url = make_url(text)
    except ArgumentError:
        raise StudioError(
            f"Not a database URL or file path: {text[:200]!r} (try a file path or sqlite:///FILE)."
        ) from None
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not url.database.startswith("file:")
    ):
        return _sqlite_file_url(Path(url.database).expanduser(), url, create)
    return text


def sqlite_path(url: str) -> Path | None:
    """The file behind an SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or parsed.database in (None, "", ":memory:")
        or parsed.database.startswith("file:")
    ):
        return None
    return Path(parsed.database)


def check_sqlite_file(path: Path) -> None:
    """Before anything writes to an existing SQLite file — even a pragma that switches it to WAL —
    make sure it is an intact SQLite database that Agent Studio made (or an empty one).

    Reads only: the header, then ``PRAGMA quick_check`` and the table names on a read-only
    connection. A foreign or damaged file is refused with one line, and left exactly as it was.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StudioError(f"Cannot open the database {path}: it is not an SQLite database (use another file).")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StudioError(f"Cannot open the database {path}: {exc}.") from None
    if problems != ["ok"]:
        first = " ".join(str(problems[0]).replace("*** in database main ***", "").split())
        raise StudioError(
            f"The database {path} is damaged ({first[:120]}); nothing was written to it: restore a backup, or try `sqlite3 {path} .recover`."
        )
    if tables and "alembic_version" not in tables:
        raise StudioError(f"The database {path} has tables but was not made by Agent Studio; use another file.")


def _sqlite_file_url(path: Path, url=None, create: bool = True) -> str:  # noqa: ANN001 - a sqlalchemy URL
    """Check that an SQLite file can be created or written; return its absolute URL."""
    path = path.absolute()
    if path.is_dir():
        raise StudioError(f"The database path {path} is a folder; give a file name, e.g. {path / 'studio.db'}.")
    if not create and not path.exists():
        raise StudioError(
            f"No database at {path}: nothing has been stored there (check --db; commands that only read never create one)."
        )
    parent = path.parent
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise StudioError(f"Cannot create the database {path}: {existing} is a file, not a folder.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(f"Cannot create the folder for the database {path}: {exc.strerror or exc}.") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StudioError(f"Cannot write the database {path}: permission denied.")
    base = make_url("sqlite://") if url is None else url
    return base.set(database=str(path)).render_as_string(hide_password=False)


def first_line(exc: BaseException) -> str:
    """The driver's own message of a database error, on one line."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".") + "."


def describe_url(url: str) -> str:
    """The URL as it is safe to print (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine, foreign_keys: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API connection
        # pysqlite's own transaction handling begins lazily and cannot BEGIN IMMEDIATE:
        # turn it off and emit BEGIN ourselves (the SQLAlchemy documentation's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across process crashes in WAL mode (only power loss can drop
            # the last transactions), and much faster than FULL.
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:  # noqa: ANN001 - sqlalchemy Connection
        mode = connection.get_execution_options().get(BEGIN_MODE, "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def make_engine(url: str, foreign_keys: bool = True) -> Engine:
    """An engine for ``url`` (already resolved), with the SQLite pragmas when it is SQLite.

    ``foreign_keys=False`` is for SQLite schema migrations only: rebuilding a table there
    drops the old one, which with foreign keys on would cascade-delete the rows that point
    at it (SQLite's own procedure for schema changes turns them off and checks after).
    """
    try:
        engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        backend = url.split(":", 1)[0]
        hint = DRIVER_HINTS.get(backend.split("+")[0])
        raise StudioError(f"No database driver for {backend!r} is installed ({hint or exc}).") from None
    except (ArgumentError, SQLAlchemyError, ValueError) as exc:
        raise StudioError(f"Cannot use the database URL {describe_url(url)}: {exc}.") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, foreign_keys)
    return engine


class Database:
    """An engine with two session factories: reads, and writes that lock early on SQLite."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        #: The same pool, but transactions take SQLite's write lock when they begin.
        self.write_engine = (
            self.engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"}) if self.is_sqlite else self.engine
        )
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for queries (rolled back at the end)."""
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session whose work is committed at the end, or rolled back on an error."""
        with self._write() as session, session.begin():
            yield session

    def write(self, work: Callable[[Session], T], attempts: int = 5) -> T:
        """``work(session)`` in a write transaction, run again when a concurrent writer won a race.

        Two annotators' processes may insert the same unique row (a judgement, a label, an
        annotator) at the same instant. SQLite queues writers, so it never sees this;
        PostgreSQL lets both try and fails one with a unique violation. The failed one runs
        again, finds the row, and updates it: nothing is lost.
        """
        for attempt in range(attempts):
            try:
                with self.writing() as session:
                    return work(session)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def dispose(self) -> None:
        self.engine.dispose()
