"""What a web page shows an agent, read from a BrowserGym observation: the accessibility tree as text
with element ids, the elements' boxes on the screenshot, and an action's error in words."""

from __future__ import annotations

import hashlib
import re
from typing import Any

#: Roles left out of the page text: layout noise a reader does not need.
HIDDEN_ROLES = ("LineBreak", "InlineTextBox")

_LOCAL_URL = re.compile(r"url='file://[^']*/([^'/]*)'")
#: A box on the screenshot in pixels, and whether BrowserGym would mark the element (set-of-marks).
Box = list[int]  # [x0, y0, x1, y1, marked]


def page_text(axtree: dict[str, Any], extra: dict[str, Any], budget: int) -> tuple[str, int]:
    """The accessibility tree as lines like ``[13] button 'no'`` (invisible elements without their id),
    cut to ``budget`` characters; and how many characters were cut."""
    from browsergym.utils.obs import IGNORED_AXTREE_ROLES, flatten_axtree_to_str

    text = flatten_axtree_to_str(
        axtree,
        extra_properties=extra,
        ignored_roles=list(IGNORED_AXTREE_ROLES) + [r for r in HIDDEN_ROLES if r not in IGNORED_AXTREE_ROLES],
        hide_bid_if_invisible=True,
    ).strip()
    # A page served from disk names its file, not the folder it is in on this machine (a snapshot
    # recorded here must replay the same elsewhere, and a model need not see local paths).
    text = _LOCAL_URL.sub(lambda match: f"url='{match.group(1)}'", text)
    text = "\n".join(line.replace("\t", "  ") for line in text.splitlines())
    if len(text) <= budget:
        return text, 0
    return text[:budget].rsplit("\n", 1)[0], len(text) - len(text[:budget].rsplit("\n", 1)[0])


def page_digest(text: str) -> str:
    """A short fingerprint of the page text: a replayed fork must arrive at the same one."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def element_boxes(extra: dict[str, Any], width: int, height: int) -> dict[str, Box]:
    """Every visible element with an id: its box on the screenshot (clipped to it) and its mark flag."""
    boxes: dict[str, Box] = {}
    for bid, properties in extra.items():
        bbox = properties.get("bbox")
        if not bbox or float(properties.get("visibility") or 0.0) < 0.5:
            continue
        x, y, w, h = (float(v) for v in bbox)
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        x1, y1 = min(width - 1, int(round(x + w))), min(height - 1, int(round(y + h)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            boxes[str(bid)] = [x0, y0, x1, y1, int(bool(properties.get("set_of_marks")))]
    return boxes


def element_at(boxes: dict[str, Box], x: float, y: float) -> str | None:
    """The element under a point: the smallest box holding it, marked (interactive) ones first."""
    under = [
        (not box[4], (box[2] - box[0]) * (box[3] - box[1]), bid)
        for bid, box in boxes.items()
        if box[0] <= x <= box[2] and box[1] <= y <= box[3]
    ]
    return min(under)[2] if under else None


#: Playwright's call log lines, and the cause each means (BrowserGym #140: say why an action timed out).
_CAUSES = (
    ("element is not visible", "the element is not visible (hidden, or of zero size)"),
    ("element is outside of the viewport", "the element is outside the visible page (scroll first)"),
    ("intercepts pointer events", "another element covers it (a dialog or overlay is in front)"),
    ("element is not enabled", "the element is disabled"),
    ("element is not editable", "the element cannot be typed into"),
    ("not an <input>", "the element is not a field that can be filled"),
    ("element is not attached", "the page changed under the action (the element was replaced)"),
    ("not a <select>", "the element is not a drop-down list"),
    ("did not find some options", "the drop-down list has no such option"),
    ("could not find element", "the element is not on the page (element missing)"),
)


def explain_error(error: str) -> str | None:
    """An action's error (BrowserGym's ``last_action_error``) as one line: what failed and why."""
    error = (error or "").strip()
    if not error:
        return None
    lowered = error.lower()
    cause = next((meaning for needle, meaning in _CAUSES if needle in lowered), None)
    timed_out = re.search(r"timeout (\d+)ms exceeded", lowered)
    if timed_out:
        waited = f"timed out after {int(timed_out.group(1))} ms"
        return f"{waited}: {cause}" if cause else f"{waited} (the page did not respond to it)"
    if cause:
        return cause
    first = error.splitlines()[0]
    return first if len(first) <= 200 else first[:197] + "..."
