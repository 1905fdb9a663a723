"""Policies that need no model: the expert (the environment's oracle), random, and human."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from studio.agents.base import Decision, Observation, StopCheck, never_stop
from studio.envs.base import StudioEnv
from studio.errors import StudioError
from studio.trace import Episode


class _EnvBound:
    """Shared by policies that read the environment they act in."""

    name = ""

    def __init__(self) -> None:
        self.env: StudioEnv | None = None

    def _bound(self) -> StudioEnv:
        if self.env is None:
            raise StudioError(f"The {self.name} policy has not been reset on an environment.")
        return self.env

    def describe(self) -> dict[str, Any]:
        return {}


class ExpertPolicy(_EnvBound):
    """Asks the environment's oracle for the next action (solves every built-in seed)."""

    name = "expert"

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        if not env.provides_expert():
            raise StudioError(f"{env.name} has no expert policy; use the random or human policy.")
        self.env = env

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        action = self._bound().expert_action()
        return Decision(action=action, raw=action)


class RandomPolicy(_EnvBound):
    """A uniformly random allowed action; seeded from the episode seed for reproducibility."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        self.env = env
        self.rng = np.random.default_rng([self.seed, seed if seed is not None else 0])

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        action = self._bound().sample_action(self.rng)
        return Decision(action=action, raw=action)


class WaitingForHuman(StudioError):
    """The human policy was asked to act before an action was given."""


class HumanPolicy:
    """Actions typed or picked by a person; the caller queues them with :meth:`submit`."""

    name = "human"

    def __init__(self) -> None:
        self.pending: deque[str] = deque()

    def describe(self) -> dict[str, Any]:
        return {}

    def submit(self, action: str) -> None:
        """Queue the next action (the UI calls this; the runner's ``step(action=...)`` does too)."""
        self.pending.append(action)

    def reset(self, env: StudioEnv, seed: int | None) -> None:
        self.pending.clear()

    def act(self, episode: Episode, observation: Observation, should_stop: StopCheck = never_stop) -> Decision:
        if not self.pending:
            raise WaitingForHuman("Waiting for your action: type one or pick one of the valid actions.")
        action = self.pending.popleft()
        return Decision(action=action, raw=action)


#: Policies that need no model, by name.
SCRIPTED_POLICIES = {"expert": ExpertPolicy, "random": RandomPolicy, "human": HumanPolicy}


def make_policy(name: str, **config: Any) -> Any:
    """Make a scripted policy by name; raise StudioError for an unknown name."""
    cls = SCRIPTED_POLICIES.get(name)
    if cls is None:
        raise StudioError(f"Unknown policy '{name}'. Known: {', '.join(SCRIPTED_POLICIES)}.")
    return cls(**config)
