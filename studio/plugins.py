"""Installed packages extend the studio through entry points: one loader for every registry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
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


class RegisteredNames(Sequence[str]):
    """A registry's names, read each time they are asked for (a setting's or a flag's choices): building
    a parser or the settings schema loads no plugin, and a name registered later is offered."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __len__(self) -> int:
        return len(self._names())

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __repr__(self) -> str:
        return f"RegisteredNames({self._names()!r})"
