"""Web actions parsed and checked without a browser: canonical forms, every refusal one line, and
BrowserGym's errors explained with their cause (BrowserGym #140)."""

from __future__ import annotations

import pytest

from studio.envs.web.actions import SUBSETS, ActionRefused, PageFacts, describe, parse_action
from studio.envs.web.page import element_at, explain_error

PAGE = PageFacts(frozenset({"7", "13", "a5"}), width=498, height=321)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("click('13')", "click('13')"),
        ('click("13")', "click('13')"),
        ("click(13)", "click('13')"),
        ("  `click('13')`;  ", "click('13')"),
        ("click('13', button='left')", "click('13')"),
        ("click('13', 'right')", "click('13', 'right')"),
        ("click(bid='13', modifiers=['Shift'])", "click('13', 'left', ['Shift'])"),
        ("fill('7', \"it's\")", "fill('7', \"it's\")"),
        ("fill(bid='a5', value='x')", "fill('a5', 'x')"),
        ("select_option('7', ['Red', 'Blue'])", "select_option('7', ['Red', 'Blue'])"),
        ("scroll(0, 200.0)", "scroll(0, 200)"),
        ("noop()", "noop(1000)"),
        ("mouse_click(10.0, 20)", "mouse_click(10, 20)"),
        ("mouse_click(10.25, 20)", "mouse_click(10.2, 20)"),
        ("keyboard_type('hello')", "keyboard_type('hello')"),
    ],
)
def test_actions_have_one_canonical_form(written: str, canonical: str) -> None:
    assert parse_action(written, SUBSETS["all"], PAGE).text == canonical
    again = parse_action(canonical, SUBSETS["all"], PAGE)
    assert again.text == canonical  # canonical text parses to itself


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("click('99')", "no element [99] on the page now (element missing)"),
        ("click('')", "must be an element id"),
        ("click(True)", "must be an element id"),
        ("goto('https://example.com')", "'goto' is not an action here"),
        ("upload_file('7', '/etc/passwd')", "'upload_file' is not an action here"),
        ("__import__('os').system('id')", "is not an action call"),
        ("click('13'); click('7')", "is not an action call"),
        ("click('13')\nclick('7')", "is not an action call"),
        ("page.evaluate('1')", "is not an action call"),
        ("click(x)", "must be plain values"),
        ("click(*'13')", "written out"),
        ("click(**{'bid': '13'})", "has no argument '**'"),
        ("click('13', bid='13')", "got 'bid' twice"),
        ("click('13', evil=1)", "has no argument 'evil'"),
        ("fill('7')", "needs 'value'"),
        ("click('13', 'left', [], 4)", "takes at most 3 arguments"),
        ("click('13', 'sideways')", "button must be one of"),
        ("click('13', modifiers=['Hyper'])", "modifiers must be a list of"),
        ("fill('7', 5)", "must be text of at most"),
        ("fill('7', '" + "x" * 1001 + "')", "must be text of at most 1000"),
        ("press('7', '')", "must name a key"),
        ("mouse_click(498, 10)", "must be a number from 0 to 497"),
        ("mouse_click(10, -1)", "from 0 to 320"),
        ("mouse_click(float('nan'), 1)", "must be plain values"),
        ("scroll(0, 1e9)", "from -10000 to 10000"),
        ("noop(60000)", "from 0 to 5000"),
        ("select_option('7', [])", "options must be"),
        ("(" * 200 + "1" + ")" * 200, "is not an action call"),
    ],
)
def test_refusals_say_why_in_one_line(written: str, reason: str) -> None:
    with pytest.raises(ActionRefused, match=None) as refused:
        parse_action(written, SUBSETS["all"], PAGE)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_subsets_keep_to_their_kind() -> None:
    with pytest.raises(ActionRefused, match="'mouse_click' is not an action here"):
        parse_action("mouse_click(1, 1)", SUBSETS["bid"], PAGE)
    with pytest.raises(ActionRefused, match="'click' is not an action here"):
        parse_action("click('13')", SUBSETS["coord"], PAGE)
    assert "click(bid, button='left', modifiers=[])" in describe(SUBSETS["bid"])
    assert not {"goto", "upload_file", "mouse_upload_file", "new_tab", "tab_focus"} & set(SUBSETS["all"])


def test_errors_are_explained_with_their_cause() -> None:
    covered = (
        'TimeoutError: Timeout 500ms exceeded.\nCall log:\n  - waiting for get_by_test_id("13")\n'
        '  - <div id="overlay"></div> intercepts pointer events\n  - retrying click action'
    )
    assert (
        explain_error(covered) == "timed out after 500 ms: another element covers it (a dialog or overlay is in front)"
    )
    hidden = "TimeoutError: Timeout 500ms exceeded.\n  - element is not visible"
    assert explain_error(hidden) == "timed out after 500 ms: the element is not visible (hidden, or of zero size)"
    assert (
        explain_error("TimeoutError: Timeout 500ms exceeded.")
        == "timed out after 500 ms (the page did not respond to it)"
    )
    assert (
        explain_error('ValueError: Could not find element with bid "9"')
        == "the element is not on the page (element missing)"
    )
    assert explain_error("") is None
    assert explain_error("SomethingElse: first line\nsecond") == "SomethingElse: first line"


def test_the_element_under_a_point_is_the_smallest_interactive_one() -> None:
    boxes = {"0": [0, 0, 400, 300, 0], "9": [0, 0, 200, 100, 0], "13": [10, 10, 60, 40, 1], "14": [20, 20, 30, 30, 0]}
    assert element_at(boxes, 25, 25) == "13"  # interactive first, though 14 is smaller
    assert element_at(boxes, 100, 50) == "9" and element_at(boxes, 300, 200) == "0"
    assert element_at(boxes, 500, 500) is None
