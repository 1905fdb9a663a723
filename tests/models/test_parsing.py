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


@pytest.mark.parametrize(
    ("generated", "kept"),
    [
        (" go.\nAction: go east\n#.##.#G#\n#.##", " go.\nAction: go east"),  # a hallucinated map after the action
        (" x\n**Action 2:** `look`.\nThought: next", " x\n**Action 2:** `look`."),
        (" x\naction: go west\n", " x\naction: go west"),
        (" go.\nAction:\ngo east\n", None),  # the marker line is empty: the action may follow on the next line
        (" Action: go east\nmore", None),  # not a marker for the parser (it follows "Thought:" on its line)
        (" still thinking\n", None),
    ],
)
def test_a_generated_turn_ends_with_its_action_line(generated: str, kept: str | None) -> None:
    """The stop pattern cuts a turn (written after "Thought:") where its first action line ends,
    and nowhere else: what it keeps parses to the same thought and action as the whole text."""
    from studio.agents.parsing import ACTION_LINE_END
    from studio.models.tokens import stop_boundary

    boundary = stop_boundary(generated, [ACTION_LINE_END])
    assert (generated[:boundary] if boundary is not None else None) == kept
    if kept is not None:
        assert parse_react("Thought:" + kept) == parse_react("Thought:" + generated)
