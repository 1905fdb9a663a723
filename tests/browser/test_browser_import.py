"""An imported episode file with markup in every text field, opened in every view of a real browser.

Numbers that are markup are refused by the import (see test_cli); text is stored as it is and
must be shown as text everywhere: the trace, candidates, prompt, plots, episode list, step
labels, the annotation pair and the overview. Nothing it carries may run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent_studio.storage import open_store
from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, running_studio
from tests.support.store_helpers import run_react

pytestmark = pytest.mark.browser
MARKUP = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
KEEP = {"id", "parent_id", "started_at", "ended_at", "frame", "state", "schema_version", "origin"}


def poison(value, key: str = ""):
    """Every text in the record (and every key of its free-form objects) with markup around it."""
    if key in KEEP:
        return value
    if isinstance(value, str):
        return f"{MARKUP}{value}{MARKUP}"
    if isinstance(value, list):
        return [poison(item) for item in value]
    if isinstance(value, dict):
        structural = key in ("", "steps", "candidates", "tokens") or {"index", "raw", "id", "text"} & set(value)
        return {
            (k if structural or k in ("role", "content") else f"{MARKUP}{k}"): poison(v, k) for k, v in value.items()
        }
    return value


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("hostile")
    with open_store(folder / "source.db") as source:
        episode = run_react(source, seed=0, steps=3, candidates=3)
    data = poison(json.loads(episode.to_json()))
    data["steps"] = [dict(step, index=number) for number, step in enumerate(data["steps"])]
    (folder / "hostile.jsonl").write_text(json.dumps(data) + "\n", encoding="utf-8")
    db = folder / "studio.db"
    done = subprocess.run(
        [sys.executable, "app.py", "import", str(folder / "hostile.jsonl"), "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with open_store(db) as store:
        assert store.preferences.pairs_from_candidates().created > 0
        store.preferences.label_step(episode.id, 1, "ada", "good", note=MARKUP)
        stored = store.episodes.get(episode.id)
    assert stored.policy.startswith(MARKUP) and stored.steps[0].tokens[0].text.startswith(MARKUP)  # stored as it came
    with running_studio("--model", "none", "--db", str(db)) as url:
        yield {"url": url, "episode_id": episode.id}


def test_markup_from_an_imported_file_is_text_in_every_view(hostile) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(hostile["url"])
            page.locator("#as-timeline").wait_for(timeout=60_000)
            # The episode list, then the episode opened read-only: timeline, candidates, prompt.
            page.get_by_role("tab", name="Episodes").click()
            page.click("#as-browse")
            page.locator("#as-episodes", has_text="window.__xss").first.wait_for(timeout=30_000)
            field = page.locator("#as-episode-id input, #as-episode-id textarea").first
            field.fill(hostile["episode_id"])
            page.click("#as-open")
            page.locator("#as-timeline .as-badge", has_text="read-only").wait_for(timeout=30_000)
            page.click("#as-show-prompt")
            page.locator("#as-prompt .as-msg").first.wait_for(timeout=30_000)
            shown = (
                page.inner_text("#as-timeline") + page.inner_text("#as-candidates-view") + page.inner_text("#as-prompt")
            )
            assert shown.count("window.__xss=1") >= 10  # the markup is there, as text
            page.get_by_role("tab", name="Plots").click()
            page.wait_for_timeout(2_000)
            # Step labels, with a note and every step of the hostile trajectory.
            page.get_by_role("tab", name="Annotate").click()
            name = page.locator("#as-annotator input, #as-annotator textarea").first
            name.fill("bo")
            name.press("Enter")
            page.locator("#as-progress", has_text="bo: 0 judged").wait_for(timeout=30_000)
            assert "window.__xss=1" in page.inner_text("#as-left") + page.inner_text("#as-right") + page.inner_text(
                "#as-context"
            )
            page.get_by_role("tab", name="Step labels").click()
            labels = page.locator("#as-label-episode input, #as-label-episode textarea").first
            labels.fill(hostile["episode_id"])
            labels.press("Enter")
            page.locator("#as-label-view .as-labelled").first.wait_for(timeout=30_000)
            page.get_by_role("tab", name="Overview").click()
            page.get_by_role("button", name="Refresh").last.click()
            page.wait_for_timeout(1_000)
            scripts_in_views = page.evaluate(
                "document.querySelectorAll('.as-timeline script, .as-cands script, .as-prompt script, .as-side script, .as-context script').length"
            )
            where = page.evaluate(
                "[...document.querySelectorAll('img[src=\"x\"]')].map(e => (e.parentElement?.className || '') + ' | ' + e.outerHTML)"
            )
            assert page.evaluate("window.__xss") is None and dialogs == []
            assert (
                scripts_in_views == 0 and where == []
            )  # not even an inert <img> made it into the page (a toast once did)
        finally:
            browser.close()
