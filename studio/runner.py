"""Moved to :mod:`studio.episodes.runner` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.episodes.runner")
