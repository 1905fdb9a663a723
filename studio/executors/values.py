"""Monte Carlo values of many steps on an executor: each step a ``step-values`` task.

Without an executor (``None``) each step is :func:`studio.scaling.values.estimate_step_values` in
this process, as before. Elsewhere each step goes to a worker with its episode; the values come back as
JSON, are checked against the step they answer, and are handed to ``on_values`` here (which stores them).
Rollouts are seeded (rollout ``i`` with ``seed + i``), so the values are the same wherever they ran.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

from studio.errors import StudioError
from studio.executors.registry import Executor
from studio.scaling.values import StepValue, estimate_step_values, rollout_policy_factory
from studio.trace import Episode

#: Hears one step's values (or its one-line error): the episode, the step's index, the values.
ValuesListener = Callable[[Episode, int, "list[StepValue] | StudioError"], None]


def _checked_values(result: dict[str, Any], episode: Episode, index: int) -> list[StepValue]:
    """The values a worker sent for step ``index`` of ``episode`` (one line if they are not that step's)."""
    rows = result.get("values")
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise StudioError("a worker sent no values")
    try:
        values = [StepValue.from_dict(row) for row in rows]
    except TypeError as exc:
        raise StudioError(f"a worker sent malformed values: {str(exc)[:120]}") from None
    for value in values:
        if (value.episode_id, value.step_index) != (episode.id, index) or not math.isfinite(float(value.q)):
            raise StudioError(f"a worker sent values of another step ({value.episode_id[:12]} step {value.step_index})")
    return values


def step_values_with(
    executor: Executor | None,
    items: list[tuple[Episode, int]],
    options: dict[str, Any],
    on_values: ValuesListener,
    model: str | None = None,
    load_model: Callable[[str], Any] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """The values of each (episode, step index) of ``items``, estimated with ``options`` (the keyword
    arguments of :func:`~studio.scaling.values.estimate_step_values`, ``rollout_policy`` among them) and
    rollouts acting with ``model`` where the rollout policy is ``model``. Locally a step's error is raised;
    elsewhere it is handed to ``on_values`` and the other steps go on."""
    stop = stop or threading.Event()
    kind = str(options["rollout_policy"])
    if executor is None:
        backend = load_model(model) if model and load_model is not None else None
        policy_for = rollout_policy_factory(kind, seed=int(options.get("seed", 0)))
        for episode, index in items:
            if stop.is_set():
                return
            on_values(episode, index, estimate_step_values(episode, index, policy_for, model=backend, **options))
        return
    payloads = [
        {"episode": episode.to_dict(), "step": index, "options": options, "model": model} for episode, index in items
    ]

    def finished(number: int, result: dict[str, Any] | StudioError) -> None:
        episode, index = items[number]
        try:
            values: list[StepValue] | StudioError = (
                result if isinstance(result, StudioError) else _checked_values(result, episode, index)
            )
        except StudioError as exc:
            values = exc
        on_values(episode, index, values)

    executor.run_tasks("step-values", payloads, stop=stop, on_done=finished)
