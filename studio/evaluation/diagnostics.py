"""What went wrong, counted across many episodes: invalid actions, actions that failed in the
environment and how episodes were cut off, by reason, per model (arm) and environment, each reason
with the episodes and steps where it happened.

Reasons are grouped by their words, not their particulars: ``there is no element [999] on the page``
and ``there is no element [12] on the page`` are one reason (element ids, quoted text and numbers are
folded), so a table says "this model clicks elements that are not there 41 times" and links to three
of them. Pure functions of episodes (no store, no UI).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from studio.trace import Episode

#: Examples kept per reason (links to the steps where it happened).
EXAMPLES = 3
#: Reasons shown per model and environment (the rest are counted as "other").
TOP_REASONS = 8
#: End reasons that are not failures of the agent or the environment (the task ended, or ran out of steps).
ORDINARY_ENDS = ("goal reached", "terminated", "step limit", "truncated by the environment", "survived")

_BRACKETED = re.compile(r"\[[^\]\n]{0,40}\]")
_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"")
_NUMBER = re.compile(r"(?<![A-Za-z])\d+(?:\.\d+)?")


def reason_group(reason: str) -> str:
    """A reason without its particulars: element ids ``[…]``, quoted text ``'…'`` and numbers ``N``."""
    text = " ".join(str(reason).split())[:300]
    text = _BRACKETED.sub("[…]", text)
    text = _QUOTED.sub("'…'", text)
    return _NUMBER.sub("N", text).rstrip(".")


@dataclass
class Reason:
    """One reason, how often it happened, and where (episode id, step index)."""

    kind: str
    """``invalid`` (the action was refused), ``error`` (it ran and failed) or ``ended`` (how the episode was cut off)."""
    reason: str
    count: int
    examples: list[tuple[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "count": self.count,
            "examples": [{"episode": e, "step": i} for e, i in self.examples],
        }


def _events(episode: Episode) -> Iterable[tuple[str, str, int]]:
    """Every (kind, reason, step index) of one episode."""
    for step in episode.steps:
        if not step.valid and step.invalid_reason:
            yield "invalid", step.invalid_reason, step.index
        error = step.info.get("action_error") if isinstance(step.info, dict) else None
        if isinstance(error, str) and error:
            yield "error", error, step.index
    end = episode.end_reason or ""
    if end and episode.steps and not end.startswith(ORDINARY_ENDS):
        yield "ended", end, episode.steps[-1].index


def reasons(episodes: Iterable[Episode]) -> list[Reason]:
    """The reasons in ``episodes``, most frequent first (ties by kind and words), :data:`EXAMPLES` each
    (the first steps where it happened, episodes in seed order)."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for episode in sorted(episodes, key=lambda e: (e.seed if e.seed is not None else -1, e.started_at, e.id)):
        for kind, reason, index in _events(episode):
            key = (kind, reason_group(reason))
            counts[key] += 1
            if len(examples[key]) < EXAMPLES:
                examples[key].append((episode.id, index))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [Reason(kind, reason, count, examples[(kind, reason)]) for (kind, reason), count in ordered]


def diagnostics(groups: dict[tuple[str, str], list[Episode]]) -> list[dict[str, Any]]:
    """Per (model label, environment label): steps, and the :data:`TOP_REASONS` most frequent reasons
    (``other`` counts the rest). Groups without any reason are left out."""
    rows = []
    for (model, env), episodes in groups.items():
        found = reasons(episodes)
        if not found:
            continue
        rows.append(
            {
                "model": model,
                "env_label": env,
                "episodes": len(episodes),
                "steps": sum(e.length for e in episodes),
                "reasons": [r.to_dict() for r in found[:TOP_REASONS]],
                "other": sum(r.count for r in found[TOP_REASONS:]),
            }
        )
    return rows
