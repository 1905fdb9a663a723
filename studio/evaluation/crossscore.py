"""Cross-model scoring: how likely another model (B) finds what model A wrote, token by token.

For each step of A's episode with a model output, one ``score`` pass of B over the same prompt and
A's whole output (no generation) gives B's logprob of every token of it in B's own tokenization.
Set beside A's recorded logprobs, the difference shows where B would not have said it, e.g. where
a distilled student departs from its teacher. Where the step's snapshot lets the environment say
which actions were valid, B also scores each valid action after A's thought: the action B prefers.

Works with any backend that scores (in-process models, served engines): the tokens come from B.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.importers.transcript import has_transcript, prompts_of
from studio.models.base import Backend
from studio.trace import Episode, Step, TokenInfo, utc_now

ACTION_MARKER = "Action:"


@dataclass
class CrossScore:
    """Model B's view of one step's output of model A."""

    episode_id: str
    step_index: int
    scorer: str
    """B's model id."""
    tokens: list[TokenInfo]
    """A's output in B's tokens, each with B's logprob (joined, they spell the step's ``raw``)."""
    own_total: float | None
    """A's own log-probability of its output (the sum of its recorded token logprobs), if recorded."""
    action: str | None
    """The action A took."""
    preferred: str | None = None
    """The valid action B finds most likely after A's thought (None when not known)."""
    action_logprobs: dict[str, float] | None = None
    """B's log-probability of each valid action after A's thought, normalised over them."""
    created_at: str = field(default_factory=utc_now)

    @property
    def total(self) -> float:
        """B's log-probability of A's whole output."""
        return float(sum(token.logprob for token in self.tokens))

    @property
    def difference(self) -> float | None:
        """B's minus A's log-probability of the output (negative: B finds it less likely)."""
        return None if self.own_total is None else self.total - self.own_total

    def token_differences(self, step: Step) -> list[float | None]:
        """Per B token: B's logprob minus A's logprob of the same text. A's tokens are placed on the
        B token where they start (identical tokenizers: one to one); None where A recorded no tokens."""
        if not step.tokens:
            return [None] * len(self.tokens)
        owner: list[int] = []  # for each character of the text, the B token it belongs to
        for position, token in enumerate(self.tokens):
            owner.extend([position] * len(token.text))
        own = [0.0] * len(self.tokens)
        start = 0
        for token in step.tokens:
            if start < len(owner):
                own[owner[start]] += token.logprob
            start += len(token.text)
        return [b.logprob - a for b, a in zip(self.tokens, own)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "step_index": self.step_index,
            "scorer": self.scorer,
            "tokens": [token.to_dict() for token in self.tokens],
            "total": self.total,
            "own_total": self.own_total,
            "difference": self.difference,
            "action": self.action,
            "preferred": self.preferred,
            "action_logprobs": self.action_logprobs,
            "created_at": self.created_at,
        }


def scorable(step: Step) -> bool:
    """Whether a step has a model's output to score: its text, and its prompt recorded or rebuildable
    from an imported transcript (:func:`studio.importers.transcript.prompt_at`)."""
    return bool(step.raw) and (bool(step.prompt) or has_transcript(step))


def check_scorable(episode: Episode) -> None:
    """One line when no step of ``episode`` has a model output (before any model is loaded for it)."""
    if not any(scorable(step) for step in episode.steps):
        raise StudioError("This episode has no model output to score (expert, random and human steps have none).")


def _valid_actions(env: Any, episode: Episode, step: Step) -> list[str] | None:
    """The actions valid at ``step``, from its snapshot restored in ``env`` (None without a snapshot,
    or for open action sets)."""
    if step.state is None:
        return None
    env.rewind(episode.seed, step.state)
    return env.valid_actions()


