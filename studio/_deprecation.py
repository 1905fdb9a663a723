"""Old import paths that keep working for one release (inspect_ai's ``_util/deprecation.py`` habit).

A module that moved leaves a two-line file at its old path calling :func:`moved`: importing the
old name warns once (``DeprecationWarning``) and gives the new module itself, so its attributes,
private ones included, and anything patched on it are the same objects under both names.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def moved(old: str, new: str, since: str = "0.2") -> None:
    """Make ``import old`` give module ``new`` (with a deprecation warning naming it)."""
    warnings.warn(
        f"{old} moved to {new} in agent-studio {since}; the old name goes in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old] = importlib.import_module(new)
