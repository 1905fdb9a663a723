"""The same step with and without steering: step ``at`` of an episode taken again from its snapshot by
ReAct on one model, once unsteered and once steered, with the same settings and sampling seed, so the
two outputs (and, in score mode, the two action distributions) differ only by the vector."""

from __future__ import annotations

from studio.agents.react import ReActConfig, ReActPolicy
from studio.episodes.runner import EpisodeRunner
from studio.models.base import Backend
from studio.models.steered import SteeredBackend, steering_of
from studio.models.steering import Steering
from studio.trace import Episode, Step


def with_and_without(
    episode: Episode, at: int, backend: Backend, steering: Steering, config: ReActConfig
) -> tuple[Step, Step]:
    """(unsteered, steered) step ``at`` taken again from its snapshot (nothing is stored)."""
    plain = backend.inner if isinstance(backend, SteeredBackend) else backend
    if steering_of(plain) is not None:  # never steer twice
        plain = plain.inner
    steps = []
    for acting in (plain, SteeredBackend(plain, steering)):
        runner = EpisodeRunner(episode.env, ReActPolicy(acting, config), env_options=dict(episode.env_options))
        runner.fork(episode, at, share_history=True)  # only read: the fork is never stored
        steps.append(runner.step())
    return steps[0], steps[1]
