"""Presentation mode in a real browser: /?present=EPISODE plays a stored episode on a clean stage
(Space pauses, the arrows step, it plays on by itself to the end); /?present=live steps the page's
own episode; model text stays text; a bad id is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.agents.scripted import ExpertPolicy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from tests.support.live_server import studio_in_chromium

pytestmark = pytest.mark.browser
HOSTILE = '<img src=x onerror="window.__pwned=1">'


def stage(page):
    return page.locator("#as-present-view .as-present-stage")


def test_a_stored_episode_plays_on_the_stage_and_a_live_one_steps(tmp_path: Path) -> None:
    db = tmp_path / "studio.db"
    with open_store(db) as store:
        runner = EpisodeRunner("gridworld", ExpertPolicy(), config=RunnerConfig(record_frames=False))
        runner.reset(seed=3)
        episode = runner.run()
        episode.steps[0].thought = HOSTILE
        store.episodes.save(episode)
    with studio_in_chromium(db) as studio:
        page = studio["browser"].new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{studio['url']}?present={episode.id}")
        stage(page).wait_for(timeout=60_000)
        assert page.locator("#as-tab-compare").count() == 0 or not page.locator("#as-tab-compare").is_visible()
        assert stage(page).get_attribute("data-index") == "0" and stage(page).get_attribute("data-state") == "playing"
        assert HOSTILE in page.inner_text("#as-present-view") and page.evaluate("window.__pwned") is None
        assert page.locator("#as-present-view img").count() == 1  # the frame, drawn from the snapshot
        assert page.evaluate("document.querySelector('#as-present-view img').naturalWidth") > 0
        page.keyboard.press(" ")
        page.locator("#as-present-view .as-present-stage[data-state='paused']").wait_for(timeout=30_000)
        paused_at = int(stage(page).get_attribute("data-index"))
        page.keyboard.press("ArrowRight")
        page.locator(f"#as-present-view .as-present-stage[data-index='{paused_at + 1}']").wait_for(timeout=30_000)
        page.keyboard.press("ArrowLeft")
        page.locator(f"#as-present-view .as-present-stage[data-index='{paused_at}']").wait_for(timeout=30_000)
        # Fastest pace, play: it reaches the end and stops there, saying how it ended.
        page.locator("#as-present-pace input[type='number']").fill("0.5")
        page.locator("#as-present-pace input[type='number']").press("Enter")
        page.click("#as-present-play")  # (Space would go to the number field, which has the focus)
        end = page.locator(f"#as-present-view .as-present-stage[data-index='{episode.length}']")
        end.wait_for(timeout=60_000)
        assert "success" in end.inner_text() and f"after {episode.length} steps" in end.inner_text()
        page.locator("#as-present-view .as-present-stage[data-state='paused']").wait_for(timeout=30_000)

        # The page's own episode, stepped by the model in slot A (the scripted model: hostile text).
        live = studio["browser"].new_page(viewport={"width": 1280, "height": 800})
        live.goto(f"{studio['url']}?present=live")
        live.locator("#as-present-view .as-present-stage[data-index='1']").wait_for(timeout=60_000)
        assert "step 2 of 2" in stage(live).inner_text() and live.evaluate("window.__pwned") is None
        assert live.locator("#as-present-view img").count() == 1

        missing = studio["browser"].new_page()
        missing.goto(f"{studio['url']}?present={'f' * 32}")
        missing.locator("#as-present-view", has_text=f"No stored episode with id '{'f' * 32}'.").wait_for(
            timeout=60_000
        )
