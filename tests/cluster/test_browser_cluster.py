"""The Compare tab of a studio started with ``serve --executor ray``: its sweep runs on the cluster's workers
(a Ray cluster the server starts inside itself) and ends as a local one does."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.browser.test_browser_compare import fill
from tests.browser.test_browser_studio import open_page
from tests.support.live_server import studio_in_chromium

pytestmark = [pytest.mark.cluster, pytest.mark.browser]


def test_a_compare_tab_sweep_runs_on_the_operators_cluster(tmp_path: Path) -> None:
    db = tmp_path / "studio.db"
    args = ("--executor", "ray", "--ray-address", "local", "--workers", "2")
    with studio_in_chromium(db, env={"RAY_USAGE_STATS_ENABLED": "0"}, args=args) as studio:
        page = open_page(studio)
        page.get_by_role("tab", name="Compare").click()
        fill(page, "as-sweep-models", "expert,random")
        fill(page, "as-sweep-envs", "gridworld")
        fill(page, "as-sweep-seeds", "0-3")
        fill(page, "as-sweep-max", "20")
        fill(page, "as-sweep-name", "on-ray")
        page.click("#as-sweep-start")
        page.locator("#as-sweep-progress", has_text="8 of 8 episodes · complete on Ray cluster").wait_for(
            timeout=120_000
        )
        page.locator("#as-sweep-results table tbody tr").nth(1).wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "compare-on-ray.png"), full_page=True)
    with open_store(db) as store:
        record = store.sweeps.get("on-ray")
        episodes = store.sweeps.episodes_of(record.id)
        assert sorted(e.sweep_cell for e in episodes) == list(range(8))
        assert all(e.complete for e in episodes)
