"""The screenshot as the place where things happen: the click lands on the element's box (checked
against the box Chromium itself reports), candidates are numbered marks at their elements, the
score-mode distribution heats the elements' boxes, pairs show L and R, and other steps are untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from studio.agents.scripted import RandomPolicy
from studio.analysis.screen import CANDIDATE, TAKEN
from studio.episodes.runner import EpisodeRunner
from studio.errors import StudioError
from studio.trace import Candidate, Step
from studio.viz.screen import mark_pair, mark_step
from studio.viz.video import FrameDrawer


@pytest.fixture(scope="module")
def clicked() -> tuple[Step, dict[str, list[float]]]:
    """One step of click-button that clicked the element the goal names, and Chromium's own boxes of
    every element (CSS pixels times the page's zoom: screenshot pixels)."""
    runner = EpisodeRunner("web:miniwob.click-button", RandomPolicy(seed=0), {"wait": 0.05})
    runner.reset(seed=0)
    env = runner.env
    wanted = env.instruction.split('"')[1]
    bid = next(line.strip()[1:].split("]")[0] for line in runner.observation.splitlines() if f"'{wanted}'" in line)

    def chromium_boxes() -> dict[str, list[float]]:
        page = env._holder["gym"].unwrapped.page
        zoom = page._bgym_scale_factor
        out = {}
        for element in env.elements():
            box = page.get_by_test_id(element).bounding_box()
            if box:
                out[element] = [box["x"] * zoom, box["y"] * zoom, (box["x"] + box["width"]) * zoom]
                out[element].append((box["y"] + box["height"]) * zoom)
        return out

    boxes = env._actor.call(chromium_boxes)
    step = runner.step(f"click({bid!r})")
    runner.env.close()
    return step, boxes


def _is(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= 40)


def test_the_click_is_drawn_on_the_box_chromium_gives_the_element(clicked) -> None:
    step, chromium = clicked
    (bid,) = step.info["target"]["bids"]
    x0, y0, x1, y1 = step.info["target"]["boxes"][0]
    # The recorded box is the element's own, as Chromium lays it out (to a pixel of rounding).
    assert np.allclose([x0, y0, x1, y1], chromium[bid], atol=1.5)
    raw = step.frame
    drawn = FrameDrawer(_episode_of(step)).step(0)
    assert drawn.shape == raw.shape and not np.array_equal(drawn, raw)
    edges = [(y0, (x0 + x1) // 2), (y1, (x0 + x1) // 2), ((y0 + y1) // 2, x0), ((y0 + y1) // 2, x1)]
    for y, x in edges:
        assert _is(drawn[y, x], TAKEN) and not _is(raw[y, x], TAKEN)
    # Nothing is drawn away from the element.
    far = [(y, x) for y in range(raw.shape[0]) for x in range(raw.shape[1]) if y < y0 - 12 or y > y1 + 12][:500]
    assert all(np.array_equal(drawn[y, x], raw[y, x]) for y, x in far)


def _episode_of(step: Step):
    from studio.trace import Episode

    return Episode(env="web:miniwob.click-button", seed=0, steps=[step])


def test_candidates_are_numbered_marks_at_their_elements_and_scores_heat_their_boxes(clicked) -> None:
    step, _ = clicked
    elements = step.info["elements"]
    others = [bid for bid, box in elements.items() if box[4] and bid != step.info["target"]["bids"][0]][:2]
    actions = [step.action, *(f"click('{bid}')" for bid in others)]
    with_candidates = dataclasses.replace(step, candidates=[Candidate(raw=a, action=a) for a in actions])
    drawn = mark_step(step.frame, with_candidates)
    for bid in others:  # a blue disc at each other candidate's element centre
        x0, y0, x1, y1, _ = elements[bid]
        assert _is(drawn[(y0 + y1) // 2, (x0 + x1) // 2 - 6], CANDIDATE)
    # Score mode: the element holding 90% of the probability is hotter than the one holding 10%.
    hot, cold = others
    scored = dataclasses.replace(
        step, action_logprobs={f"click('{hot}')": float(np.log(0.9)), f"click('{cold}')": float(np.log(0.1))}
    )
    heated = mark_step(step.frame, scored).astype(int)
    change = {
        bid: np.abs(heated[box[1] + 3 : box[3] - 3, box[0] + 3 : box[2] - 3] - step.frame[box[1] + 3 : box[3] - 3, box[0] + 3 : box[2] - 3].astype(int)).mean()
        for bid, box in ((hot, elements[hot]), (cold, elements[cold]))
    }  # fmt: skip
    assert change[hot] > change[cold] > 0


def test_a_pair_shows_each_side_where_it_acts(clicked) -> None:
    step, _ = clicked
    elements = step.info["elements"]
    left, right = [bid for bid, box in elements.items() if box[4]][:2]
    drawn = mark_pair(step.frame, elements, f"click('{left}')", f"click('{right}')")
    for bid, colour in ((left, CANDIDATE), (right, TAKEN)):
        x0, y0, x1, y1, _ = elements[bid]
        assert _is(drawn[y0, (x0 + x1) // 2], colour)
    assert mark_pair(step.frame, None, "click('1')", None) is step.frame


def test_steps_of_other_environments_are_left_as_they_are() -> None:
    frame = np.full((20, 20, 3), 7, dtype=np.uint8)
    step = Step(index=0, observation="o", action="go north", frame=frame, info={"success": False})
    assert mark_step(frame, step) is frame


def test_the_selected_step_shows_its_page_before_and_after() -> None:
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession
    from studio.settings import EpisodeSettings

    settings = EpisodeSettings(env="web:miniwob.click-checkboxes", env_options={"wait": 0.05}, policy="human")
    session = StudioSession(ModelRegistry(), settings=settings)
    session.reset()
    first = session.runner.env.elements()
    box = next(bid for bid, b in first.items() if b[4])
    session.step(f"click({box!r})")
    session.step("noop(10)")
    raw = session.episode.steps[0].frame
    shown = session.step_frame(0)
    height, width = raw.shape[:2]
    band = (shown.shape[0] - 2 * height) // 2
    assert shown.shape == (2 * height + 2 * band, width, 3) and band > 0  # before above after, each named
    x0, y0, x1, y1, _ = first[box]
    assert _is(shown[band + y0, (x0 + x1) // 2], TAKEN)  # the action on the page before
    after = shown[2 * band + height :]
    assert np.array_equal(after, session.episode.steps[1].frame)  # the page after, as the next step saw it
    assert not np.array_equal(after, raw)  # the box is ticked now
    last = session.step_frame(1)  # the last step: the page after it is the page now
    assert np.array_equal(last[2 * band + height :], session.current_frame())
    # A click on a frame of an earlier step is refused in one line; on the page now, it acts.
    with pytest.raises(StudioError, match="earlier step"):
        session.act_at(x0 + 2, y0 + 2, shown=session.episode.steps[0].observation)
    other = next(bid for bid, b in session.runner.env.elements().items() if b[4] and bid != box)
    ox0, oy0, ox1, oy1, _ = session.runner.env.elements()[other]
    step = session.act_at((ox0 + ox1) / 2, (oy0 + oy1) / 2, shown=session.runner.observation)
    assert step.action == f"click({other!r})" and step.actor == "human"
    session.close()


def test_a_refused_step_still_shows_where_its_candidates_act() -> None:
    runner = EpisodeRunner("web:miniwob.click-button", RandomPolicy(seed=0), {"wait": 0.05})
    runner.reset(seed=0)
    bid = next(b for b, box in runner.env.elements().items() if box[4])
    step = runner.step("click('999')")
    assert not step.valid and step.info["elements"] == runner.env.elements()
    with_candidate = dataclasses.replace(step, candidates=[Candidate(raw="c", action=f"click('{bid}')")])
    x0, y0, x1, y1, _ = step.info["elements"][bid]
    assert _is(mark_step(step.frame, with_candidate)[(y0 + y1) // 2, (x0 + x1) // 2 - 6], CANDIDATE)
    runner.env.close()
