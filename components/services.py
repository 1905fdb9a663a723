"""What every browser session of one server shares, handed in by the composition root (``app.py``)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from agent_studio.components.downloads import DownloadFolder
from agent_studio.storage import Store
from studio.importers.access import ImportFolders
from studio.jobs import JobQueue, WebLimits
from studio.models.access import ModelAccess


@dataclass
class Services:
    """What every session shares."""

    registry: Any
    store: Store | None = None
    default_model: Any = None
    """The model in slot A of every new session (loaded once at start), or None."""
    access: ModelAccess = field(default_factory=ModelAccess)
    """The operator's rules for model names typed in the browser (folders, remote code)."""
    imports: ImportFolders = field(default_factory=ImportFolders)
    """The operator's folders the Episodes tab may import from (``serve --import-dir``)."""
    limits: WebLimits = field(default_factory=WebLimits)
    """The operator's budgets for work started from the browser (``serve --max-web-steps``, ``--web-jobs``)."""
    sweep_executor: Callable[[], Any] | None = None
    """Makes the executor the Compare tab's sweeps run on (``serve --executor ray``: the operator's cluster);
    None: in this process."""
    jobs: JobQueue | None = None
    """The server's queue of heavy work (values, cross-scores, attention, videos, judging, sweeps); made
    from ``limits`` when not given."""
    downloads: DownloadFolder | None = None
    """This server's folder of files offered for download (made when not given)."""
    sessions: dict[str, Any] = field(default_factory=dict)
    """The open pages' sessions by Gradio's session hash: closed when their page goes away (Gradio
    keeps a closed page's state for an hour) and when the server stops."""
    _sessions_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _every: weakref.WeakSet = field(default_factory=weakref.WeakSet, repr=False)
    """Every session made (pages and API clients, which have no page to close): ended at shutdown."""

    def track(self, session: Any) -> Any:
        """A session was made (the state's factory calls this): it will be ended when the server stops."""
        with self._sessions_lock:
            self._every.add(session)
        return session

    def opened(self, key: str, session: Any) -> None:
        """A page loaded with ``session``."""
        with self._sessions_lock:
            self.sessions[key] = session

    def closed(self, key: str) -> None:
        """The page went away (closed, reloaded): its session ends now (an unfinished episode is abandoned)."""
        with self._sessions_lock:
            session = self.sessions.pop(key, None)
            if session is not None:
                self._every.discard(session)
        if session is not None:
            session.close()

    def close_all(self, wait: float = 5.0) -> None:
        """The server stops: every session still open ends — pages' and API clients' — (a running step
        may finish for ``wait`` s)."""
        with self._sessions_lock:
            sessions = list(dict.fromkeys([*self.sessions.values(), *self._every]))
            self.sessions = {}
            self._every = weakref.WeakSet()
        for session in sessions:
            session.close(wait=wait)

    def __post_init__(self) -> None:
        if self.jobs is None:
            self.jobs = JobQueue(self.limits.concurrency)
        if self.downloads is None:
            self.downloads = DownloadFolder()
