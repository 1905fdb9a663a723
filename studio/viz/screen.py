"""A step's screenshot as the place where things happened: the action taken drawn on it (the clicked
element's box, or the click point), the step's candidate actions as numbered marks (best-of-K
proposals), and the score-mode distribution over elements as heat on their boxes.

It reads what a screen environment (``web:``) records in each step's ``info``: ``elements`` (id ->
box on the frame, before the action) and ``target`` (the taken action's boxes or point). Steps of
other environments come back unchanged. Every view draws through :func:`mark_step`: the Episode
panel, Annotate's pairs, videos, reports and the presentation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from studio.analysis import screen
from studio.trace import Step


def is_screen_step(step: Step) -> bool:
    """Whether the step recorded where things are on its frame."""
    return isinstance(step.info.get("elements"), dict)


def where(action: str | None, elements: dict[str, list[int]], size: tuple[int, int]) -> tuple[float, float] | None:
    """The point an action acts at on the frame: its element's centre, or its own point; None when it
    names neither (a key press, a malformed action)."""
    if not action:
        return None
    from studio.envs.web.actions import SUBSETS, ActionRefused, PageFacts, parse_action

    height, width = size
    try:
        parsed = parse_action(action, SUBSETS["all"], PageFacts(frozenset(elements), width, height))
    except ActionRefused:
        return None
    if parsed.point is not None:
        return parsed.point
    bids = [bid for bid in parsed.target_bids if bid in elements]
    return screen.centre(elements[bids[0]]) if bids else None


def element_mass(step: Step) -> dict[str, float]:
    """The score-mode distribution (``action_logprobs``) summed per element it acts on."""
    elements = step.info.get("elements") or {}
    mass: dict[str, float] = {}
    for action, logprob in (step.action_logprobs or {}).items():
        from studio.envs.web.actions import SUBSETS, ActionRefused, PageFacts, parse_action

        try:
            parsed = parse_action(action, SUBSETS["all"], PageFacts(frozenset(elements), 1 << 16, 1 << 16))
        except ActionRefused:
            continue
        for bid in parsed.target_bids[:1]:
            mass[bid] = mass.get(bid, 0.0) + math.exp(logprob)
    return mass


def mark_step(frame: np.ndarray | None, step: Step, marks: bool = False) -> np.ndarray | None:
    """``frame`` (the one step acted on) with the step drawn on it; unchanged for other environments.

    Drawn, bottom first: heat over the elements from the score-mode distribution; element ids on
    their boxes (``marks``); each candidate's action as a numbered disc (when there were several);
    the action taken, in red: its element's box, or a ring at its point.
    """
    if frame is None or not is_screen_step(step):
        return frame
    elements: dict[str, list[int]] = step.info["elements"]
    out = np.ascontiguousarray(frame, dtype=np.uint8)
    mass = element_mass(step)
    if mass:
        out = screen.box_heat(out, elements, mass)
    if marks:
        out = screen.draw_marks(out, elements)
    if len(step.candidates) > 1:
        for number, candidate in enumerate(step.candidates, start=1):
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
