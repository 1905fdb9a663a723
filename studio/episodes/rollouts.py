"""Many episodes at once: up to ``parallel`` run side by side, their model calls batched in lockstep.

A job is a function that runs one episode given the backend it should act with (a member of
a :class:`~studio.models.lockstep.LockstepPool`, or None for policies without a model). Jobs
run in worker threads; the model work of the live ones decodes as one batch per token (an
in-process model) or as concurrent requests the engine batches (a served model). Each job
keeps its own policy, seed and environment, so it produces the episode it would produce alone.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from studio.errors import StudioError
from studio.models.base import Backend
from studio.episodes.runner import RunnerEvent, Sink

T = TypeVar("T")
#: Runs one episode with the backend given (None when the pool has no model); returns what the caller wants.
Job = Callable[[Backend | None], T]
#: Hears each job's outcome as it finishes: (job index, its result or its one-line error).
DoneListener = Callable[[int, "T | StudioError"], None]

#: The most episodes a caller may run side by side (threads; each holds an environment and a cache).
MAX_PARALLEL = 256


def check_parallel(parallel: object) -> int:
    """``parallel`` as a whole number from 1 to :data:`MAX_PARALLEL`, or a one-line error."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise StudioError(
            f"Parallel episodes must be a whole number from 1 to {MAX_PARALLEL}, got {str(parallel)[:20]}."
        )
    return parallel


class LockedSink:
    """A sink shared by episodes running side by side: one event at a time (the store's
    transactions and a JSONL file's lines stay whole)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._lock = threading.Lock()

    def handle(self, event: RunnerEvent) -> None:
        with self._lock:
            self.sink.handle(event)


def run_parallel(
    jobs: Sequence[Job[T]],
    backend: Backend | None = None,
    parallel: int = 1,
    on_done: DoneListener | None = None,
) -> list[T | StudioError]:
    """Run ``jobs`` with at most ``parallel`` at once; their results (or one-line errors) in job order.

    With ``parallel`` 1 they run one after another in this thread, each on ``backend`` itself.
    ``on_done`` is called once per job as it finishes, one call at a time. An exception that
    is not a :class:`StudioError` (a bug) is raised once every job has finished.
    """
    parallel = check_parallel(parallel)
    results: list[T | StudioError | None] = [None] * len(jobs)
    bugs: list[BaseException] = []
    report = threading.Lock()
    # The listener runs in the caller's context even from a worker thread (a web framework's
    # progress bar finds its request there); one call at a time, so the context is entered once.
    context = contextvars.copy_context()

    def finish(index: int, outcome: T | StudioError) -> None:
        results[index] = outcome
        if on_done is not None:
            with report:
                context.run(on_done, index, outcome)

    if parallel == 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            try:
                outcome: T | StudioError = job(backend)
            except StudioError as exc:
                outcome = exc
            finish(index, outcome)
        return results  # type: ignore[return-value]

    from studio.models.lockstep import LockstepPool

    pool = LockstepPool(backend) if backend is not None else None

    def work(index: int) -> None:
        member = pool.member() if pool is not None else None
        try:
            outcome: T | StudioError = jobs[index](member)
        except StudioError as exc:
            outcome = exc
        except BaseException as exc:  # noqa: BLE001 - kept for the caller; the other jobs go on
            bugs.append(exc)
            return
        finally:
            if member is not None:
                member.leave()
        finish(index, outcome)

    with ThreadPoolExecutor(max_workers=min(parallel, len(jobs)), thread_name_prefix="rollout") as executor:
        list(executor.map(work, range(len(jobs))))
    if bugs:
        raise bugs[0]
    return results  # type: ignore[return-value]
