"""Where a sweep's cells and Monte Carlo values' steps run: this process (``local``, the default: threads,
one batched model call per token) or a Ray cluster (``ray``): every executor is one file that registers
itself in :mod:`studio.executors.registry`.

The work an executor hands a worker is one of the named tasks of :mod:`studio.executors.tasks` with a
JSON payload (never code a caller chose); what comes back is JSON too, checked here before it is stored.
"""

from studio.executors.registry import (
    EXECUTORS,
    Executor,
    ExecutorOptions,
    executor_names,
    make_executor,
    register_executor,
)

__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "executor_names", "make_executor", "register_executor"]
