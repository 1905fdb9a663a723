"""Parsing ReAct-style outputs: ``Thought: ... Action: ...``.

The parser is deliberately forgiving about what models do in practice (numbered markers
such as ``Action 2:``, markdown bold, backticks, a trailing period, a hallucinated
``Observation:`` after the action) and strict about what matters: exactly one action.
Whether the action is allowed is the environment's call (``validate_action``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MARKER_BODY = r"[ \t>*_#-]*(thought|action)(?:\s*\d+)?\s*[*_]*\s*:[*_]*[ \t]*"
_MARKER = re.compile("^" + _MARKER_BODY, re.IGNORECASE | re.MULTILINE)
#: The end of the first action line a model writes after ``Thought:`` (a marker at a line's start,
#: as the parser reads it, then text): a stop pattern (``studio.models.base.Stop``) whose group is
#: the newline. The action is one line, so what a model writes after it (a hallucinated map, the
#: next turn) is not its output: generation ends there, as it does at a hallucinated Observation.
ACTION_LINE_END = re.compile(
    r"\n" + _MARKER_BODY.replace("(thought|action)", "action") + r"\S[^\n]*(\n)", re.IGNORECASE
)
_OBSERVATION = re.compile(r"^\s*\**observation(?:\s*\d+)?\**\s*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ParsedOutput:
    """A model output split into thought and action, or the reason it could not be."""

    thought: str | None
    action: str | None
    error: str | None = None


def _clean_action(text: str) -> str:
    """First line of the action text without markdown quoting or a sentence-final period."""
    lines = text.strip().splitlines()
    text = lines[0] if lines else ""
    for _ in range(2):  # "`look`." and "`look.`" both become "look"
        text = text.strip().rstrip(".").strip().strip("`*_\"'")
    return text.strip()


def parse_react(text: str) -> ParsedOutput:
    """Split ``text`` into thought and action.

    Everything after a hallucinated ``Observation:`` line is ignored; when several actions
    appear, the first one counts (the model only gets to act once per step).
    """
    cut = _OBSERVATION.search(text)
    body = text[: cut.start()] if cut else text
    markers = list(_MARKER.finditer(body))
    thought_parts: list[str] = []
    action: str | None = None
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(body)
        content = body[marker.end() : end].strip()
        if marker.group(1).lower() == "thought":
            if action is None and content:
                thought_parts.append(content)
        elif action is None:
            action = _clean_action(content)
    thought = "\n".join(thought_parts) or None
    if not markers:
        return ParsedOutput(None, None, "The output has no 'Action:' line.")
    if action is None:
        return ParsedOutput(thought, None, "The output has a thought but no 'Action:' line.")
    if not action:
        return ParsedOutput(thought, None, "The 'Action:' line is empty.")
    return ParsedOutput(thought, action)
