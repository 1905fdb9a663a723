"""Stop in a real browser: an output cut off mid-way never becomes a step."""

from __future__ import annotations

import sqlite3

import pytest

from tests.support.live_server import SLOW_MODEL, studio_in_chromium
from tests.browser.test_browser_studio import open_page, wait_steps

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def slow_studio(tmp_path_factory: pytest.TempPathFactory):
    """A scripted model replayed at 50 ms a token: long enough to press Stop mid-output, every time."""
    with studio_in_chromium(tmp_path_factory.mktemp("slow") / "studio.db", model=f"scripted:{SLOW_MODEL}") as studio:
        yield studio


def test_stop_mid_output_leaves_no_step(slow_studio) -> None:
    page = open_page(slow_studio)
    page.click("#as-step")
    wait_steps(page, 1, timeout=60_000)
    page.click("#as-run")  # Run to end
    page.wait_for_function("document.querySelectorAll('#as-live .as-live .as-tok').length >= 12", timeout=60_000)
    page.click("#as-stop")
    page.locator("#as-status", has_text="Stopped").wait_for(timeout=30_000)
    assert page.locator("#as-live .as-live").count() == 0
    assert page.locator("#as-timeline .as-step").count() == 1  # the cut-off output is not a step
    stored = sqlite3.connect(slow_studio["db"]).execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    assert stored == 1
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#as-step')).pointerEvents") != "none"
    )  # the controls are back
    page.close()
