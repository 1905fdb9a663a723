"""The Policy protocol: given the episode so far and the current observation, decide.

Scripted policies (expert, random, human) and model-driven ones (ReAct over any backend)
implement the same two calls: ``reset(env, seed)`` when an episode starts or is
forked (the policy may read the environment, e.g. the expert asks its oracle), and
``act(episode, observation)`` once per step. ``act`` never raises for a bad model output:
an unparseable answer is a Decision with ``parse_error`` set, which the runner records as
an invalid step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from studio.envs.base import StudioEnv
from studio.trace import Candidate, Episode, TokenInfo


@dataclass
class Observation:
    """What a policy sees at a step."""

    text: str
    """Text observation from the environment."""
    instruction: str
    """The task instruction."""
    valid_actions: list[str] | None
    """Allowed actions now, or None when the action set is not finite."""
    step_index: int
    """Index the step being decided will have."""
    frame: np.ndarray | None = None
    """RGB frame of the observation, for image-text models (when frames are recorded)."""


@dataclass
class Decision:
    """A policy's output for one step."""

    action: str | None
    """The action to send; None when none could be parsed (then ``parse_error`` says why)."""
    raw: str = ""
    """The raw text produced (a scripted policy's raw text is the action)."""
    thought: str | None = None
    parse_error: str | None = None
    """Why no action could be parsed from ``raw`` (one sentence), else None."""
    prompt: list[dict[str, Any]] | None = None
    tokens: list[TokenInfo] | None = None
    action_logprobs: dict[str, float] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    """The policy was stopped before it finished deciding: the runner drops this decision
    (an unfinished output is not a step) and leaves the environment as it was."""


StopCheck = Callable[[], bool]


def never_stop() -> bool:
    """The default stop check: never interrupt."""
    return False


@runtime_checkable
class Policy(Protocol):
    """Anything that can drive an episode."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Settings worth recording on the episode (JSON-serialisable)."""
        ...

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        """Prepare for an episode in ``env`` (called on reset and on fork)."""
        ...

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        """Decide the next step. Long-running policies poll ``should_stop`` and return early."""
        ...
