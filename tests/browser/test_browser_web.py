"""A person acts on a web task by clicking its screenshot in the studio (Chromium drives the studio,
whose web environment drives another Chromium): the click lands on the element under it."""

from __future__ import annotations

import pytest

from studio.envs.registry import make_env
from tests.support.live_server import studio_in_chromium

pytestmark = pytest.mark.browser


def test_a_click_on_the_screenshot_clicks_the_element_under_it(tmp_path) -> None:
    # Where the goal's button is on seed 0's page (the same page the studio will show).
    env = make_env("web:miniwob.click-button", {"wait": 0.05})
    observation, _ = env.reset(seed=0)
    wanted = env.instruction.split('"')[1]
    bid = next(line.strip()[1:].split("]")[0] for line in observation.splitlines() if f"'{wanted}'" in line)
    x0, y0, x1, y1, _ = env.elements()[bid]
    width = env.render().shape[1]
    env.close()

    with studio_in_chromium(tmp_path / "studio.db") as studio:
        page = studio["browser"].new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        name = page.locator("#as-env input")
        name.fill("web:miniwob.click-button")
        name.press("Enter")
        page.locator("#as-options textarea, #as-options input").first.fill('{"wait": 0.05}')
        page.locator("#as-policy input").click()
        page.get_by_role("option", name="Human (you pick or type each action)").click()
        page.click("#as-reset")
        page.locator("#as-timeline .as-episode-head", has_text="web:miniwob.click-button").wait_for(timeout=60_000)
        page.wait_for_function(
            f"document.querySelector('#as-observation textarea').value.includes(\"button '{wanted}'\")",
            timeout=60_000,
        )
        image = page.locator("#as-frame img")
        image.wait_for(timeout=30_000)
        natural = page.evaluate(
            "() => [document.querySelector('#as-frame img').naturalWidth, document.querySelector('#as-frame img').naturalHeight]"
        )
        assert natural[0] == width  # the studio shows the screenshot itself
        # The picture is fitted into its box (object-fit: contain): scaled, and centred on the spare side.
        box = image.bounding_box()
        scale = min(box["width"] / natural[0], box["height"] / natural[1])
        left, top = (box["width"] - natural[0] * scale) / 2, (box["height"] - natural[1] * scale) / 2
        # A point inside the button, off its centre (the element under the pointer, not a guess).
        image.click(position={"x": left + (x0 + (x1 - x0) * 0.3) * scale, "y": top + (y0 + y1) / 2 * scale})
        page.wait_for_function("document.querySelectorAll('#as-timeline .as-step').length === 1", timeout=60_000)
        card = page.locator("#as-timeline .as-step").first.inner_text()
        assert f"click('{bid}')" in card
        page.locator("#as-timeline .as-episode-head", has_text="success").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
        page.close()
