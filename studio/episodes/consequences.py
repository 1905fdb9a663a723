"""What each action would lead to: the environment forked at a step, each action applied to its own fork.

:func:`consequences` answers "and then?" for two (or more) outputs of one step: the next observation, the
frame of the state each action leads to, its reward, whether it was valid and whether the episode ended.
The forks are the runner's (exact snapshots, or replay where the environment replays); nothing is stored.
An environment that cannot fork is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Episode

#: The most actions one call forks for (a step pair has two; a step's K candidates a few more).
MAX_ACTIONS = 16


@dataclass(frozen=True)
class Consequence:
    """What one action does from a step's state."""

    action: str
    valid: bool
    invalid_reason: str | None
    reward: float
    done: bool
    success: bool | None
    observation: str
    """The next observation (what the agent would see after the action)."""
    frame: Any
    """The frame of the state the action leads to (None where the environment draws none)."""


def consequences(episode: Episode, step_index: int, actions: list[str]) -> list[Consequence]:
    """Each of ``actions`` taken from the state step ``step_index`` of ``episode`` acted in, each on its own fork."""
    from studio.agents.scripted import make_policy

    if not actions or len(actions) > MAX_ACTIONS:
        raise StudioError(f"Give from 1 to {MAX_ACTIONS} actions to follow.")
    found = []
    for action in actions:
        runner = EpisodeRunner(
            episode.env,
            make_policy("random"),  # never asked: every step below is given its action
            env_options=dict(episode.env_options),
            config=RunnerConfig(record_frames=False),
        )
        fork = runner.fork(episode, step_index, share_history=True)
        step = runner.step(action=str(action))
        found.append(
            Consequence(
                action=str(action),
                valid=bool(step.valid),
                invalid_reason=step.invalid_reason,
                reward=float(step.reward),
                done=bool(fork.done),
                success=fork.success,
                observation=step.next_observation,
                frame=runner.env.render(),
            )
        )
        runner.env.close()
    return found
