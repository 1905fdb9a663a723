"""Moved to :mod:`studio.evaluation.compare` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.evaluation.compare")
