"""Moved to :mod:`studio.episodes.live` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.episodes.live")
