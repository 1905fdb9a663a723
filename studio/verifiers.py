"""Moved to :mod:`studio.scaling.verifiers` (this name works for one release)."""

from studio._deprecation import moved

moved(__name__, "studio.scaling.verifiers")
