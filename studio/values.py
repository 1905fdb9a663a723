"""Moved to :mod:`studio.scaling.values` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.scaling.values")
