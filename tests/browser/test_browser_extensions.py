"""A package's environment, backend and export format in the browser, with no file of the studio
edited: the studio runs with ``tests/plugin`` (entry points) on its ``PYTHONPATH``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.live_server import ROOT, studio_in_chromium

pytestmark = pytest.mark.browser


def test_the_plugins_environment_model_and_export_in_the_browser(tmp_path: Path) -> None:
    with studio_in_chromium(tmp_path / "studio.db", env={"PYTHONPATH": str(ROOT / "tests" / "plugin")}) as studio:
        page = studio["browser"].new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)

        # The model: a scheme the package registered, listed on the Models tab and loadable there.
        page.get_by_role("tab", name="Models").click()
        page.get_by_text("Kinds of model names").click()
        assert "echo:NAME" in page.inner_text("#as-model-schemes")
        page.locator("#as-model-a input, #as-model-a textarea").first.fill("echo:walker")
        page.click("#as-load-a")
        page.locator("#as-model-message-a", has_text="Loaded echo:walker").wait_for(timeout=60_000)

        # The environment: offered by the dropdown, stepped by that model; which cannot score, so the
        # Episode panel offers the generate mode only (the backend's capabilities say so).
        page.get_by_role("tab", name="Episode", exact=True).click()
        modes = page.locator("#as-action-mode")
        modes.get_by_text("cannot score actions").wait_for(timeout=30_000)
        assert modes.get_by_label("score").count() == 0 and modes.get_by_label("generate").count() == 1
        page.locator("#as-env input").click()
        page.get_by_role("option", name="linewalk").click()
        page.click("#as-reset")
        page.locator("#as-timeline .as-episode-head", has_text="linewalk").wait_for(timeout=60_000)
        assert "Walk right to the flag at cell 4." in page.inner_text("#as-trace")
        page.click("#as-run")  # to the end: 4 steps right
        page.locator("#as-status", has_text="Episode over").wait_for(timeout=60_000)
        steps = page.locator("#as-timeline .as-step")
        assert steps.count() == 4 and all("right" in steps.nth(i).inner_text() for i in range(4))
        assert "success" in page.inner_text("#as-timeline .as-episode-head")

        # The export format: one of the Overview's downloads.
        page.get_by_role("tab", name="Annotate").click()
        page.get_by_role("tab", name="Overview").click()
        page.get_by_label("actions").check()
        page.click("#as-export")
        page.locator("#as-download", has_text="Download actions.jsonl").wait_for(timeout=30_000)
        with page.expect_download() as download:
            page.click("#as-download")
        rows = [json.loads(line) for line in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
        assert [row["action"] for row in rows] == ["right"] * 4 and {row["env"] for row in rows} == {"linewalk"}
        page.close()
