"""Steering as a backend sees it: which vector, at which layers, how strongly, at which positions.

A :class:`Steering` travels with each model call: the caller sets it for a block of code
(:func:`steered`), and every :class:`~studio.models.base.GenerateCall` and
:class:`~studio.models.base.ScoreCall` made in that block carries it, so a call that is decoded
later by a batch on another thread (lockstep rollouts, sweeps) is steered as its caller asked.
A backend that cannot steer refuses a steered call in one line; the transformers backend adds
``alpha * vector[layer]`` to the residual stream after each chosen decoder layer
(:mod:`studio.models.hf_steering`).

Torch-free: vectors are NumPy arrays here. Making, saving and loading vectors is
:mod:`studio.internals.vectors`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Where a vector is added: the prompt's tokens, the tokens after it (generated or scored), or both.
POSITIONS = ("all", "prompt", "generated")


@dataclass(frozen=True)
class Steering:
    """One steering intervention: ``alpha * vectors[layer]`` added after each layer in ``layers``."""

    name: str
    """The vector's name in the library."""
    sha256: str
    """The vector file's content hash (what the step records: a renamed file is the same vector)."""
    layers: tuple[int, ...]
    """Decoder layers (0-based) after which the vector is added."""
    alpha: float
    positions: str = "all"
    vectors: Mapping[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """Layer -> float32 vector of the model's hidden size."""

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        missing = [layer for layer in self.layers if layer not in self.vectors]
        if missing:
            raise ValueError(f"vector {self.name!r} has no direction for layer {missing[0]}")

    @property
    def key(self) -> str:
        """What makes two steerings compute the same keys and values (a prompt cache is only reused
        under the same key)."""
        return f"{self.sha256}|{','.join(map(str, self.layers))}|{self.alpha!r}|{self.positions}"

    def applies_to(self, phase: str) -> bool:
        """Whether tokens of ``phase`` (``prompt`` or ``generated``) are steered."""
        return self.positions == "all" or self.positions == phase

    def record(self) -> dict[str, Any]:
        """What a steered step records (trace, reports, exports)."""
        return {
            "vector": self.name,
            "sha256": self.sha256,
            "layers": list(self.layers),
            "alpha": self.alpha,
            "positions": self.positions,
        }


def steering_key(steering: Steering | None) -> str:
    """``steering.key``, or ``""`` for an unsteered call."""
    return steering.key if steering is not None else ""


_CURRENT: contextvars.ContextVar[Steering | None] = contextvars.ContextVar("steering", default=None)


def current_steering() -> Steering | None:
    """The steering of the block this thread is in (None: unsteered)."""
    return _CURRENT.get()


@contextlib.contextmanager
def steered(steering: Steering | None) -> Iterator[None]:
    """Within the block, this thread's model calls carry ``steering`` (None: unsteered)."""
    token = _CURRENT.set(steering)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class DecisionRecorder:
    """Keeps the residual stream at the decision point of one step: every decoder block's output at
    the last prompt token, read by the first prompt encoding of the step (no extra forward)."""

    def __init__(self) -> None:
        self.layers: np.ndarray | None = None
        """(layers, hidden) float32 once read."""


_RECORDER: contextvars.ContextVar[DecisionRecorder | None] = contextvars.ContextVar("recorder", default=None)


def current_recorder() -> DecisionRecorder | None:
    """The recorder of the step this thread is deciding (None: nothing is recorded)."""
    return _RECORDER.get()


@contextlib.contextmanager
def recording(recorder: DecisionRecorder | None) -> Iterator[None]:
    """Within the block, the first prompt this thread encodes leaves its last token's residuals in ``recorder``."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)
