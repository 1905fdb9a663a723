"""Retake the README's and the docs' screenshots of the episode and annotate panels (Chromium, default model).

    .venv/bin/python scripts/screenshots.py [--out assets]

Starts the studio on a throwaway database, steps the default model on gridworld (one step
caught while it is being written), samples K = 3 candidates for a few steps, and judges
from the Annotate tab at 1280×800.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio  # noqa: E402


def wait_steps(page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#as-timeline .as-step').length === {count}", timeout=180_000)


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets")
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp(prefix="agent-studio-shots-")) / "shots.db"
    with running_studio("--db", str(db), timeout=300) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.locator("#as-timeline .as-empty").wait_for(timeout=180_000)
        page.screenshot(path=str(args.out / "panel-empty.png"))
        for count in (1, 2):
            page.click("#as-step")
            wait_steps(page, count)
        page.click("#as-step")  # caught while the model writes it
        page.wait_for_function("document.querySelectorAll('#as-live .as-live .as-tok').length >= 12", timeout=180_000)
        page.screenshot(path=str(args.out / "panel-live.png"))
        wait_steps(page, 3)
        page.get_by_text("Sampling").click()
        box = page.locator("#as-candidates input[type=number]")
        page.locator("#as-temperature").wait_for()
        page.wait_for_timeout(500)  # a box filled the instant the accordion opens may not be listened to yet
        box.fill("3")
        box.press("Enter")
        page.wait_for_function(
            "document.querySelector('#as-temperature input[type=number]').value === '0.7'", timeout=30_000
        )
        for count in (4, 5):
            page.click("#as-step")
            wait_steps(page, count)
        page.locator("#as-timeline .as-step[data-step='4'] .as-head").click()
        page.wait_for_selector("#as-timeline .as-step.as-selected[data-step='4']", timeout=30_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(args.out / "panel-episode.png"))

        page.set_viewport_size({"width": 1280, "height": 800})
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#as-progress", has_text="judged").wait_for(timeout=30_000)
        name = page.locator("#as-annotator input, #as-annotator textarea").first
        name.fill("ada")
        name.press("Enter")
        page.locator("#as-progress", has_text="ada: 0 judged").wait_for(timeout=30_000)
        page.keyboard.press("Escape")
        page.keyboard.press("1")
        page.locator("#as-progress", has_text="ada: 1 judged").wait_for(timeout=30_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(args.out / "panel-annotate.png"))
        browser.close()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
