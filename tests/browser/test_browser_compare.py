"""The Compare tab in a real browser: start a sweep, watch it finish, read the results and the
paired test; stop one half-way and resume it; a bad spec is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.support.live_server import studio_in_chromium
from tests.browser.test_browser_studio import open_page

pytestmark = pytest.mark.browser


def fill(page, element_id: str, text: str) -> None:
    page.locator(f"#{element_id} input, #{element_id} textarea").first.fill(text)


def test_a_sweep_runs_from_the_compare_tab_and_resumes_after_stop(tmp_path: Path) -> None:
    db = tmp_path / "studio.db"
    with studio_in_chromium(db) as studio:
        page = open_page(studio)
        page.get_by_role("tab", name="Compare").click()
        fill(page, "as-sweep-envs", "gridworld,nowhere")
        page.click("#as-sweep-start")
        page.locator("#as-sweep-message", has_text="Unknown environment 'nowhere'").wait_for(timeout=30_000)
        fill(page, "as-sweep-models", "expert,/etc")  # a folder the operator did not allow: refused before it is stored
        fill(page, "as-sweep-envs", "gridworld")
        page.click("#as-sweep-start")
        page.locator("#as-sweep-message", has_text="Loading local files from the browser is off ('/etc')").wait_for(
            timeout=30_000
        )
        fill(page, "as-sweep-models", 'expert,<img src=x onerror="window.__pwned=1">')  # not a hub id: refused too
        page.click("#as-sweep-start")
        page.locator("#as-sweep-message", has_text="is not a valid Hugging Face hub id").wait_for(timeout=30_000)
        assert page.evaluate("window.__pwned") is None and '<img src=x onerror="window.__pwned=1">' in page.inner_text(
            "#as-sweep-message"
        )
        fill(page, "as-sweep-models", "expert,random")

        fill(page, "as-sweep-envs", "gridworld,household")
        fill(page, "as-sweep-seeds", "0-5")
        fill(page, "as-sweep-max", "30")
        fill(page, "as-sweep-name", "demo")
        page.click("#as-sweep-start")
        page.locator("#as-sweep-progress", has_text="24 of 24 episodes · complete").wait_for(timeout=60_000)
        table = page.locator("#as-sweep-results table")
        table.locator("tbody tr").nth(3).wait_for(timeout=30_000)
        rows = [row.inner_text() for row in table.locator("tbody tr").all()]
        assert [r.split("\t")[:2] for r in rows] == [
            ["expert", "gridworld"],
            ["expert", "household"],
            ["random", "gridworld"],
            ["random", "household"],
        ]
        assert rows[0].split("\t")[2].startswith("100% [61%, 100%]")  # Wilson's interval for 6 of 6
        paired = page.locator("#as-sweep-paired").inner_text()
        assert "expert vs random on 12 shared (environment, options, seed)" in paired and "McNemar exact p =" in paired
        page.locator("#as-sweep-plot .js-plotly-plot").wait_for(timeout=30_000)
        page.click("#as-sweep-report")
        button = page.locator("#as-sweep-report-download")
        button.filter(has_text="sweep-demo.html").wait_for(timeout=60_000)
        with page.expect_download() as download:
            button.click()
        saved = tmp_path / "sweep-demo.html"
        download.value.save_as(saved)
        assert "<b>expert</b> vs <b>random</b> on 12 shared (environment, options, seed)" in saved.read_text(
            encoding="utf-8"
        )

        # A long one, stopped half-way, then resumed: one complete episode per cell in the end.
        fill(page, "as-sweep-models", "random")
        fill(page, "as-sweep-envs", "gridworld")
        fill(page, "as-sweep-seeds", "0-79")
        fill(page, "as-sweep-max", "60")
        fill(page, "as-sweep-name", "long")
        page.click("#as-sweep-start")
        page.locator("#as-sweep-message", has_text="Started long: 80 episodes.").wait_for(timeout=30_000)
        page.click("#as-sweep-stop")
        page.locator("#as-sweep-progress", has_text="stopped: Resume runs the rest").wait_for(timeout=60_000)
        page.click("#as-sweep-resume")
        page.locator("#as-sweep-progress", has_text="80 of 80 episodes · complete").wait_for(timeout=120_000)
        # The header's count follows the background work, and the Jobs tab shows both runs of the sweep.
        page.locator("#as-database", has_text="104 episodes stored").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Jobs", exact=True).click()
        page.locator("#as-jobs tr[data-state='done']", has_text="sweep long").wait_for(timeout=30_000)
        page.locator("#as-jobs tr[data-state='cancelled']", has_text="sweep long").wait_for(timeout=30_000)
    with open_store(db) as store:
        record = store.sweeps.get("long")
        cells = [episode.sweep_cell for episode in store.sweeps.episodes_of(record.id)]
        assert cells == list(range(80))
        assert store.episodes.count_episodes() == 104  # nothing incomplete left, no cell twice
        assert [record.name for record in store.sweeps.list()] == ["long", "demo"]  # no sweep of the refused ones
