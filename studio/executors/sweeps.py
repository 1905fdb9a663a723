"""A sweep's cells on an executor: each cell a ``sweep-cell`` task, each episode stored here as it comes back.

The local path is :func:`studio.evaluation.sweep.run_sweep` (lockstep batching in this process);
:func:`run_sweep_with` sends the cells elsewhere and keeps the same contract: the same episodes for the same
cells, ``on_done`` per finished cell, one line per failed cell (naming the worker), Stop, resume.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from studio.episodes.runner import RunnerEvent, Sink
from studio.errors import StudioError
from studio.evaluation.sweep import CellListener, ModelLoader, SweepOutcome, SweepSpec, cell_failure, run_sweep
from studio.executors.registry import Executor
from studio.trace import Episode


def deliver(episode: Episode, sinks: list[Sink]) -> None:
    """Hand a finished episode to ``sinks``: whole where a sink takes it whole (the store: one
    transaction), else as the runner's events would have come."""
    for sink in sinks:
        whole: Callable[[Episode], Any] | None = getattr(sink, "save_whole", None)
        if whole is not None:
            whole(episode)
            continue
        sink.handle(RunnerEvent("started", episode, None))
        for step in episode.steps:
            sink.handle(RunnerEvent("step", episode, step))
        sink.handle(RunnerEvent("ended", episode, None))


def _checked_episode(result: dict[str, Any], sweep_id: str, cell: Any) -> Episode:
    """The episode a worker sent for ``cell``, checked like any JSON episode and against the cell."""
    episode = Episode.from_dict(result.get("episode"))  # type: ignore[arg-type]
    if (episode.sweep, episode.sweep_cell, episode.env, episode.seed) != (sweep_id, cell.index, cell.env, cell.seed):
        raise StudioError(f"a worker sent an episode of another cell (cell {episode.sweep_cell}, seed {episode.seed})")
    return episode


def run_sweep_with(
    executor: Executor | None,
    spec: SweepSpec,
    sweep_id: str,
    sinks: list[Sink],
    load_model: ModelLoader,
    skip: set[int] | frozenset[int] = frozenset(),
    parallel: int = 1,
    stop: threading.Event | None = None,
    on_done: CellListener | None = None,
) -> SweepOutcome:
    """The cells of ``spec`` not in ``skip``: in this process (``executor`` None: :func:`run_sweep`, lockstep)
    or as tasks on ``executor`` (``local``'s threads run the same tasks a cluster's workers run)."""
    if executor is None:
        return run_sweep(spec, sweep_id, sinks, load_model, skip, parallel, stop, on_done)
    stop = stop or threading.Event()
    outcome = SweepOutcome()
    todo = [cell for cell in spec.cells() if cell.index not in skip]
    payloads = [{"spec": spec.to_dict(), "sweep_id": sweep_id, "cell": cell.index} for cell in todo]

    def finished(index: int, result: dict[str, Any] | StudioError) -> None:
        cell = todo[index]
        if not isinstance(result, StudioError):
            try:
                episode: Episode | StudioError = _checked_episode(result, sweep_id, cell)
            except StudioError as exc:
                episode = exc
        else:
            episode = result
        if not isinstance(episode, StudioError):
            try:
                deliver(episode, sinks)
            except StudioError as exc:  # not stored (the database failed): a resume runs the cell again
                episode = exc
        if isinstance(episode, StudioError):
            outcome.failed.append(cell_failure(cell, episode))
        else:
            outcome.completed += int(episode.complete)
        if on_done is not None:
            on_done(cell, episode)

    executor.run_tasks("sweep-cell", payloads, stop=stop, on_done=finished)
    outcome.stopped = stop.is_set()
    return outcome
