"""The episode panel's downloads in a real browser: an MP4 of the open episode (a frame per step and the end), and its report."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from tests.support.live_server import studio_in_chromium
from tests.browser.test_browser_studio import open_page, wait_steps

pytestmark = pytest.mark.browser


def test_the_open_episode_downloads_as_a_video(tmp_path: Path) -> None:
    with studio_in_chromium(tmp_path / "studio.db") as studio:
        page = open_page(studio)
        page.locator("#as-share").get_by_text("Share this episode").click()
        page.click("#as-video")  # nothing stepped yet: a message, no download
        page.locator("#as-video-message", has_text="Take a step first").wait_for(timeout=30_000)
        page.click("#as-step")
        wait_steps(page, 1, timeout=60_000)
        page.click("#as-step")
        wait_steps(page, 2, timeout=60_000)
        page.click("#as-video")
        button = page.locator("#as-video-download")
        button.filter(has_text="3 frames").wait_for(timeout=60_000)
        with page.expect_download() as download:
            button.click()
        assert download.value.suggested_filename.endswith(".mp4")
        capture = cv2.VideoCapture(download.value.path())
        count = 0
        while capture.read()[0]:
            count += 1
        assert count == 3  # two steps and the state after the second
        page.click("#as-report")
        report = page.locator("#as-report-download")
        report.filter(has_text="MB").wait_for(timeout=60_000)
        with page.expect_download() as download:
            report.click()
        page_text = Path(download.value.path()).read_text(encoding="utf-8")
        assert download.value.suggested_filename.endswith(".html") and page_text.count('class="as-step') >= 2
        page.close()
