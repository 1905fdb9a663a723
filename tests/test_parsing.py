"""The ReAct output parser."""

from __future__ import annotations

import pytest

from studio.agents.parsing import parse_react


@pytest.mark.parametrize(
    ("text", "thought", "action"),
    [
        ("Thought: the key is north.\nAction: go north", "the key is north.", "go north"),
        (
            "Thought 2: I need the founder.\nAction 2: search[Quint Atlas Company]",
            "I need the founder.",
            "search[Quint Atlas Company]",
        ),
        ("**Thought:** hmm\n**Action:** `take mug 1 from cabinet 1`.", "hmm", "take mug 1 from cabinet 1"),
        (
            "Thought: a\nmulti-line thought\nAction: look\nObservation: You see a cat.\nThought: next\nAction: go to bed 1",
            "a\nmulti-line thought",
            "look",
        ),
        ("Action: finish[Umtavia].", None, "finish[Umtavia]"),
        ("thought: lower case\naction: go west", "lower case", "go west"),
        ("Thought: x\nAction: go north\nAction: go south", "x", "go north"),
    ],
)
def test_parses_thought_and_first_action(text: str, thought: str | None, action: str) -> None:
    parsed = parse_react(text)
    assert (parsed.thought, parsed.action, parsed.error) == (thought, action, None)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("I will go north now.", "no 'Action:' line"),
        ("Thought: I am thinking", "no 'Action:' line"),
        ("Thought: x\nAction:   \n", "empty"),
        ("", "no 'Action:' line"),
    ],
)
def test_reports_why_nothing_could_be_parsed(text: str, error: str) -> None:
    parsed = parse_react(text)
    assert parsed.action is None and error in parsed.error
