"""A step's screenshot as the place where things happened: the action taken drawn on it (the clicked
element's box, or the click point), the step's candidate actions as numbered marks (best-of-K
proposals), and the score-mode distribution over elements as heat on their boxes.

It reads what a screen environment (``web:``) records in each step's ``info``: ``elements`` (id ->
box on the frame, before the action) and ``target`` (the taken action's boxes or point). Steps of
other environments come back unchanged. Every view draws through here: the Episode panel, videos,
reports and the presentation (:func:`mark_step`), Annotate's pairs (:func:`mark_pair`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from studio.analysis import screen
from studio.trace import Step

Elements = dict[str, list[int]]


def is_screen_step(step: Step) -> bool:
    """Whether the step recorded where things are on its frame."""
    return isinstance(step.info.get("elements"), dict)


def _parsed(action: str | None, elements: Elements, size: tuple[int, int]) -> Any:
    """``action`` checked against the recorded page (None when it is not a web action that fits it)."""
    from studio.envs.web.actions import SUBSETS, ActionRefused, PageFacts, parse_action

    try:
        return parse_action(action or "", SUBSETS["all"], PageFacts(frozenset(elements), size[1], size[0]))
    except ActionRefused:
        return None


def _target(
    action: str | None, elements: Elements, size: tuple[int, int]
) -> tuple[str | None, tuple[float, float] | None]:
    """The element an action acts on (the first of its ids on the page) and the point it acts at: its
    own point, else that element's centre; (None, None) when it names neither."""
    parsed = _parsed(action, elements, size)
    if parsed is None:
        return None, None
    bid = next((b for b in parsed.target_bids if b in elements), None)
    point = parsed.point if parsed.point is not None else None if bid is None else screen.centre(elements[bid])
    return bid, point


def where(action: str | None, elements: Elements, size: tuple[int, int]) -> tuple[float, float] | None:
    """The point an action acts at on a frame of ``size`` (height, width): its element's centre, or its
    own point; None when it names neither (a key press, a malformed action)."""
    return _target(action, elements, size)[1]


def element_mass(step: Step) -> dict[str, float]:
    """The score-mode distribution (``action_logprobs``) summed per element each action acts on."""
    elements = step.info.get("elements") or {}
    mass: dict[str, float] = {}
    for action, logprob in (step.action_logprobs or {}).items():
        bid, _point = _target(action, elements, (1 << 16, 1 << 16))
        if bid is not None:
            mass[bid] = mass.get(bid, 0.0) + math.exp(logprob)
    return mass


def mark_step(frame: np.ndarray | None, step: Step, marks: bool = False) -> np.ndarray | None:
    """``frame`` (the one step acted on) with the step drawn on it; unchanged for other environments.

    Drawn, bottom first: heat over the elements from the score-mode distribution; element ids on
    their boxes (``marks``); each other candidate's action (best-of-K) as a blue disc numbered as the
    candidates view names it (candidate 1, 2, ...); the action taken, in red: its element's box, or a
    ring at its point.
    """
    if frame is None or not is_screen_step(step):
        return frame
    elements: Elements = step.info["elements"]
    out = np.ascontiguousarray(frame, dtype=np.uint8)
    mass = element_mass(step)
    if mass:
        out = screen.box_heat(out, elements, mass)
    if marks:
        out = screen.draw_marks(out, elements)
    for number, candidate in enumerate(step.candidates, start=1):  # numbered as the candidates view names them
        point = where(candidate.action, elements, out.shape[:2])
        if point is not None:
            out = screen.draw_number(out, point[0], point[1], number)
    return _draw_target(out, step.info.get("target") or {})


def _draw_target(frame: np.ndarray, target: dict[str, Any]) -> np.ndarray:
    for box in target.get("boxes") or []:
        frame = screen.draw_box(frame, box)
    point = target.get("point")
    if isinstance(point, list) and len(point) == 2:
        frame = screen.draw_point(frame, float(point[0]), float(point[1]))
    return frame


def mark_pair(frame: np.ndarray | None, elements: Elements | None, left: str | None, right: str | None) -> Any:
    """The shared frame of a step pair with each side's action on it: an ``L`` and an ``R`` disc where
    they act, each on its element's outlined box (Annotate's pairs)."""
    if frame is None or not isinstance(elements, dict):
        return frame
    out = np.ascontiguousarray(frame, dtype=np.uint8)
    for label, action, colour in (("L", left, screen.CANDIDATE), ("R", right, screen.TAKEN)):
        bid, point = _target(action, elements, out.shape[:2])
        if point is None:
            continue
        if bid is not None:
            out = screen.draw_box(out, elements[bid], colour)
        out = screen.draw_number(out, point[0], point[1], label, colour)
    return out


def before_after(before: np.ndarray, after: np.ndarray | None) -> np.ndarray:
    """A step's page before (with its action drawn) above the page after, each under its name (stacked:
    the panel's frame box is taller than it is wide); the before alone when there is no after."""
    if after is None:
        return before
    import cv2

    band = 18
    width = max(before.shape[1], after.shape[1])
    out = np.full((2 * band + before.shape[0] + after.shape[0], width, 3), 255, dtype=np.uint8)
    top = 0
    for frame, name in ((before, "before"), (after, "after")):
        cv2.putText(out, name, (2, top + band - 5), cv2.FONT_HERSHEY_PLAIN, 1.0, (55, 65, 81), 1, cv2.LINE_AA)
        out[top + band : top + band + frame.shape[0], : frame.shape[1]] = frame[:, :, :3]
        top += band + frame.shape[0]
    return out
