"""Two episodes of the same task side by side, and the first step where they part.

Steps are compared in order. They part at the first step where the agent did something else
(another action, the actions compared as written after trimming) or saw something else (another
observation: the world or an earlier difference showed itself). Everything before it is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.errors import StudioError
from studio.trace import Episode, Step


@dataclass
class DiffRow:
    index: int
    left: Step | None
    right: Step | None
    same: bool


@dataclass
class TrajectoryDiff:
    left: Episode
    right: Episode
    rows: list[DiffRow]
    first_divergence: int | None
    """The first step where they part (None: the same steps throughout)."""
    reason: str
    """Why they part there, in a sentence."""


def same_task(left: Episode, right: Episode) -> None:
    """One line when two episodes are not of the same task (environment, options, seed, instruction)."""
    if left.env != right.env:
        raise StudioError(
            f"The episodes ran in different environments ({left.env[:60]} and {right.env[:60]}): not the same task."
        )
    if left.seed != right.seed or left.env_options != right.env_options or left.instruction != right.instruction:
        raise StudioError("The episodes are not of the same task (their seed, options or instruction differ).")


def _parting(left: Step | None, right: Step | None) -> str | None:
    if left is None or right is None:
        shorter = "left" if left is None else "right"
        return f"the {shorter} episode had ended"
    if left.observation != right.observation:
        return "the agents saw different observations"
    if (left.action or "").strip() != (right.action or "").strip():
        return f"the agents acted differently ({(left.action or '—')[:60]!r} against {(right.action or '—')[:60]!r})"
    return None


def diff_episodes(left: Episode, right: Episode, check_task: bool = True) -> TrajectoryDiff:
    """The two episodes step by step, with the first divergent step marked (see the module's docstring)."""
    if check_task:
        same_task(left, right)
    rows: list[DiffRow] = []
    first: int | None = None
    reason = "the same steps throughout"
    for index in range(max(left.length, right.length)):
        a = left.steps[index] if index < left.length else None
        b = right.steps[index] if index < right.length else None
        parting = _parting(a, b)
        if parting is not None and first is None:
            first, reason = index, f"step {index}: {parting}"
        rows.append(DiffRow(index, a, b, first is None))
    return TrajectoryDiff(left, right, rows, first, reason)
