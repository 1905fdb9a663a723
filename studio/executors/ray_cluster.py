"""The ``ray`` executor: each task runs on a worker actor of a Ray cluster; results stream back here.

Choices, and why:

- **Results stream back to the driver**, which alone writes the store: a worker killed mid-task has
  written nothing, Ray restarts the actor and runs the task again (``max_task_retries``), and the
  driver stores each episode once, whole, in one transaction. Nothing is lost, nothing duplicated, and
  the store can be whatever the driver reaches (SQLite too; PostgreSQL when several drivers share one).
- **Actors, not plain tasks**: a worker keeps its models (and a browser environment its browser) loaded
  across the tasks it runs. Each actor declares what it needs (CPUs, memory, GPUs), so the cluster
  places no more workers on a node than fit.
- **Named tasks with JSON payloads** (:mod:`studio.executors.tasks`): what the driver sends is data.
- **Stop** cancels running tasks (nothing of theirs was stored: a resume runs them again) and starts no
  new one; results that arrived before are stored.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from studio.errors import StudioError
from studio.executors.registry import ExecutorOptions, TaskListener
from studio.executors.tasks import WorkerContext, run_task, where

#: Restarts of a worker that dies (its running task is retried on the restarted one), and retries per task.
RESTARTS, TASK_RETRIES = 3, 3
#: Seconds between looks at Stop while waiting for results; seconds a cluster's head has to answer.
POLL_SECONDS, CONNECT_SECONDS = 0.2, 5.0


class TaskWorker:
    """One worker (a Ray actor): runs named tasks, keeping its models loaded between them."""

    def __init__(self, load: dict[str, Any]) -> None:
        self.context = WorkerContext(load)

    def run(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``{"result": ..., "worker": ...}`` or ``{"error": one line, "worker": ...}``."""
        try:
            return {"result": run_task(kind, payload, self.context), "worker": where()}
        except StudioError as exc:
            return {"error": str(exc), "worker": where()}
        except Exception as exc:  # noqa: BLE001 - a bug on a worker: the driver shows it with the cell
            return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "worker": where()}

    def pid(self) -> int:
        return os.getpid()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StudioError(
            "The ray executor needs Ray: pip install 'agent-studio[cluster]' (on the driver and every node)."
        ) from None
    return ray


def _reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address answers a TCP connection within seconds: Ray itself
    waits minutes for a head that is not there."""
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise StudioError(f"A Ray address is auto, local, HOST:PORT or ray://HOST:PORT, got {address[:100]!r}.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise StudioError(
            f"Cannot reach a Ray cluster at {address[:100]}: {exc.strerror or exc} (start one with `ray start --head`)."
        ) from None


def connect(address: str) -> Any:
    """Ray, connected to the cluster at ``address``; one line when there is none. A process already
    connected stays on its cluster (``auto``, or the same address)."""
    # Ray's driver otherwise swaps builtins.print for its progress bars' (once workers log): a studio
    # process keeps its own print (pickling and plugins look print up by name).
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    ray = _ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in ("auto", "local", current) and not current.endswith(":" + address.rpartition(":")[2]):
            raise StudioError(f"This process is connected to the Ray cluster at {current}, not {address[:100]}.")
        return ray
    if address not in ("auto", "local"):
        _reachable(address)
    target = None if address == "local" else address
    try:
        ray.init(address=target, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StudioError(
            f"Cannot reach a Ray cluster at {address[:100]!r}: {' '.join(str(exc).split())[:200]} "
            "(start one with `ray start --head`, or give --ray-address HOST:PORT)."
        ) from None
    return ray


class RayExecutor:
    """Named tasks on ``options.workers`` actors of a Ray cluster."""

    name = "ray"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.ray = connect(options.address)
        self._actors: list[Any] = []

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = self.ray.cluster_resources().get("CPU", 0)
        node_word = "node" if len(nodes) == 1 else "nodes"
        worker_word = "worker" if self.options.workers == 1 else "workers"
        return f"Ray cluster ({len(nodes)} {node_word}, {cpus:g} CPUs), {self.options.workers} {worker_word}"

    def _worker_class(self) -> Any:
        options: dict[str, Any] = {
            "num_cpus": self.options.cpus_per_worker,
            "num_gpus": self.options.gpus_per_worker,
            "max_restarts": RESTARTS,
            "max_task_retries": TASK_RETRIES,
        }
        if self.options.memory_gb:
            options["memory"] = int(self.options.memory_gb * 2**30)
        return self.ray.remote(**options)(TaskWorker)

    def workers(self) -> list[Any]:
        """The actors (made on first use and kept for the next run of this executor)."""
        if not self._actors:
            cls = self._worker_class()
            self._actors = [cls.remote(dict(self.options.load)) for _ in range(self.options.workers)]
        return self._actors

    def run_tasks(
        self, kind: str, payloads: list[dict[str, Any]], *, stop: threading.Event, on_done: TaskListener
    ) -> None:
        ray = self.ray
        idle = list(self.workers())
        queue = list(enumerate(payloads))[::-1]  # popped from the end: first task first
        running: dict[Any, tuple[int, Any]] = {}
        cancelled: set[Any] = set()
        while queue or running:
            while queue and idle and not stop.is_set():
                index, payload = queue.pop()
                actor = idle.pop()
                running[actor.run.remote(kind, payload)] = (index, actor)
            if stop.is_set():
                queue.clear()
                for ref in set(running) - cancelled:
                    ray.cancel(ref)
                    cancelled.add(ref)
            if queue and not idle and not running:  # every worker died past its restarts
                for index, _payload in reversed(queue):
                    on_done(index, StudioError("no worker is left: each died more often than Ray restarts it"))
                return
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                index, actor = running.pop(ref)
                outcome, alive = self._outcome(ref)
                if alive:
                    idle.append(actor)
                if outcome is not None:
                    on_done(index, outcome)

    def _outcome(self, ref: Any) -> tuple[dict[str, Any] | StudioError | None, bool]:
        """A finished task's result, its one-line error, or None when it was cancelled (Stop); and whether
        its worker can take another task (not when it died more often than it is restarted)."""
        ray = self.ray
        try:
            answer = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return None, True
        except ray.exceptions.RayActorError as exc:
            return StudioError(f"the worker died ({' '.join(str(exc).split())[:160]})"), False
        except ray.exceptions.RayError as exc:
            return StudioError(f"Ray failed the task: {' '.join(str(exc).split())[:200]}"), True
        if not isinstance(answer, dict):
            return StudioError("a worker answered something that is not a task's result"), True
        if "error" in answer:
            return StudioError(f"{answer['error']} (on {answer.get('worker', 'a worker')})"), True
        result = answer.get("result")
        return (result if isinstance(result, dict) else StudioError("a worker answered without a result")), True

    def close(self) -> None:
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
