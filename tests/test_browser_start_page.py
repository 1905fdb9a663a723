"""The studio in a real browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup.sh --test` (it installs Chromium)")
    from playwright.sync_api import sync_playwright

    with running_studio() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        yield page
        browser.close()


def test_start_page_shows_the_built_in_environments(page) -> None:
    page.get_by_text("Agent Studio", exact=True).first.wait_for(timeout=30_000)
    for name in ("gridworld", "household", "wikihop"):
        assert page.locator("h3", has_text=name).count() == 1
    images = page.locator("img")
    images.first.wait_for(timeout=30_000)
    assert images.count() >= 3
    assert page.get_by_text("python app.py run --env gridworld").count() >= 1