def _preferred(backend: Backend, step: Step, actions: list[str] | None) -> tuple[str | None, dict[str, float] | None]:
    """B's choice among ``actions`` after A's thought (the output up to its ``Action:``), scored in one pass."""
    marker = step.raw.rfind(ACTION_MARKER)
    if not actions or marker < 0:
        return None, None
    prefix = step.raw[: marker + len(ACTION_MARKER)]
    result = backend.score(step.prompt or [], [f" {a}" for a in actions], assistant_prefix=prefix, end_with_eos=True)
    totals = result.totals
    top = max(totals)
    norm = top + math.log(sum(math.exp(value - top) for value in totals))
    logprobs = {action: value - norm for action, value in zip(actions, totals)}
    return max(logprobs, key=logprobs.__getitem__), logprobs


def cross_score(
    episode: Episode,
    backend: Backend,
    steps: list[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[CrossScore]:
    """Score every step's output of ``episode`` (or the ``steps`` given) under ``backend``: one
    ``score`` pass for the output, one for the valid actions; stops early when ``should_stop()``;
    ``progress(done, total)`` after each step."""
    if not backend.capabilities.scoring:
        raise StudioError(
            f"Model {backend.card.id} cannot score given text: cross-model scoring needs a model that scores."
        )
    check_scorable(episode)
    chosen = [s for s in episode.steps if scorable(s) and (steps is None or s.index in steps)]
    if not any(step.state is not None for step in chosen):  # an imported episode: no world to ask
        return _scored(episode, backend, None, chosen, should_stop, progress)
    from studio.envs.registry import make_env

    with contextlib.closing(make_env(episode.env, episode.env_options)) as env:  # each step restores its snapshot in it
        return _scored(episode, backend, env, chosen, should_stop, progress)


def _scored(
    episode: Episode,
    backend: Backend,
    env: Any | None,
    chosen: list[Step],
    should_stop: Callable[[], bool] | None,
    progress: Callable[[int, int], None] | None,
) -> list[CrossScore]:
    """Each chosen step scored under ``backend`` (``env`` says which actions were valid)."""
    scores = []
    prompts = prompts_of(episode)  # recorded, or rebuilt from an imported transcript: one pass for all steps
    for step in chosen:
        if should_stop is not None and should_stop():
            break
        result = backend.score(prompts[step.index], [step.raw])
        texts = result.texts[0] if result.texts else None
        if texts is None or "".join(texts) != step.raw:
            texts = [step.raw] + [""] * (len(result.tokens[0]) - 1)  # a backend that cannot split the text
        count = len(result.tokens[0])
        entropies = result.entropies[0] if result.entropies else [None] * count
        tops = result.alternatives[0] if result.alternatives else [None] * count
        tokens = [
            TokenInfo(id=int(i), text=t, logprob=float(lp), entropy=h, origin="scored", top=top)
            for i, t, lp, h, top in zip(result.tokens[0], texts, result.token_logprobs[0], entropies, tops)
        ]
        actions = _valid_actions(env, episode, step) if env is not None else None
        preferred, logprobs = _preferred(backend, step, actions)
        own = float(sum(t.logprob for t in step.tokens)) if step.tokens else None
        scores.append(
            CrossScore(episode.id, step.index, backend.card.id, tokens, own, step.action, preferred, logprobs)
        )
        if progress is not None:
            progress(len(scores), len(chosen))
    return scores


def with_scored_tokens(episode: Episode, scores: list[CrossScore]) -> Episode:
    """``episode`` with each step that recorded no tokens of its own (an imported one) showing a scorer's
    tokens instead — logprobs, entropies, alternatives — so the trace's colours and hovers work on it.
    The first scorer (by name) of each step is used; the record is a copy, the stored one is unchanged."""
    by_step: dict[int, CrossScore] = {}
    for score in sorted(scores, key=lambda s: s.scorer):
        by_step.setdefault(score.step_index, score)
    if not any(step.tokens is None and step.index in by_step for step in episode.steps):
        return episode
    shown = copy.copy(episode)
    shown.steps = [
        dataclasses.replace(step, tokens=list(by_step[step.index].tokens))
        if step.tokens is None and step.index in by_step
        else step
        for step in episode.steps
    ]
    return shown
