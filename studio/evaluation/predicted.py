"""A policy's predicted actions against the recorded ones, for episodes of continuous actions (a
LeRobot dataset's ``action`` vectors, stored per step as ``extra["action_vector"]``).

A predictor is any callable ``predict(step, episode) -> vector or chunk``: a model over the frame and
state, or a baseline. It may return one action (D numbers) or a chunk of the next K actions (K x D,
as ACT and diffusion policies do); the first action of each chunk is compared with the recorded
action of its step, and the whole chunk is kept to draw its "worm" against the recording. Two
baselines are built in: ``hold`` (the previous recorded action) and ``linear`` (extrapolated from
the previous two).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.trace import Episode, Step

Predictor = Callable[[Step, Episode], Any]


@dataclass
class Prediction:
    """Recorded and predicted actions of one episode, step by step."""

    recorded: np.ndarray
    """T x D: the recorded action of each step."""
    predicted: np.ndarray
    """T x D: the first predicted action of each step."""
    chunks: list[np.ndarray]
    """Per step, the K x D chunk predicted there (K = 1 for single actions)."""
    names: list[str]

    @property
    def error(self) -> np.ndarray:
        """Per step: the Euclidean distance between predicted and recorded action."""
        return np.linalg.norm(self.predicted - self.recorded, axis=1)

    @property
    def mean_abs_error(self) -> np.ndarray:
        """Per dimension: the mean absolute error over the episode."""
        return np.abs(self.predicted - self.recorded).mean(axis=0)


def recorded_actions(episode: Episode) -> np.ndarray:
    """T x D recorded action vectors (one line when the episode has none)."""
    vectors = [step.extra.get("action_vector") for step in episode.steps]
    if not vectors or any(v is None for v in vectors):
        raise StudioError(f"Episode {episode.id} has no recorded action vectors (import a LeRobot dataset).")
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2:
        raise StudioError("The recorded actions are not vectors of one length.")
    return array


def hold(step: Step, episode: Episode) -> Any:
    """The previous recorded action (the first step: its own)."""
    return episode.steps[max(0, step.index - 1)].extra["action_vector"]


def linear(step: Step, episode: Episode) -> Any:
    """Extrapolated from the previous two recorded actions."""
    if step.index < 2:
        return hold(step, episode)
    a = np.asarray(episode.steps[step.index - 1].extra["action_vector"], dtype=np.float64)
    b = np.asarray(episode.steps[step.index - 2].extra["action_vector"], dtype=np.float64)
    return 2 * a - b


BASELINES: dict[str, Predictor] = {"hold": hold, "linear": linear}


def predict_actions(episode: Episode, predict: Predictor) -> Prediction:
    """Run ``predict`` at every step of ``episode`` and set its answers beside the recording."""
    recorded = recorded_actions(episode)
    width = recorded.shape[1]
    chunks = []
    for step in episode.steps:
        answer = np.asarray(predict(step, episode), dtype=np.float64)
        chunk = answer.reshape(1, -1) if answer.ndim == 1 else answer
        if chunk.ndim != 2 or chunk.shape[1] != width or not len(chunk):
            raise StudioError(
                f"The predictor answered step {step.index} with shape {answer.shape}: expected ({width},) or (K, {width})."
            )
        if not np.isfinite(chunk).all():
            raise StudioError(f"The predictor answered step {step.index} with a number that is not finite.")
        chunks.append(chunk)
    predicted = np.stack([chunk[0] for chunk in chunks])
    names = list((episode.env_options or {}).get("action_names") or [f"action {n}" for n in range(width)])
    if len(names) != width:
        names = [f"action {n}" for n in range(width)]
    return Prediction(recorded, predicted, chunks, [str(n) for n in names])
