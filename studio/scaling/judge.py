"""A model as judge of a pair: which of two outputs (or trajectories) is better, from the model's
own token probabilities of its verdict.

The judge sees what a person sees in the blind annotation view, as text: the task, the steps
before the judged one, the observation, and the two sides (labelled Output A and Output B). It
is asked for a verdict and the studio reads the probability it gives ``A`` and ``B`` after
``Verdict: Output`` (one scoring pass, no sampling). Judges prefer a position; so each pair is
asked in both orders and the two are averaged: ``p_left`` is the mean of P(A) with the left
side first and P(B) with it second. A judge with no preference but for a position gets 0.5
(a tie).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from studio.errors import StudioError
from studio.models.base import Backend

SYSTEM = (
    "You judge an agent acting in an environment. You are shown the task, what the agent saw, and "
    "two candidate outputs (or two whole attempts). Decide which is better: more likely to reach "
    "the goal, valid, and well reasoned. Answer with the letter of the better one."
)
#: Bump when what the judge reads changes (SYSTEM, PREFIX, LETTERS, :func:`judge_messages`,
#: :func:`side_text`): stored with every verdict beside its prompts' hashes.
TEMPLATE_VERSION = 1
#: The judge's answer starts here; the letters are scored after it.
PREFIX = "Verdict: Output"
LETTERS = (" A", " B")
#: Within this distance of 0.5 the verdict is a tie.
TIE_MARGIN = 0.02
#: Characters kept of each side and of the history (a judge's context is finite).
SIDE_CHARS = 2_000
HISTORY_STEPS = 3


class SideLike(Protocol):
    raw: str
    action: str | None
    valid: bool
    steps: list[Any]
    success: bool | None
    total_return: float | None


class PairLike(Protocol):
    """What a queue item (:class:`storage.records.QueueItem`) shows: the sides as shown."""

    kind: str
    instruction: str
    history: list[Any]
    observation: str
    left: SideLike
    right: SideLike


@dataclass(frozen=True)
class Verdict:
    """A judge's verdict on a pair, in terms of the sides as shown."""

    choice: str
    """``left``, ``right`` or ``tie``."""
    p_left: float
    """The judge's probability that the left side is better (both orders averaged)."""
    p_left_first: float
    """P(left better) when the left side was shown as Output A."""
    p_left_second: float
    """P(left better) when the left side was shown as Output B."""
    prompt_hashes: tuple[str, str] = ("", "")
    """SHA-256 of the two prompts (left shown first, then second), as :func:`prompt_hash` makes them."""

    @property
    def confidence(self) -> float:
        return max(self.p_left, 1 - self.p_left)

    def provenance(self, swapped: bool = False) -> dict[str, Any]:
        """What the store keeps to derive the verdict again: the template version, the prompts'
        hashes and each side's probability of being the better one, in terms of the *stored* pair
        (``swapped``: the queue showed the stored right side on the left)."""
        p_shown_left = self.p_left
        p_stored_left = 1 - p_shown_left if swapped else p_shown_left
        return {
            "kind": "judge",
            "template_version": TEMPLATE_VERSION,
            "prompt_sha256": {"shown_left_first": self.prompt_hashes[0], "shown_left_second": self.prompt_hashes[1]},
            "swapped": swapped,
            "p_left": p_stored_left,
            "p_right": 1 - p_stored_left,
            "p_shown_left_first": self.p_left_first,
            "p_shown_left_second": self.p_left_second,
        }

    @property
    def rationale(self) -> str:
        return (
            f"p(left better) = {self.p_left:.3f} (left shown first {self.p_left_first:.3f}, "
            f"second {self.p_left_second:.3f})"
        )


def side_text(side: SideLike, kind: str) -> str:
    """One side as the judge reads it: the output, or a trajectory's steps and outcome."""
    if kind == "trajectory":
        lines = [f"Step {step.index}: {step.action or '(no action)'}" for step in side.steps]
        outcome = "succeeded" if side.success else "did not succeed"
        text = "\n".join(lines) + f"\nThe attempt {outcome} (return {side.total_return})."
    else:
        text = side.raw if side.raw else str(side.action or "")
        if not side.valid:
            text += "\n(This action was not valid in the environment.)"
    return text[-SIDE_CHARS:] if len(text) > SIDE_CHARS else text


