"""Making steering vectors from what the agent did, read at the decision point of each step (the
residual stream at the last prompt token, every layer; :mod:`studio.internals.activations`).

- **contrastive**: the mean of one set minus the mean of another (ActAdd / repeng style): steps of
  successful episodes against failed ones, or one prompt against another.
- **east** (Entropic Activation Steering, Rahn, D'Oro & Bellemare 2024): an entropy-weighted
  combination of the representations over a set of steps. Here, per layer,
  ``u = sum_i w_i (h_i - mean_j h_j)`` with ``w_i = H_i / sum_j H_j``, ``H_i`` the entropy of the
  step's distribution over its valid actions (score mode records it): the direction in which
  high-entropy (uncertain) decisions differ from the average one. Adding it raises the action
  entropy; subtracting it lowers it.

The representations are read without steering (the model's own), whatever steered the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.importers.transcript import prompts_of
from studio.internals.activations import ActivationCache, step_activations
from studio.internals.vectors import SteeringVector, check_name
from studio.models.base import Backend
from studio.trace import Episode, Step

#: Steps read at most to make one vector.
MAX_STEPS = 5_000
Progress = Callable[[int, int], None]


def action_entropy(step: Step) -> float | None:
    """Entropy (nats) of the step's distribution over its valid actions (None when not recorded)."""
    logprobs = step.action_logprobs
    if not logprobs or len(logprobs) < 2:
        return None
    values = np.array([v for v in logprobs.values() if math.isfinite(v)], dtype=np.float64)
    if values.size < 2:
        return None
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    return float(-(probs * np.log(np.clip(probs, 1e-300, None))).sum())


def decision_points(
    backend: Backend,
    episodes: list[Episode],
    keep: Callable[[Episode, Step], bool] = lambda _e, _s: True,
    cache: ActivationCache | None = None,
    progress: Progress | None = None,
) -> list[tuple[Episode, Step, np.ndarray]]:
    """(episode, step, (layers, hidden) residual at the last prompt token) for every kept step with a prompt."""
    chosen: list[tuple[Episode, Step, Any]] = []
    for episode in episodes:
        prompts = prompts_of(episode)
        chosen += [
            (episode, step, prompts[step.index])
            for step in episode.steps
            if prompts[step.index] and keep(episode, step)
        ]
    if len(chosen) > MAX_STEPS:
        raise StudioError(
            f"That is {len(chosen)} steps; a vector is made from at most {MAX_STEPS}: choose fewer episodes."
        )
    read = []
    for done, (episode, step, prompt) in enumerate(chosen, start=1):
        read.append((episode, step, step_activations(backend, episode, step, cache=cache, prompt=prompt).last))
        if progress is not None:
            progress(done, len(chosen))
    return read


def contrastive_directions(positive: list[np.ndarray], negative: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Per layer, mean(positive) - mean(negative) of (layers, hidden) representations."""
    if not positive or not negative:
        raise StudioError("A contrastive vector needs steps (or prompts) on both sides.")
    difference = np.mean(np.stack(positive).astype(np.float64), axis=0) - np.mean(
        np.stack(negative).astype(np.float64), axis=0
    )
    return {layer: difference[layer].astype(np.float32) for layer in range(difference.shape[0])}


def east_directions(representations: list[np.ndarray], entropies: list[float]) -> dict[int, np.ndarray]:
    """Per layer, ``sum_i w_i (h_i - mean h)`` with ``w_i = H_i / sum H`` (see the module's note)."""
    if len(representations) < 2 or len(representations) != len(entropies):
        raise StudioError("EAST needs at least two steps with a distribution over their valid actions.")
    weights = np.asarray(entropies, dtype=np.float64)
    if not np.isfinite(weights).all() or weights.sum() <= 0:
        raise StudioError("EAST needs steps whose action distributions have some entropy (all were certain).")
    stacked = np.stack(representations).astype(np.float64)  # (steps, layers, hidden)
    centred = stacked - stacked.mean(axis=0, keepdims=True)
    direction = np.tensordot(weights / weights.sum(), centred, axes=(0, 0))
    return {layer: direction[layer].astype(np.float32) for layer in range(direction.shape[0])}


def _vector(
    name: str, backend: Backend, directions: dict[int, np.ndarray], method: str, made_from: dict[str, Any]
) -> SteeringVector:
    return SteeringVector(
        name=check_name(name),
        directions=directions,
        method=method,
        model=backend.card.id,
        layer=len(directions) // 2,  # the middle of the network: where steering usually takes
        made_from=made_from,
    )


def _refs(points: list[tuple[Episode, Step, np.ndarray]]) -> list[str]:
    return [f"{episode.id}:{step.index}" for episode, step, _ in points][:200]


def make_east(
    name: str,
    backend: Backend,
    episodes: list[Episode],
    cache: ActivationCache | None = None,
    progress: Progress | None = None,
) -> SteeringVector:
    """An EAST vector from the steps of ``episodes`` that recorded a distribution over valid actions."""
    points = decision_points(backend, episodes, lambda _e, s: action_entropy(s) is not None, cache, progress)
    if len(points) < 2:
        raise StudioError(
            "EAST needs steps with a distribution over valid actions: run episodes in score mode (--action-mode score)."
        )
    entropies = [action_entropy(step) or 0.0 for _e, step, _h in points]
    directions = east_directions([h for *_rest, h in points], entropies)
    made_from = {
        "steps": len(points),
        "episodes": sorted({e.id for e, _s, _h in points})[:200],
        "mean_entropy": float(np.mean(entropies)),
        "position": "last prompt token",
        "weights": "action entropy (nats), normalised",
        "refs": _refs(points),
    }
    return _vector(name, backend, directions, "east", made_from)


def make_contrastive(
    name: str,
    backend: Backend,
    positive: list[Episode],
    negative: list[Episode],
    cache: ActivationCache | None = None,
    progress: Progress | None = None,
    labels: tuple[str, str] = ("positive", "negative"),
) -> SteeringVector:
    """mean(steps of ``positive``) - mean(steps of ``negative``)."""
    ours = decision_points(backend, positive, cache=cache, progress=progress)
    theirs = decision_points(backend, negative, cache=cache, progress=progress)
    directions = contrastive_directions([h for *_r, h in ours], [h for *_r, h in theirs])
    made_from = {
        labels[0]: {"steps": len(ours), "episodes": sorted({e.id for e, _s, _h in ours})[:200]},
        labels[1]: {"steps": len(theirs), "episodes": sorted({e.id for e, _s, _h in theirs})[:200]},
        "position": "last prompt token",
    }
    return _vector(name, backend, directions, "contrastive", made_from)


def make_from_prompts(name: str, backend: Backend, positive: list[str], negative: list[str]) -> SteeringVector:
    """mean over ``positive`` prompts - mean over ``negative`` (each a user turn), at the last prompt token."""
    internals = backend.internals()

    def read(texts: list[str]) -> list[np.ndarray]:
        return [internals.residuals([{"role": "user", "content": t}]).layers[:, 0, :] for t in texts]

    directions = contrastive_directions(read(positive), read(negative))
    made_from = {"positive_prompts": positive[:50], "negative_prompts": negative[:50], "position": "last prompt token"}
    return _vector(name, backend, directions, "contrastive", made_from)
