"""The executor registry: ``local`` and ``ray`` register here; :func:`make_executor` makes one by name."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from studio.errors import StudioError

#: Hears each task's outcome as it finishes, in the caller's thread: (task index, result or one-line error).
TaskListener = Callable[[int, "dict[str, Any] | StudioError"], None]
#: The most workers one run asks a cluster for.
MAX_WORKERS = 1024


@dataclass(frozen=True)
class ExecutorOptions:
    """What an executor is made with (the CLI's flags, the operator's settings for the web app)."""

    address: str = "auto"
    """A Ray cluster: ``auto`` (``RAY_ADDRESS``, else the cluster this machine runs), ``HOST:PORT`` (its
    head), or ``ray://HOST:PORT`` (Ray Client); ``local`` starts a cluster inside this process."""
    workers: int = 2
    """Workers at once (Ray actors; threads for ``local``)."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves on the cluster (a browser or a renderer may want more)."""
    memory_gb: float | None = None
    """Memory each worker reserves (GiB), so the cluster places no more workers than fit."""
    gpus_per_worker: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)
    """How workers load models: ``device``, ``dtype``, ``trust_remote_code`` (the operator's, never a web client's)."""

    def __post_init__(self) -> None:
        workers = self.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise StudioError(f"Workers must be a whole number from 1 to {MAX_WORKERS}, got {str(workers)[:20]}.")
        for name, value, most in (
            ("CPUs per worker", self.cpus_per_worker, 256),
            ("GPUs per worker", self.gpus_per_worker, 16),
            ("Memory per worker (GiB)", self.memory_gb if self.memory_gb is not None else 1.0, 4096),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= most:
                raise StudioError(f"{name} must be a number from 0 to {most}, got {str(value)[:20]}.")
        if not isinstance(self.address, str) or not self.address.strip() or len(self.address) > 300:
            raise StudioError("A Ray address is auto, local, HOST:PORT or ray://HOST:PORT.")


class Executor(Protocol):
    """Runs named tasks (:mod:`studio.executors.tasks`) somewhere and reports each outcome."""

    name: str

    def run_tasks(
        self, kind: str, payloads: list[dict[str, Any]], *, stop: threading.Event, on_done: TaskListener
    ) -> None:
        """Run task ``kind`` on each payload; ``on_done`` hears each outcome once, in this thread. After
        ``stop`` is set nothing new starts and running tasks are cancelled (their outcomes are not reported)."""
        ...

    def describe(self) -> str:
        """One line: where the work runs (e.g. ``Ray cluster at 10.0.0.1:6379, 2 workers``)."""
        ...

    def close(self) -> None:
        """Give the workers back."""
        ...


@dataclass(frozen=True)
class ExecutorInfo:
    name: str
    summary: str
    module: str
    """The module that defines the executor (imported only when one is made: Ray is an extra)."""
    factory: str


EXECUTORS: dict[str, ExecutorInfo] = {}
#: Installed packages add executors here: ``name = "pkg.module:Class"`` (a class made with ``ExecutorOptions``).
ENTRY_POINT_GROUP = "agent_studio.executors"
_plugins = threading.Lock()
_loaded = False


def register_executor(name: str, summary: str, module: str, factory: str) -> None:
    """Register an executor: ``module.factory(options)`` makes it (imported only then: Ray is an extra)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise StudioError(f"An executor's name must be an identifier, got {str(name)[:40]!r}.")
    EXECUTORS[name] = ExecutorInfo(name, summary, module, factory)


def _load_plugins() -> None:
    global _loaded
    with _plugins:
        if _loaded:
            return
        from studio.plugins import first_doc_line, load_entry_points

        def register(point: Any, target: Any) -> None:
            register_executor(point.name, first_doc_line(target, point.name), target.__module__, target.__qualname__)

        load_entry_points(ENTRY_POINT_GROUP, register)
        _loaded = True


def executor_names() -> list[str]:
    """Every registered executor's name, the built-in ones first."""
    _load_plugins()
    return list(EXECUTORS)


def check_executor(name: object) -> str:
    """``name`` if an executor is registered under it; one line otherwise."""
    names = executor_names()
    if not isinstance(name, str) or name not in names:
        raise StudioError(f"Unknown executor {str(name)[:40]!r}: use one of {', '.join(names)}.")
    return name


def make_executor(name: str, options: ExecutorOptions | None = None) -> Executor:
    """The executor ``name`` made with ``options`` (one line when it cannot start: Ray missing, no cluster)."""
    info = EXECUTORS[check_executor(name)]
    factory = getattr(importlib.import_module(info.module), info.factory)
    return factory(options or ExecutorOptions())


register_executor(
    "local", "this process: threads, a model's calls batched in lockstep", "studio.executors.local", "LocalExecutor"
)
register_executor(
    "ray",
    "a Ray cluster: each task on a worker actor, retried when a worker dies",
    "studio.executors.ray_cluster",
    "RayExecutor",
)
