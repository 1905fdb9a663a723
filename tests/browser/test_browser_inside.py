"""Inside the network, in Chromium: make an EAST vector from this environment's stored score-mode
episodes, steer model A with it and see the steered step marked, open the logit lens of the step and
the probe plot; a vector name that is a path is refused in one line and nothing is saved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live_server import server_log, studio_in_chromium

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def test_make_a_vector_steer_a_step_and_look_inside(tmp_path: Path) -> None:
    vectors = tmp_path / "vectors"
    env = {"AGENT_STUDIO_VECTORS": str(vectors), "HF_HUB_OFFLINE": "1"}
    db = tmp_path / "studio.db"
    played = subprocess.run(
        [sys.executable, "app.py", "run", "--env", "gridworld", "--policy", "react", "--model", "default",
         "--action-mode", "score", "--max-steps", "2", "--episodes", "3", "--seed", "0", "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )  # fmt: skip
    assert played.returncode == 0, played.stderr[-2000:]
    with studio_in_chromium(db, model="default", env=env) as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 1100}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline").wait_for(timeout=120_000)
        page.locator("#as-inside").get_by_text("Inside the network").click()
        name = page.locator("#as-inside-name textarea, #as-inside-name input").first
        name.fill("../escape")
        page.click("#as-inside-make")
        page.locator("#as-inside-message", has_text="A vector name is").wait_for(timeout=30_000)
        assert not vectors.exists() or not any(vectors.iterdir())
        name.fill("explore-ui")
        page.click("#as-inside-make")
        (
            page.locator("#as-inside-message", has_text="Saved explore-ui: east, 6 steps read").wait_for(
                timeout=240_000
            ),
            server_log(studio["url"]),
        )
        assert (vectors / "explore-ui.safetensors").is_file()
        page.locator("#as-inside-alpha input").fill("8")
        page.click("#as-inside-use")
        page.locator("#as-inside-message", has_text="Steering set to explore-ui:8").wait_for(timeout=30_000)
        assert page.locator("#as-steer textarea, #as-steer input").first.input_value() == "explore-ui:8"
        page.click("#as-reset")
        page.wait_for_timeout(1000)
        page.click("#as-step")
        badge = page.locator("#as-timeline .as-step .as-steered").first
        badge.wait_for(timeout=180_000)
        assert badge.inner_text().strip() == "steered explore-ui@15 α=8"
        page.click("#as-inside-both")
        page.locator("#as-inside-both-view .as-side-title", has_text="without steering").wait_for(timeout=180_000)
        assert page.locator("#as-inside-both-view .as-side").count() == 2
        assert page.locator("#as-inside-both-view .as-side .as-steered").count() == 1  # only the steered side
        page.click("#as-inside-lens")
        page.locator("#as-inside-lens-plot .js-plotly-plot").wait_for(timeout=120_000)
        assert "Logit lens of step 0" in page.locator("#as-inside-lens-plot").inner_text()
        page.click("#as-inside-probe")
        page.locator("#as-inside-message", has_text="agent_row: best layer").wait_for(timeout=300_000)
        page.locator("#as-inside-probe-plot .js-plotly-plot").wait_for(timeout=30_000)
        page.locator("#as-inside").screenshot(path=str(tmp_path / "inside.png"))
