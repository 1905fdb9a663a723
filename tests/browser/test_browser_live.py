"""Watching steps live in a real browser: tokens stream, the frame stays, the trace follows, Stop drops."""

from __future__ import annotations

import pytest

from tests.support.live_server import studio_in_chromium
from tests.browser.test_browser_studio import open_page, wait_steps

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def default_studio(tmp_path_factory: pytest.TempPathFactory):
    """The studio as a new user starts it: the embedded default model in slot A."""
    with studio_in_chromium(tmp_path_factory.mktemp("live") / "studio.db", model="default") as studio:
        yield studio


def in_view(page, selector: str, box_selector: str | None = None) -> bool:
    """Whether the element is wholly inside the viewport (and inside its scroll box, if given)."""
    box = page.locator(selector).bounding_box()
    viewport = page.viewport_size
    inside = box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"] + 1
    if box_selector is not None and inside:
        outer = page.locator(box_selector).bounding_box()
        inside = outer["y"] - 1 <= box["y"] and box["y"] + box["height"] <= outer["y"] + outer["height"] + 1
    return inside


def test_a_step_of_the_default_model_streams_with_the_frame_in_view(default_studio) -> None:
    page = open_page(default_studio)
    page.click("#as-step")
    # The first token is on screen while the step is still being written, and the map stays.
    page.locator("#as-live .as-live .as-tok").first.wait_for(timeout=60_000)
    assert page.locator("#as-timeline .as-step").count() == 0
    assert page.locator("#as-frame img").is_visible()
    assert in_view(page, "#as-live .as-live", "#as-trace")  # the card being written is where the user looks
    assert page.evaluate("getComputedStyle(document.querySelector('#as-step')).pointerEvents") == "none"  # Step waits
    wait_steps(page, 1)
    assert page.locator("#as-frame img").is_visible()
    assert page.locator("#as-live .as-live").count() == 0  # the live card became the step card
    page.locator("#as-database", has_text="1 episode stored").wait_for(timeout=10_000)  # the header is current

    # Run N: the trace follows the newest step, and a stored step's live card goes the moment it is stored
    # (it lingered as "Step 0 · writing… 72 s" until the next step's first token).
    page.evaluate(
        """() => { window.asStale = 0; window.asWatch = setInterval(() => {
            const live = document.querySelector('#as-live .as-live .as-index');
            const stored = document.querySelectorAll('#as-timeline .as-step').length;
            if (live && Number(live.textContent.replace('Step ', '')) < stored) window.asStale += 1;
        }, 50); }"""
    )
    page.locator("#as-run-count input").fill("3")
    page.click("#as-run-n")
    wait_steps(page, 4)
    page.wait_for_function("!document.querySelector('#as-live .as-live')", timeout=30_000)
    assert page.evaluate("() => { clearInterval(window.asWatch); return window.asStale; }") <= 4  # 200 ms at most
    assert in_view(page, "#as-timeline .as-step[data-step='3']", "#as-trace")

    # Clicking a card selects that step.
    page.locator("#as-timeline .as-step[data-step='1'] .as-head").click()
    page.wait_for_selector("#as-timeline .as-step.as-selected[data-step='1']", timeout=30_000)
    assert page.locator("#as-selected input[type=number]").input_value() == "1"

    # Attention of this episode, then Reset to another environment: the view is empty again.
    page.locator("#as-attention").get_by_text("Attention: what the model looked at").click()
    page.click("#as-attention-show")
    page.locator("#as-attention-strip .as-att").first.wait_for(timeout=120_000)
    env = page.locator("#as-env input")
    env.fill("household")
    env.press("Enter")
    page.locator("#as-status", has_text="press Reset to apply").wait_for(timeout=30_000)
    page.click("#as-reset")
    page.locator("#as-timeline .as-episode-head", has_text="household").wait_for(timeout=60_000)
    page.wait_for_function("!document.querySelector('#as-attention-strip .as-att')", timeout=30_000)
    page.close()
