"""Importers by name: the built-in formats and any an installed package registers under the
``agent_studio.importers`` entry point group (like environments, backends, exports and verifiers).

An importer is an object with a ``name``, a one-line docstring (its summary in ``import --help``
and the docs) and ``read(path) -> Iterator[Episode]``: the episodes of the file or folder at
``path``, one at a time, each with :attr:`~studio.trace.Episode.source` set. It raises
:class:`~studio.errors.StudioError` in one line for what it cannot read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from studio.errors import StudioError
from studio.plugins import first_doc_line, load_entry_points
from studio.trace import Episode

ENTRY_POINT_GROUP = "agent_studio.importers"
#: The built-in importers, by the module that holds each (loaded on first use: each imports its reader).
BUILT_IN = {
    "inspect": "studio.importers.inspect_log",
    "chat": "studio.importers.chat",
    "agentlab": "studio.importers.agentlab",
    "lerobot": "studio.importers.lerobot",
}


class Importer(Protocol):
    """What the registry holds (see the module's docstring)."""

    name: str

    def read(self, path: Path) -> Iterator[Episode]: ...


_lock = threading.RLock()
# Process-wide, as the other registries: what is installed, not what a browser session chose.
_importers: dict[str, Any] = {}
_loaded = False


def register_importer(importer: Any) -> None:
    """Add ``importer`` under its name (a name already taken is refused in one line)."""
    name = getattr(importer, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or not callable(getattr(importer, "read", None)):
        raise StudioError(f"An importer needs an identifier name and a read method (got {name!r}).")
    with _lock:
        if name in _importers and _importers[name] is not importer:
            raise StudioError(f"An importer named {name!r} is already registered.")
        _importers[name] = importer


def _load() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        import importlib

        for name, module in BUILT_IN.items():
            register_importer(importlib.import_module(module).IMPORTER)

        def register(point: Any, loaded: Any) -> None:
            importer = loaded() if isinstance(loaded, type) else loaded
            if getattr(importer, "name", None) != point.name:
                raise StudioError(
                    f"entry point {point.name!r} names an importer called {getattr(importer, 'name', None)!r}"
                )
            register_importer(importer)

        load_entry_points(ENTRY_POINT_GROUP, register)
        _loaded = True


def importer_names() -> list[str]:
    """Every registered importer's name, built-ins first."""
    _load()
    return list(_importers)


def get_importer(name: str) -> Any:
    """The importer called ``name``; one line naming the others if there is none."""
    _load()
    try:
        return _importers[name]
    except KeyError:
        raise StudioError(f"No importer {str(name)[:40]!r}: pick one of {', '.join(_importers)}.") from None


def importer_summaries() -> dict[str, str]:
    """Each importer's name and its one-line summary."""
    _load()
    return {name: first_doc_line(type(importer), name) for name, importer in _importers.items()}


def read_episodes(name: str, path: str | Path) -> Iterator[Episode]:
    """The episodes at ``path`` read by the importer ``name`` (checked to exist first)."""
    importer = get_importer(name)
    where = Path(path)
    if not where.exists():
        raise StudioError(f"Nothing to import at {str(path)[:200]}: no such file or folder.")
    return importer.read(where)


def check_continuable(episode: Episode) -> None:
    """One line when ``episode`` was recorded elsewhere and cannot be continued here: it has no
    environment snapshots to fork from (before a policy or a model is asked for)."""
    if episode.source is not None and not any(step.state is not None for step in episode.steps):
        raise StudioError(
            f"This episode was recorded elsewhere ({str(episode.source.get('format'))[:40]}) with no environment "
            "snapshots: it cannot be forked or continued here. Score, tag, judge, label and export it instead."
        )
