"""Heavy work a web client starts, run one server-wide queue at a time, within the operator's budgets.

A value estimate, a cross-score, an attention pass, a video and a sweep each take seconds to hours
of CPU or GPU. Started from a browser, nothing else bounds them: six value estimates at once pinned
a 2-core server for minutes. Every such action runs inside :meth:`JobQueue.run`:

- at most ``concurrency`` jobs run at once; the rest wait their turn, visible as ``queued``;
- each job reports its progress (``done`` of ``total``), from which an ETA is estimated;
- any job, queued or running, can be cancelled (its work polls :attr:`Job.cancelled` and ends early);
- :meth:`JobQueue.jobs` lists them all, for the one place the studio shows them (the Jobs tab).

:class:`WebLimits` holds the operator's budgets (``serve --max-web-steps``, the concurrency) and the
checks a start must pass: total environment steps, and room on the database's disk.

No UI and no store here: the queue is one object of the server's composition root.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from studio.errors import StudioError
from studio.trace import new_id

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
#: How often a queued job looks whether it was cancelled while it waits for a slot (seconds).
WAIT_POLL_S = 0.1


class JobCancelled(StudioError):
    """The job was cancelled (from the Jobs tab, or its own Stop) before it finished: nothing was kept."""


@dataclass
class JobInfo:
    """A snapshot of one job, as the Jobs tab shows it."""

    id: str
    kind: str
    title: str
    state: JobState
    done: float = 0.0
    total: float | None = None
    message: str = ""
    queued_s: float = 0.0
    """Seconds it waited for a slot (so far, while queued)."""
    running_s: float = 0.0
    """Seconds it has run (so far, while running)."""

    @property
    def fraction(self) -> float | None:
        if self.state == "done":
            return 1.0  # a job that ended well is all done, whatever it last reported
        return None if not self.total else max(0.0, min(1.0, self.done / self.total))

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the pace so far (None before any progress)."""
        fraction = self.fraction
        if self.state != "running" or not fraction or fraction <= 0:
            return None
        return self.running_s * (1 - fraction) / fraction


@dataclass
class Job:
    """One piece of work in the queue: its progress, and a cancel flag its work polls."""

    kind: str
    title: str
    cancel_event: threading.Event = field(default_factory=threading.Event)
    id: str = field(default_factory=lambda: new_id()[:12])
    state: JobState = "queued"
    done: float = 0.0
    total: float | None = None
    message: str = ""
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    ended: float | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        self.cancel_event.set()

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report how far the work got (``done`` of ``total``) and what it is doing."""
        self.done = float(done)
        if total is not None:
            self.total = float(total)
        if message:
            self.message = message

    def info(self) -> JobInfo:
        now = time.monotonic()
        waited = (self.started or self.ended or now) - self.created
        ran = ((self.ended or now) - self.started) if self.started is not None else 0.0
        return JobInfo(self.id, self.kind, self.title, self.state, self.done, self.total, self.message, waited, ran)


class JobQueue:
    """The server's heavy work: at most ``concurrency`` jobs run at once; the last ``keep`` finished
    ones stay listed."""

    def __init__(self, concurrency: int = 2, keep: int = 30) -> None:
        if concurrency < 1:
            raise ValueError("a job queue runs at least one job at a time")
        self.concurrency = concurrency
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._finished: deque[Job] = deque(maxlen=keep)

    @contextmanager
    def run(self, kind: str, title: str, cancel: threading.Event | None = None) -> Iterator[Job]:
        """Hold a slot for the work in the ``with`` block: wait (queued) until one is free, then run.

        ``cancel``: an event the work already polls (a Stop button's), used as the job's cancel flag.
        A job cancelled while queued raises :class:`JobCancelled` without running; a running job's
        work sees :attr:`Job.cancelled` and ends early (what it raises passes through)."""
        job = Job(kind, title, cancel_event=cancel if cancel is not None else threading.Event())
        with self._lock:
            self._active[job.id] = job
        acquired = False
        try:
            while not acquired:
                if job.cancelled:
                    job.state = "cancelled"
                    raise JobCancelled(f"Cancelled before it started: {title}.")
                acquired = self._slots.acquire(timeout=WAIT_POLL_S)
            job.state, job.started = "running", time.monotonic()
            yield job
            job.state = "cancelled" if job.cancelled else "done"
        except BaseException:
            if job.state != "cancelled":
                job.state = "cancelled" if job.cancelled else "failed"
            raise
        finally:
            if acquired:
                self._slots.release()
            job.ended = time.monotonic()
            with self._lock:
                self._active.pop(job.id, None)
                self._finished.appendleft(job)

    def jobs(self) -> list[JobInfo]:
        """Running jobs, then queued ones (oldest first), then the recently finished (newest first)."""
        with self._lock:
            active = sorted(self._active.values(), key=lambda job: (job.state != "running", job.created))
            finished = list(self._finished)
        return [job.info() for job in [*active, *finished]]

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when there is none with that id (it may have ended)."""
        with self._lock:
            job = self._active.get(str(job_id))
        if job is None:
            return False
        job.cancel()
        return True

    @property
    def busy(self) -> int:
        """Jobs running or waiting now."""
        with self._lock:
            return len(self._active)


#: A stored step takes about this much room (a ReAct step with its prompt, tokens and snapshot,
#: compressed: bench/storage.py's 190 MB for 16,670 steps of 4 outputs each, rounded up).
BYTES_PER_STEP = 16_384


@dataclass(frozen=True)
class WebLimits:
    """The operator's budgets for work a web client starts (``serve --max-web-steps``, ``--web-jobs``)."""

    max_steps: int = 200_000
    """Environment steps one web-started job may take at most: a sweep's cells × step limit, a value
    estimate's outputs × rollouts × horizon."""
    concurrency: int = 2
    """Heavy jobs (values, cross-scores, attention, videos, sweeps) run at once; the rest queue."""
    reserve_bytes: int = 1 << 30
    """Free disk a job must leave on the database's disk after what it may store."""

    def check_steps(self, steps: int, what: str) -> None:
        """Refuse (one line) a job of more than :attr:`max_steps` environment steps."""
        if steps > self.max_steps:
            raise StudioError(
                f"{what} may take up to {steps:,} environment steps; this server allows {self.max_steps:,} "
                "for work started from the browser (the operator's serve --max-web-steps). Run it from the "
                "command line, or make it smaller."
            )

    def check_disk(self, steps: int, free_bytes: int | None) -> None:
        """Refuse a job whose steps could fill the database's disk (``free_bytes`` None: a server's, unknown)."""
        if free_bytes is None:
            return
        needed = steps * BYTES_PER_STEP + self.reserve_bytes
        if needed > free_bytes:
            raise StudioError(
                f"Up to {steps:,} stored steps need about {needed / 1e9:.1f} GB with the reserve; the database's "
                f"disk has {free_bytes / 1e9:.1f} GB free."
            )
