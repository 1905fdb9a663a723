"""Bring your own episodes, in Chromium: import a chat log in the Episodes tab (from the operator's
folder), score it under the default model and see its tokens coloured, search for a word, tag a step,
run a rubric judge and open the step it cites."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.support import recorded
from tests.support.live_server import server_log, studio_in_chromium

pytestmark = pytest.mark.browser


def click_row(page, table: str, text: str) -> None:
    page.locator(f"{table} .body-cell", has_text=text).first.click()


def test_import_score_search_tag_judge_and_open_a_cited_step(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    folder.mkdir()
    recorded.chat_jsonl(folder)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("{}")
    with studio_in_chromium(tmp_path / "studio.db", model="default", args=("--import-dir", str(folder))) as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 1000}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline").wait_for(timeout=120_000)
        page.get_by_role("tab", name="Episodes").click()
        page.locator("#as-import").get_by_text("Import episodes recorded elsewhere").click()
        # A path outside the operator's folder is refused in one line, and nothing is stored.
        page.locator("#as-import-path textarea, #as-import-path input").first.fill(str(outside))
        page.click("#as-import-go")
        page.locator("#as-find-message", has_text="not under a folder the studio imports from").wait_for(timeout=30_000)
        page.locator("#as-import-path textarea, #as-import-path input").first.fill("transcripts.jsonl")
        page.click("#as-import-go")
        page.locator("#as-find-message", has_text="Imported 2 episodes (3 steps) from chat").wait_for(timeout=60_000)
        page.locator("#as-episodes .body-cell", has_text="imported:chat").first.wait_for(timeout=30_000)

        # Full-text search: the step that has the words, clicked, picks its episode and step.
        page.locator("#as-words textarea, #as-words input").first.fill("capital Paris")
        page.click("#as-browse")
        page.locator("#as-count", has_text="1 episode match").wait_for(timeout=30_000)
        page.locator("#as-hits .body-cell", has_text="The capital of France is Paris").first.wait_for(timeout=30_000)
        click_row(page, "#as-hits", "The capital of France is Paris")
        page.wait_for_function(
            "() => document.querySelector('#as-episode-id textarea, #as-episode-id input').value.length === 32"
        )
        episode_id = page.locator("#as-episode-id textarea, #as-episode-id input").first.input_value()
        assert page.locator("#as-step input").first.input_value() == "1"

        page.click("#as-score-a")
        page.locator("#as-find-message", has_text="Scored 2 steps under HuggingFaceTB/SmolLM2-135M-Instruct").wait_for(
            timeout=180_000
        )
        page.locator("#as-tag textarea, #as-tag input").first.fill("answers")
        page.click("#as-tag-go")
        page.locator("#as-marks .as-tag", has_text="answers").wait_for(timeout=30_000)

        page.locator("#as-rubric").get_by_text("Rubric judge").click()
        page.click("#as-judge-go")
        page.locator("#as-verdicts .as-verdicts").wait_for(timeout=180_000)
        page.screenshot(path=str(tmp_path / "episodes-tab.png"), full_page=True)
        links = page.locator("#as-verdicts .as-cites a")
        assert links.count() >= 1, page.inner_text("#as-verdicts")
        href = links.first.get_attribute("href")
        assert href.startswith(f"?open={episode_id}&step=")
        cited = int(href.rsplit("=", 1)[1])
        assert 0 <= cited < 2

        # The cited step opens in a new page: read-only, at that step, its tokens coloured by the model.
        with page.context.expect_page() as opened:
            links.first.click()
        step_page = opened.value
        step_page.locator("#as-status", has_text=f"Opened read-only at step {cited}").wait_for(timeout=60_000)
        step_page.locator("#as-timeline .as-tok").first.wait_for(timeout=30_000)
        assert step_page.locator("#as-timeline .as-tok").count() > 5
        step_page.screenshot(path=str(tmp_path / "cited-step.png"), full_page=True)
        # A hostile link is one line of text: no episode, nothing run.
        step_page.goto(studio["url"] + "?open=%3Cimg%20src%3Dx%20onerror%3D%22window.__xss%3D1%22%3E&step=9")
        step_page.locator("#as-status", has_text="No stored episode with id").wait_for(timeout=60_000)
        assert step_page.evaluate("() => window.__xss") is None
        assert step_page.locator("#as-status img").count() == 0
    with open_store(studio["db"]) as store:
        assert store.search.tags_of(episode_id) == [(1, "answers")], server_log(studio["url"])
        (verdict,) = store.rubrics.of_episode(episode_id)
        assert verdict.judge == "HuggingFaceTB/SmolLM2-135M-Instruct" and verdict.label in ("yes", "no")
        assert all(0 <= n < 2 for n in verdict.citations)
        assert len(store.cross_scores.of_episode(episode_id)) == 2
