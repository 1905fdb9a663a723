"""What every browser session of one server shares, handed in by the composition root (``app.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.downloads import DownloadFolder
from storage import Store
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
    limits: WebLimits = field(default_factory=WebLimits)
    """The operator's budgets for work started from the browser (``serve --max-web-steps``, ``--web-jobs``)."""
    jobs: JobQueue | None = None
    """The server's queue of heavy work (values, cross-scores, attention, videos, judging, sweeps); made
    from ``limits`` when not given."""
    downloads: DownloadFolder | None = None
    """This server's folder of files offered for download (made when not given)."""

    def __post_init__(self) -> None:
        if self.jobs is None:
            self.jobs = JobQueue(self.limits.concurrency)
        if self.downloads is None:
            self.downloads = DownloadFolder()
