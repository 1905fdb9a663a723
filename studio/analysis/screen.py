"""Drawing on a screenshot: element ids on their boxes (set-of-marks), an action's box or point,
numbered marks for candidate actions, and a distribution over elements as heat on their boxes.

Pure functions on RGB uint8 frames (a copy comes back; the frame given is never changed). Boxes are
``[x0, y0, x1, y1, ...]`` in the frame's pixels, as the web environments record them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from studio.analysis.projection import blend

#: Colours (RGB): the action taken, the candidates, the marks.
TAKEN = (220, 38, 38)
CANDIDATE = (37, 99, 235)
MARK = (17, 24, 39)


def _cv2():
    import cv2  # drawing only: imported when a frame is drawn

    return cv2


def _box(box: Sequence[int], frame: np.ndarray) -> tuple[int, int, int, int]:
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box[:4])
    return max(0, x0), max(0, y0), min(width - 1, x1), min(height - 1, y1)


def draw_marks(frame: np.ndarray, elements: dict[str, Sequence[int]]) -> np.ndarray:
    """Each marked element's id in a small tag at its box's top-left corner, the box outlined."""
    cv2, out = _cv2(), np.ascontiguousarray(frame, dtype=np.uint8).copy()
    for bid, box in elements.items():
        if len(box) > 4 and not box[4]:
            continue
        x0, y0, x1, y1 = _box(box, out)
        cv2.rectangle(out, (x0, y0), (x1, y1), MARK, 1)
        (w, h), _ = cv2.getTextSize(bid, cv2.FONT_HERSHEY_PLAIN, 0.8, 1)
        cv2.rectangle(out, (x0, y0), (min(out.shape[1] - 1, x0 + w + 3), min(out.shape[0] - 1, y0 + h + 4)), MARK, -1)
        cv2.putText(out, bid, (x0 + 2, y0 + h + 2), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_box(frame: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = TAKEN, width: int = 2) -> np.ndarray:
    """An element's box outlined in ``colour``."""
    cv2, out = _cv2(), np.ascontiguousarray(frame, dtype=np.uint8).copy()
    x0, y0, x1, y1 = _box(box, out)
    cv2.rectangle(out, (x0, y0), (x1, y1), colour, width)
    return out


def draw_point(frame: np.ndarray, x: float, y: float, colour: tuple[int, int, int] = TAKEN) -> np.ndarray:
    """A click point: a ring with a cross through it."""
    cv2, out = _cv2(), np.ascontiguousarray(frame, dtype=np.uint8).copy()
    centre = (int(round(x)), int(round(y)))
    cv2.circle(out, centre, 7, colour, 2, cv2.LINE_AA)
    cv2.line(out, (centre[0] - 10, centre[1]), (centre[0] + 10, centre[1]), colour, 1)
    cv2.line(out, (centre[0], centre[1] - 10), (centre[0], centre[1] + 10), colour, 1)
    return out


def draw_number(
    frame: np.ndarray, x: float, y: float, number: int | str, colour: tuple[int, int, int] = CANDIDATE
) -> np.ndarray:
    """A disc at (x, y) labelled ``number`` (candidate 3 acts there; ``L``: the left side does)."""
    cv2, out = _cv2(), np.ascontiguousarray(frame, dtype=np.uint8).copy()
    centre = (int(round(x)), int(round(y)))
    cv2.circle(out, centre, 9, colour, -1, cv2.LINE_AA)
    cv2.circle(out, centre, 9, (255, 255, 255), 1, cv2.LINE_AA)
    label = str(number)
    (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_PLAIN, 0.9, 1)
    cv2.putText(out, label, (centre[0] - w // 2, centre[1] + h // 2), cv2.FONT_HERSHEY_PLAIN, 0.9, (255, 255, 255), 1)
    return out


def box_heat(frame: np.ndarray, boxes: dict[str, Sequence[int]], mass: dict[str, float]) -> np.ndarray:
    """A distribution over elements as heat on their boxes (the heaviest is the hottest; a smaller box
    drawn over a larger one that holds it)."""
    heat = np.zeros(frame.shape[:2], dtype=np.float32)
    peak = max(mass.values(), default=0.0)
    if peak > 0:
        ordered = sorted(mass, key=lambda bid: -_area(boxes[bid]) if bid in boxes else 0)
        for bid in ordered:
            if bid in boxes:
                x0, y0, x1, y1 = _box(boxes[bid], frame)
                heat[y0 : y1 + 1, x0 : x1 + 1] = mass[bid] / peak
    return blend(np.ascontiguousarray(frame, dtype=np.uint8), heat)


def _area(box: Sequence[int]) -> int:
    return (int(box[2]) - int(box[0])) * (int(box[3]) - int(box[1]))


def centre(box: Sequence[int]) -> tuple[float, float]:
    """The middle of a box."""
    return (int(box[0]) + int(box[2])) / 2, (int(box[1]) + int(box[3])) / 2
