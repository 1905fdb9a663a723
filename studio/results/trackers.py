"""Experiment trackers: where a sweep's or a campaign's results are logged besides the studio.

A tracker is a function ``log(results: TrackedResults) -> str`` (it returns where the run was written)
registered by name: ``mlflow`` (a local file store), ``wandb`` (offline mode, a local run folder) and
``trackio`` (its local SQLite store) are built in, each in its own module and each optional (its
package is imported only when used, and a missing one is one line). Other packages add trackers
through the entry-point group ``agent_studio.trackers``.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.plugins import load_entry_points

GROUP = "agent_studio.trackers"
#: Built-in trackers: name -> the module holding its ``log``.
BUILTIN = {
    "mlflow": "studio.results.mlflow_tracker",
    "wandb": "studio.results.wandb_tracker",
    "trackio": "studio.results.trackio_tracker",
}
_TRACKERS: dict[str, Callable[[TrackedResults], str]] = {}
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass
class TrackedResults:
    """One run's worth of results for a tracker."""

    project: str
    """The tracker's project or experiment (``agent-studio`` unless given)."""
    run_name: str
    """The sweep's or campaign's name."""
    config: dict[str, Any] = field(default_factory=dict)
    """What was run (a sweep's spec, a campaign's settings): flat text and numbers."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Summary numbers, e.g. ``success_rate/default/gridworld``."""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Named tables (rows of the same keys): per-episode rows carry a ``link`` back to the studio."""
    where: str | None = None
    """The tracker's local folder (None: its default)."""


def register_tracker(name: str, log: Callable[[TrackedResults], str], replace: bool = False) -> None:
    """Make ``--tracker NAME`` log through ``log``."""
    if name in _TRACKERS and not replace:
        raise StudioError(f"A tracker named {name!r} is registered already.")
    _TRACKERS[name] = log


def tracker_names() -> list[str]:
    _load_plugins()
    return sorted({*BUILTIN, *_TRACKERS})


def _load_plugins() -> None:
    load_entry_points(GROUP, lambda point, target: _TRACKERS.setdefault(point.name, target))


def log_results(tracker: str, results: TrackedResults) -> str:
    """Log ``results`` with ``tracker``; returns where they went. One line when the tracker is unknown,
    its package is not installed, or it fails."""
    if not RUN_NAME.match(results.run_name or "") or not RUN_NAME.match(results.project or ""):
        raise StudioError("A tracker's project and run names are 1 to 128 letters, digits, '.', '_', ':' or '-'.")
    _load_plugins()
    log = _TRACKERS.get(tracker)
    if log is None and tracker in BUILTIN:
        log = importlib.import_module(BUILTIN[tracker]).log
    if log is None:
        raise StudioError(f"Unknown tracker {str(tracker)[:40]!r}: use one of {', '.join(tracker_names())}.")
    try:
        # Trackers talk on stdout; the command's own answer there is one line of JSON.
        with contextlib.redirect_stdout(sys.stderr):
            return log(results)
    except StudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - a tracker's own failure (its store, its server): one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise StudioError(f"The {tracker} tracker failed: {first}") from None


def needs(package: str, tracker: str) -> Any:
    """Import a tracker's package, or say in one line how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise StudioError(f"The {tracker} tracker needs its package: pip install {package}") from None


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b`` keys with text, number or boolean values (what every tracker takes)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, name + "."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            flat[name] = "" if value is None else value
        else:
            flat[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return {k: v[:500] if isinstance(v, str) else v for k, v in flat.items()}
