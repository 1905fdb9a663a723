"""The ``local`` executor: tasks in this process's threads, one :class:`WorkerContext` (models loaded once).

Sweeps run locally through :func:`studio.evaluation.sweep.run_sweep` itself (a model's calls batched in
lockstep); this executor runs the same named tasks a cluster's workers run, so the two can be compared.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from studio.errors import StudioError
from studio.executors.registry import ExecutorOptions, TaskListener
from studio.executors.tasks import WorkerContext, run_task, where


class LocalExecutor:
    """Named tasks in up to ``options.workers`` threads of this process."""

    name = "local"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.context = WorkerContext(options.load)

    def describe(self) -> str:
        return f"this process ({where()}), {self.options.workers} threads"

    def run_tasks(
        self, kind: str, payloads: list[dict[str, Any]], *, stop: threading.Event, on_done: TaskListener
    ) -> None:
        def one(payload: dict[str, Any]) -> dict[str, Any] | StudioError | None:
            if stop.is_set():
                return None  # not started: nothing to report
            try:
                return run_task(kind, payload, self.context)
            except StudioError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="task") as pool:
            running: dict[Future, int] = {pool.submit(one, payload): index for index, payload in enumerate(payloads)}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    outcome = None if future.cancelled() else future.result()
                    if outcome is not None:  # a task that finished is reported, even after Stop
                        on_done(index, outcome)
                if stop.is_set():
                    for future in running:
                        future.cancel()

    def close(self) -> None:
        return None
