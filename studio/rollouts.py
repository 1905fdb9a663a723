"""Moved to :mod:`studio.episodes.rollouts` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.episodes.rollouts")
