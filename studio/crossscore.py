"""Moved to :mod:`studio.evaluation.crossscore` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.evaluation.crossscore")
