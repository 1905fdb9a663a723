"""Plain records the store hands out for preference data (episodes and steps are the core's).

None of these is an ORM object: they are safe to keep after the session closed, to send
to a browser session, or to compare in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studio.trace import Step, TokenInfo

PAIR_KINDS = ("step", "trajectory")
PAIR_SOURCES = ("candidates", "episodes", "manual", "mc")  # mc: best vs worst Monte Carlo value at a step
CHOICES = ("left", "right", "tie", "both_bad")
#: Step labels and what they mean for process supervision (True: a good step).
STEP_LABELS: dict[str, bool | None] = {
    "good": True,
    "correct": True,
    "neutral": None,
    "bad": False,
    "redundant": False,
    "erroneous": False,
}


@dataclass(frozen=True)
class SideRef:
    """Where one side of a pair lives: an episode, or one output at one of its steps."""

    episode_id: str
    step_index: int | None = None
    """None for a whole trajectory."""
    candidate_id: str | None = None
    """None for the step's chosen output (the action actually taken)."""

    def key(self) -> str:
        if self.step_index is None:
            return self.episode_id
        return f"{self.episode_id}:{self.step_index}:{self.candidate_id or 'chosen'}"


@dataclass
class PairRecord:
    """Two things to compare. ``left``/``right`` are as stored; blind views may swap them."""

    id: str
    kind: str
    source: str
    env: str
    left: SideRef
    right: SideRef
    swapped: bool
    created_at: str
    step_index: int | None = None


@dataclass
class PairsMade:
    """What a pair-building run did."""

    created: int = 0
    already_there: int = 0
    identical: int = 0
    """Pairs skipped because both sides were the same text (or the same action, when asked)."""

    def to_dict(self) -> dict[str, int]:
        return {"created": self.created, "already_there": self.already_there, "identical": self.identical}


@dataclass
class ShownSide:
    """One side of a pair as an annotator sees it (no model or policy names)."""

    raw: str = ""
    thought: str | None = None
    action: str | None = None
    valid: bool = True
    invalid_reason: str | None = None
    tokens: list[TokenInfo] | None = None
    steps: list[Step] = field(default_factory=list)
    """Trajectory pairs: every step of this side's episode."""
    success: bool | None = None
    total_return: float | None = None
    end_reason: str | None = None


@dataclass
class QueueItem:
    """A pair ready to judge: the shared context once, then the two sides (blind by default)."""

    pair_id: str
    kind: str
    env: str
    source: str
    instruction: str
    step_index: int | None
    history: list[Step]
    """Step pairs: the steps before the judged one. Trajectory pairs: empty."""
    observation: str
    """What the agent saw when the sides diverge (the judged step, or the first step)."""
    frame: np.ndarray | None
    left: ShownSide
    right: ShownSide
    swapped: bool
    """True when the stored right side is shown on the left (the store maps choices back)."""
    context: tuple[str, int] | None = None
    """The episode and step the shared context is (not shown: the view redraws its frame when none
    was kept, :meth:`storage.episodes.EpisodeStore.step_frame`)."""
    elements: dict[str, list[int]] | None = None
    """On a screen (a web page): where the elements of the shared frame are, so each side's action is
    drawn on it (:func:`studio.viz.screen.mark_pair`)."""


@dataclass
class AnnotationRecord:
    """A judgement, with ``choice`` in terms of the stored pair (not of what was shown)."""

    pair_id: str
    annotator: str
    choice: str
    rationale: str = ""
    tags: list[str] = field(default_factory=list)
    confidence: float | None = None
    seconds: float | None = None
    created_at: str = ""
    updated_at: str = ""
    provenance: dict[str, Any] | None = None
    """How a machine annotator came to it (a judge's prompt hashes and probabilities, values' Qs)."""


@dataclass
class StepLabelRecord:
    episode_id: str
    step_index: int
    annotator: str
    label: str
    note: str = ""
    updated_at: str = ""
