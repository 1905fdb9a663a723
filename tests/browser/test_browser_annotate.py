"""Annotating in a real browser: keyboard-only judging, undo, downloads, two annotators at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.support.live_server import server_log, studio_in_chromium

pytestmark = pytest.mark.browser
RATIONALE = '<img src=x onerror="window.__xss=5"> <b>left</b> reaches the key & stays'


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    with studio_in_chromium(tmp_path_factory.mktemp("annotate") / "studio.db") as studio:
        yield studio


def new_page(studio):
    page = studio["browser"].new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True).new_page()
    page.goto(studio["url"])
    page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
    return page


def sample_candidates(page, steps: int, candidates: int = 3) -> None:
    """As a new user would: K = 3 candidates in the episode panel, then Step."""
    page.get_by_text("Sampling").click()
    box = page.locator("#as-candidates input[type=number]")
    # K > 1 turns sampling on (a round trip): once the temperature shows it, the page holds K. A box
    # filled the instant the accordion opens may not be listened to yet: type again until it is.
    for _attempt in range(5):
        box.fill(str(candidates))
        box.press("Enter")
        try:
            page.wait_for_function(
                "document.querySelector('#as-temperature input[type=number]').value === '0.7'", timeout=6_000
            )
            break
        except Exception:  # noqa: BLE001 - try again; the assertion after the steps says what happened
            continue
    for count in range(1, steps + 1):
        page.click("#as-step")
        page.wait_for_function(f"document.querySelectorAll('#as-timeline .as-step').length === {count}", timeout=60_000)
    status = page.inner_text("#as-status")
    assert "error" not in page.inner_html("#as-status"), f"{status}\n{server_log(page.url)}"
    assert page.locator("#as-timeline .as-step .as-meta", has_text=f"{candidates} outputs").count() == steps, (
        page.inner_text("#as-timeline")
    )


def start_annotating(page, name: str) -> None:
    page.get_by_role("tab", name="Annotate").click()
    # The tab renders its queue when it opens; type only after that render, or it may land last.
    page.locator("#as-progress", has_text="judged").wait_for(timeout=30_000)
    field = page.locator("#as-annotator input, #as-annotator textarea").first
    # That render can still land after the name is typed and clear it (seen under a loaded
    # machine): type the name again, at most twice more, if the progress line never names it.
    for attempt in range(3):
        field.fill("")
        field.focus()
        page.keyboard.type(name)
        page.keyboard.press("Enter")
        try:
            page.locator("#as-progress", has_text=f"{name}: 0 judged").wait_for(timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                wait_for_progress(page, f"{name}: 0 judged")
    page.keyboard.press("Escape")  # leave the text field: the keys now judge


def wait_for_progress(page, text: str) -> None:
    """Wait for the progress line to say ``text``; a timeout says what it said instead."""
    try:
        page.locator("#as-progress", has_text=text).wait_for(timeout=30_000)
    except Exception as exc:
        raise AssertionError(f"waited for {text!r}; the progress says {page.inner_text('#as-progress')!r}") from exc


def judged(page) -> int:
    return int(page.inner_text("#as-progress").split(":")[1].split("judged")[0])


def press_and_wait(page, key: str, expected: int) -> None:
    page.keyboard.press(key)
    page.wait_for_function(
        f"document.querySelector('#as-progress')?.innerText.includes(': {expected} judged')", timeout=30_000
    )


def test_keyboard_judging_undo_rationale_and_the_dpo_download(studio) -> None:
    page = new_page(studio)
    sample_candidates(page, 3)
    start_annotating(page, "ada")
    total = int(page.inner_text("#as-progress").split(" of ")[1].split()[0])
    assert total >= 3, server_log(page.url)  # the candidates' pairs were queued while stepping: no command line
    page.set_viewport_size({"width": 1280, "height": 800})
    page.wait_for_timeout(300)
    for element in (
        "#as-left",
        "#as-right",
        "#as-judge-left",
        "#as-judge-right",
        "#as-judge-tie",
        "#as-judge-both",
        "#as-skip",
        "#as-undo",
    ):
        box = page.locator(element).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 800, f"{element} is not wholly in view at 1280x800: {box}"

    field = page.locator("#as-rationale textarea")
    field.focus()
    page.keyboard.type(RATIONALE)
    page.keyboard.press("Escape")
    press_and_wait(page, "1", 1)
    message = page.inner_text("#as-annotate-message")
    assert RATIONALE in message  # shown as text
    assert page.locator("#as-annotate-message img, #as-annotate-message b").count() == 0
    press_and_wait(page, "2", 2)
    press_and_wait(page, "u", 1)  # undo brings that pair back
    press_and_wait(page, "2", 2)
    press_and_wait(page, "1", 3)
    assert page.evaluate("window.__xss") is None

    store = open_store(studio["db"])
    mine = store.preferences.annotations(annotator="ada")
    assert len(mine) == 3 and sum(r.rationale == RATIONALE for r in mine) == 1
    page.get_by_role("tab", name="Overview").click()
    page.locator("#as-overview", has_text="3 (as shown").wait_for(timeout=30_000)
    overview = page.inner_text("#as-overview")  # current without pressing its Refresh
    assert "judgements\t3 (as shown: left 2 · right 1" in overview and "ada\t3" in overview, overview
    page.get_by_label("dpo").check()
    page.click("#as-export")
    page.locator("#as-download", has_text="Download dpo.jsonl").wait_for(timeout=30_000)
    with page.expect_download() as download:
        page.click("#as-download")
    rows = [json.loads(line) for line in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
    exported = {row["pair_id"]: row for row in rows}
    assert {r.pair_id for r in mine} <= set(exported)  # left/right judgements: all three are preference rows
    with_rationale = next(r for r in mine if r.rationale)
    assert exported[with_rationale.pair_id]["rationales"] == [RATIONALE]  # verbatim
    assert "Judgements per annotator" in page.inner_text("#as-overview")
    page.close()


def test_two_annotators_at_once_keep_their_own_queues(studio) -> None:
    first, second = new_page(studio), new_page(studio)
    sample_candidates(first, 2)
    start_annotating(first, "bob")
    start_annotating(second, "cy")
    for expected in (1, 2):
        press_and_wait(first, "1", expected)
        press_and_wait(second, "2", expected)
    assert "bob: 2 judged" in first.inner_text("#as-progress") and "cy: 2 judged" in second.inner_text("#as-progress")
    store = open_store(studio["db"])
    bob, cy = store.preferences.annotations(annotator="bob"), store.preferences.annotations(annotator="cy")
    assert len(bob) == 2 and len(cy) == 2 and len({r.pair_id for r in bob}) == 2
    # The name is remembered by the browser: a new page in the same context starts as bob.
    again = first.context.new_page()
    again.goto(studio["url"])
    again.get_by_role("tab", name="Annotate").click()
    wait_for_progress(again, "bob: 2 judged")
    for page in (first, second, again):
        page.close()


def test_step_labels_with_the_keyboard(studio) -> None:
    page = new_page(studio)
    page.click("#as-step")
    page.wait_for_function("document.querySelectorAll('#as-timeline .as-step').length === 1", timeout=60_000)
    page.click("#as-step")
    page.wait_for_function("document.querySelectorAll('#as-timeline .as-step').length === 2", timeout=60_000)
    start_annotating(page, "dee")
    page.get_by_role("tab", name="Step labels").click()
    page.click("#as-label-current")
    page.locator("#as-label-view .as-labelled").first.wait_for(timeout=30_000)
    page.keyboard.press("g")
    page.locator("#as-label-view .as-label-good").wait_for(timeout=30_000)
    page.keyboard.press("b")
    page.locator("#as-label-view .as-label-bad").wait_for(timeout=30_000)
    episode_id = page.locator("#as-label-episode input, #as-label-episode textarea").first.input_value()
    labels = open_store(studio["db"]).preferences.step_labels(episode_id)
    assert [(l.step_index, l.label, l.annotator) for l in labels] == [(0, "good", "dee"), (1, "bad", "dee")]
    page.close()


def test_show_what_each_action_leads_to_forks_the_step_for_both_sides(studio, tmp_path: Path) -> None:
    """A step pair's "Show what each action leads to": both sides' next frames and observations (the
    environment forked at the step), the model's hostile action text shown as text."""
    page = new_page(studio)
    sample_candidates(page, steps=1)
    start_annotating(page, "cora")
    page.click("#as-consequences")
    sides = page.locator("#as-consequences-view .as-consequence")
    sides.nth(1).wait_for(timeout=30_000)
    assert page.locator("#as-consequences-view img.as-consequence-frame").count() == 2
    texts = [sides.nth(i).inner_text() for i in range(2)]
    assert {t.split(":")[0] for t in texts} == {"Left", "Right"}
    assert any("go east →" in t for t in texts)  # the action, then what it leads to
    assert any('onerror="window.__xss=4"' in t and "invalid" in t for t in texts)  # shown, not run
    assert page.evaluate("window.__xss") is None
    page.screenshot(path=str(tmp_path / "consequences.png"), full_page=True)
    page.keyboard.press("1")  # judging moves on: the next pair's consequences are not shown until asked
    page.locator("#as-progress", has_text="cora: 1 judged").wait_for(timeout=30_000)
    assert page.locator("#as-consequences-view .as-consequence").count() == 0
