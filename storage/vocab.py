"""The words of judging, shared by pairs, the queue and step labels: choices, annotator names,
filters, timestamps and the majority of a vote."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone

from agent_studio.storage.records import (
    CHOICES,
)
from studio.errors import StudioError

SWAP = {"left": "right", "right": "left", "tie": "tie", "both_bad": "both_bad"}


def precise_now() -> str:
    """Microsecond timestamps: an annotator's judgements are ordered by them (undo)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalize_choice(choice: str) -> str:
    value = str(choice).strip().lower().replace("-", "_").replace(" ", "_")
    if value not in CHOICES:
        raise StudioError(f"Unknown choice {choice!r}: use left, right, tie or both-bad.")
    return value


def normalize_annotator(name: str) -> str:
    value = " ".join(str(name or "").split())
    if not value:
        raise StudioError("An annotator name is needed (any name that identifies you).")
    if len(value) > 200:
        raise StudioError("An annotator name can have at most 200 characters.")
    return value


def check_filter(value: str | None, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise StudioError(f"Unknown {what} {value!r}: use one of {', '.join(allowed)}.")


def majority(choices: Iterable[str]) -> str | None:
    """The choice most annotators made; None when the top choices tie (no majority)."""
    ranked = Counter(choices).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]
