"""Moved to :mod:`studio.scaling.judge` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.scaling.judge")
