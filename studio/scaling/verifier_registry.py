"""Verifiers by name: the built-in ones (:mod:`studio.scaling.verifiers`) and any an installed
package registers under the ``agent_studio.verifiers`` entry point group, like environments,
backends and export formats.

A verifier is an object with a ``name``, ``needs_judge`` (True when it asks a second model) and
``scores(verified, outputs, episode, observation, should_stop)``: a score per output (higher is
better; None: not scored). ``verified`` is the :class:`~studio.scaling.verifiers.VerifiedPolicy`
asking (its environment, policy, judge and Monte Carlo settings). The first line of its docstring
is its summary in ``--help`` and the docs. ``run --verifier``, ``coverage --verifiers`` and the
Episode panel offer every registered name.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from studio.errors import StudioError
from studio.plugins import first_doc_line, load_entry_points

ENTRY_POINT_GROUP = "agent_studio.verifiers"


class Verifier(Protocol):
    """What the registry holds (see the module's docstring)."""

    name: str
    needs_judge: bool

    def scores(self, verified: Any, outputs: list[Any], episode: Any, observation: Any, should_stop: Any) -> list: ...


_lock = threading.RLock()  # held while loading: registering takes it too
# Process-wide, as the other registries: what is installed, not what a browser session chose.
_verifiers: dict[str, Verifier] = {}
_loaded = False


def register_verifier(verifier: Verifier) -> None:
    """Add ``verifier`` under its name (a name already taken is refused in one line)."""
    name = getattr(verifier, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or not callable(getattr(verifier, "scores", None)):
        raise StudioError(f"A verifier needs an identifier name and a scores method (got {name!r}).")
    with _lock:
        if name in _verifiers and _verifiers[name] is not verifier:
            raise StudioError(f"A verifier named {name!r} is already registered.")
        _verifiers[name] = verifier


def _load() -> None:
    """Register the built-ins, then installed packages' verifiers, once. The lock is held until both
    are in: a caller on another thread never sees a half-filled registry."""
    global _loaded
    with _lock:
        if _loaded:
            return
        from studio.scaling.verifiers import BUILT_IN

        for verifier in BUILT_IN:
            register_verifier(verifier)

        def register(point: Any, loaded: Any) -> None:
            verifier = loaded() if isinstance(loaded, type) else loaded
            if getattr(verifier, "name", None) != point.name:
                raise StudioError(
                    f"entry point {point.name!r} names a verifier called {getattr(verifier, 'name', None)!r}"
                )
            register_verifier(verifier)

        load_entry_points(ENTRY_POINT_GROUP, register)
        _loaded = True


def verifier_names() -> list[str]:
    """Every registered verifier's name, built-ins first, then ``model:NAME`` for each trained verifier."""
    _load()
    from studio.training.registry import trained_verifier_names  # late: trained models sit above this layer

    return [*_verifiers, *trained_verifier_names()]


def get_verifier(name: str) -> Verifier:
    """The verifier called ``name`` (``model:NAME``: a trained one, loaded when it first scores); one line
    naming the known ones if there is none."""
    _load()
    if isinstance(name, str) and name.startswith("model:"):
        from studio.training.verifier import TrainedVerifier

        return TrainedVerifier(name.removeprefix("model:"))
    verifier = _verifiers.get(name) if isinstance(name, str) else None
    if verifier is None:
        raise StudioError(f"Unknown verifier {str(name)[:40]!r}: use one of {', '.join(_verifiers)}.")
    return verifier


def describe_verifiers() -> list[dict[str, Any]]:
    """Name, summary and whether it asks a second model, for each verifier (the docs, ``--help``)."""
    _load()
    return [
        {"name": v.name, "summary": first_doc_line(type(v)), "needs_judge": bool(getattr(v, "needs_judge", False))}
        for v in _verifiers.values()
    ]
