"""Installed packages extend the studio through entry points: one loader for every registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger(__name__)


def first_doc_line(target: Any, default: str = "") -> str:
    """The first line of ``target``'s docstring (a registry's one-line summary), else ``default``."""
    lines = (getattr(target, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else default


def load_entry_points(group: str, register: Callable[[EntryPoint, Any], None]) -> None:
    """Call ``register(point, loaded object)`` for every entry point in ``group``. A package whose
    entry point fails to load or register is logged and skipped: a broken plugin must not take
    the studio down."""
    for point in entry_points(group=group):
        try:
            register(point, point.load())
        except Exception as exc:
            log.warning("%s entry point %r from %s did not register: %s", group, point.name, point.value, exc)
