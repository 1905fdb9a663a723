"""The logit lens of a step: at which layer does the chosen action become the model's choice?

Each block's output at the positions that write the action is read through the final norm and the
unembedding (:meth:`studio.models.hf_internals.Internals.lens`): per layer, the log-probability of
each candidate action after the step's thought. The candidates are the valid actions a score-mode
step ranked (its ``action_logprobs``), else those its snapshot says were valid, else the action the
step took alone. At the last layer the
lens is the model's own distribution.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.importers.transcript import prompts_of
from studio.models.base import Backend
from studio.models.steering import Steering
from studio.trace import Episode, Step

ACTION_MARKER = "Action:"
#: Candidate actions read at most (each is one forward).
MAX_ACTIONS = 32


@dataclass
class LensView:
    """Per layer, each candidate action's log-probability (normalised over the candidates when several)."""

    step_index: int
    actions: list[str]
    logprobs: np.ndarray
    """(layers, actions)."""
    chosen: str | None
    leads_from: int | None
    """The first layer from which the last layer's choice stays the most likely (None for one candidate)."""

    @property
    def layers(self) -> int:
        return int(self.logprobs.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_index,
            "actions": self.actions,
            "chosen": self.chosen,
            "leads_from": self.leads_from,
            "logprobs": [[round(float(v), 6) for v in row] for row in self.logprobs],
        }


def _normalised(table: np.ndarray) -> np.ndarray:
    if table.shape[1] < 2:
        return table
    top = table.max(axis=1, keepdims=True)
    return table - (top + np.log(np.exp(table - top).sum(axis=1, keepdims=True)))


def leads_from(table: np.ndarray) -> int | None:
    """The first layer from which the last row's argmax is every later row's argmax."""
    if table.shape[1] < 2:
        return None
    final = int(table[-1].argmax())
    first = table.shape[0] - 1
    while first > 0 and int(table[first - 1].argmax()) == final:
        first -= 1
    return first


def valid_actions(episode: Episode, step: Step) -> list[str]:
    """The actions valid at ``step``, from its snapshot restored in its environment (empty without
    a snapshot, for an open action set, or an environment that is not here)."""
    if step.state is None:
        return []
    from studio.envs.registry import make_env

    try:
        with contextlib.closing(make_env(episode.env, episode.env_options)) as env:
            env.rewind(episode.seed, step.state)
            return list(env.valid_actions() or [])
    except StudioError:
        return []


def step_lens(backend: Backend, episode: Episode, step: Step, steering: Steering | None = None) -> LensView:
    """The logit lens of ``step`` (its recorded prompt and thought) under ``backend``."""
    prompt = prompts_of(episode)[step.index]
    marker = step.raw.rfind(ACTION_MARKER)
    if not prompt or marker < 0 or not step.action:
        raise StudioError(f"Step {step.index} has no model output with an action to read through the lens.")
    prefix = step.raw[: marker + len(ACTION_MARKER)]
    offered = list(step.action_logprobs or {}) or valid_actions(episode, step)
    if len(offered) > 1 and step.action in offered:
        actions = offered[:MAX_ACTIONS]
        continuations = [f" {a}" for a in actions]
    else:
        actions = [step.action]
        written = step.raw[marker + len(ACTION_MARKER) :].rstrip()
        continuations = [written or f" {step.action}"]
    table = backend.internals().lens(prompt, continuations, assistant_prefix=prefix, steering=steering)
    table = _normalised(table)
    if not np.isfinite(table).all():
        table = np.where(np.isfinite(table), table, -math.inf)
    return LensView(step.index, actions, table, step.action, leads_from(table))
