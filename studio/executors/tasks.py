"""The work a worker may be handed, by name: a sweep's cell, or one step's Monte Carlo values.

A task is a name from :data:`TASKS` and a JSON payload; it answers with JSON. A worker runs nothing else,
so whoever can submit work to it chooses data, never code. Each worker keeps one :class:`WorkerContext`:
the models it loaded stay loaded for its next tasks (a model-driven sweep loads each model once per worker).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable

from studio.errors import StudioError
from studio.models.base import Backend


class WorkerContext:
    """What a worker keeps between tasks: its models, loaded as the operator's ``load`` options say."""

    def __init__(self, load: dict[str, Any] | None = None) -> None:
        from studio.models.registry import ModelRegistry

        self.load = dict(load or {})
        self.registry = ModelRegistry()
        self._lock = threading.Lock()
        self._sweep: tuple[str, Any, list[Any]] | None = None  # the last sweep's spec and cells, by its JSON

    def sweep(self, spec_dict: dict[str, Any]) -> tuple[Any, list[Any]]:
        """The sweep ``spec_dict`` describes and its cells, made once for all the cells a worker runs of it
        (a sweep of 10,000 cells would otherwise build its 10,000 cells for each one)."""
        import json

        from studio.evaluation.sweep import SweepSpec

        key = json.dumps(spec_dict, sort_keys=True)
        with self._lock:
            if self._sweep is None or self._sweep[0] != key:
                spec = SweepSpec.from_dict(spec_dict)
                self._sweep = (key, spec, spec.cells())
            return self._sweep[1], self._sweep[2]

    def model(self, name: str) -> Backend:
        with self._lock:  # one load per model, even when a local executor's threads ask at once
            return self.registry.load(name, **self.load)


def where() -> str:
    """This worker, in a line: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def sweep_cell(payload: dict[str, Any], context: WorkerContext) -> dict[str, Any]:
    """Run one cell of a sweep to its end; the episode as JSON (nothing is stored here: the driver stores it)."""
    from studio.evaluation.sweep import policy_for_cell, run_cell

    spec, cells = context.sweep(_field(payload, "spec", dict))
    index = _field(payload, "cell", int)
    if not 0 <= index < len(cells):
        raise StudioError(f"The sweep has no cell {index}.")
    cell = cells[index]
    policy, config = policy_for_cell(spec, cell, context.model)
    sweep_id = _field(payload, "sweep_id", str)
    episode = run_cell(spec, sweep_id, cell, policy, [], config, threading.Event())
    return {"episode": episode.to_dict()}


def step_values(payload: dict[str, Any], context: WorkerContext) -> dict[str, Any]:
    """Monte Carlo values of one step's outputs (:func:`studio.scaling.values.estimate_step_values`)."""
    from studio.scaling.values import estimate_step_values, rollout_policy_factory
    from studio.trace import Episode

    episode = Episode.from_dict(_field(payload, "episode", dict))
    options = _field(payload, "options", dict)
    unknown = sorted(set(options) - set(VALUE_OPTIONS))
    if unknown or "rollout_policy" not in options:
        raise StudioError(f"A step-values task takes {', '.join(VALUE_OPTIONS)} (rollout_policy required).")
    model_name = payload.get("model")
    model = context.model(str(model_name)) if model_name else None
    policy_for = rollout_policy_factory(str(options["rollout_policy"]), seed=int(options.get("seed", 0)))
    step = _field(payload, "step", int)
    values = estimate_step_values(episode, step, policy_for, model=model, **options)
    return {"values": [value.to_dict() for value in values]}


#: The settings of :func:`studio.scaling.values.estimate_step_values` a step-values task may carry.
VALUE_OPTIONS = ("rollout_policy", "rollouts", "horizon", "seed", "discount", "outputs", "max_steps", "parallel")


def _field(payload: dict[str, Any], name: str, kind: type) -> Any:
    """``payload[name]``, checked to be a ``kind`` (one line otherwise: a payload is data from elsewhere)."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise StudioError(f"A task's {name!r} must be a {kind.__name__}, got {type(value).__name__}.")
    return value


TASKS: dict[str, Callable[[dict[str, Any], WorkerContext], dict[str, Any]]] = {
    "sweep-cell": sweep_cell,
    "step-values": step_values,
}


def run_task(kind: str, payload: dict[str, Any], context: WorkerContext) -> dict[str, Any]:
    """Task ``kind`` on ``payload`` (one line for an unknown task or a malformed payload)."""
    task = TASKS.get(kind) if isinstance(kind, str) else None
    if task is None:
        raise StudioError(f"Unknown task {str(kind)[:40]!r}: a worker runs {', '.join(TASKS)}.")
    if not isinstance(payload, dict):
        raise StudioError("A task's payload must be a JSON object.")
    return task(payload, context)