def judge_messages(pair: PairLike, first: SideLike, second: SideLike) -> list[dict[str, str]]:
    """The chat the judge answers: the shared context once, then Output A and Output B."""
    parts = [f"Task: {pair.instruction}"]
    for step in pair.history[-HISTORY_STEPS:]:
        parts.append(f"Earlier, the agent saw:\n{step.observation}\nand did: {step.action or '(no action)'}")
    parts.append(f"Now the agent sees:\n{pair.observation}")
    parts.append(f"Output A:\n{side_text(first, pair.kind)}")
    parts.append(f"Output B:\n{side_text(second, pair.kind)}")
    parts.append("Which output is better, A or B?")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def _p_first(backend: Backend, messages: list[dict[str, str]]) -> float:
    """P(A) of the judge's next letter, normalised over A and B."""
    scores = backend.score(messages, list(LETTERS), assistant_prefix=PREFIX)
    a, b = scores.totals
    top = max(a, b)
    if top == float("-inf"):
        return 0.5
    return math.exp(a - top) / (math.exp(a - top) + math.exp(b - top))


def judge_pair(backend: Backend, pair: PairLike) -> Verdict:
    """The judge's verdict on ``pair`` (both orders, averaged)."""
    if not backend.capabilities.scoring:
        raise StudioError(f"Model {backend.card.id} cannot judge: its backend cannot score given text.")
    first_prompt, second_prompt = (
        judge_messages(pair, pair.left, pair.right),
        judge_messages(pair, pair.right, pair.left),
    )
    left_first = _p_first(backend, first_prompt)
    left_second = 1.0 - _p_first(backend, second_prompt)
    p_left = (left_first + left_second) / 2
    choice = "tie" if abs(p_left - 0.5) < TIE_MARGIN else ("left" if p_left > 0.5 else "right")
    hashes = (prompt_hash(first_prompt), prompt_hash(second_prompt))
    return Verdict(choice, p_left, left_first, left_second, hashes)


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """SHA-256 of a judge's prompt (the chat as canonical JSON, with the answer's prefix)."""
    text = json.dumps({"messages": messages, "assistant_prefix": PREFIX}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def judge_name(backend: Backend) -> str:
    """The annotator a judge's verdicts are stored under."""
    return f"judge:{backend.card.id}"


class JudgingQueue(Protocol):
    """What :func:`judge_queue` needs of the store: the blind queue and a way to record a verdict
    (``storage.preferences.PreferenceStore`` is one)."""

    def progress(self, annotator: str, kind: str | None, env: str | None, source: str | None) -> tuple[int, int]: ...

    def queue(self, annotator: str, **filters: Any) -> list[Any]: ...

    def annotate(self, pair_id: str, annotator: str, choice: str, **details: Any) -> Any: ...


def judge_queue(
    preferences: JudgingQueue,
    backend: Any,
    limit: int | None = None,
    kind: str | None = None,
    env: str | None = None,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Model ``backend`` judges the pairs it has not judged yet (blind, as a person sees them),
    stored as annotator ``judge:<model>`` with its probability as confidence. Returns how many.
    ``preferences`` is the store's (``store.preferences``): the loop is the core's, the storing the store's.
    ``should_stop()`` ends it between pairs (the verdicts so far stay: each is a judgement of its own)."""
    name = judge_name(backend)
    judged, total = preferences.progress(name, kind, env, source)
    todo = total - judged if limit is None else min(limit, total - judged)
    done = 0
    while done < todo:
        items = preferences.queue(name, limit=min(10, todo - done), kind=kind, env=env, source=source)
        if not items:
            break
        for item in items:
            if should_stop is not None and should_stop():
                return done
            verdict = judge_pair(backend, item)
            preferences.annotate(
                item.pair_id,
                name,
                verdict.choice,
                rationale=verdict.rationale,
                confidence=verdict.confidence,
                provenance=verdict.provenance(swapped=item.swapped),
            )
            done += 1
            if progress is not None:
                progress(done, todo)
    return done
