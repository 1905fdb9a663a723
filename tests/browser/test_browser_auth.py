"""A studio with logins (``serve --auth``): the browser must log in, the API too, and judgements carry
the logged-in user's name whatever a client sends."""

from __future__ import annotations

import httpx
import pytest

from agent_studio.components.auth import hash_password
from agent_studio.storage import open_store
from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio
from tests.support.raw_client import call, handler_of
from tests.support.store_helpers import run_react

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("auth")
    db = folder / "studio.db"
    with open_store(db) as store:
        run_react(store, seed=0, steps=2, candidates=3)
        store.preferences.pairs_from_candidates()
    logins = folder / "logins.txt"
    logins.write_text(
        f"# the team\nada:{hash_password('s3cret ada', iterations=1000)}\nbob:plain-bob\n", encoding="utf-8"
    )
    with running_studio("--model", "none", "--db", str(db), "--auth-file", str(logins)) as url:
        yield {"url": url, "db": db}


def test_the_api_needs_a_login(studio) -> None:
    url = studio["url"]
    config = httpx.get(f"{url}config")
    assert config.status_code == 401  # the app's description itself is behind the login
    with httpx.Client() as anonymous:
        refused = anonymous.post(f"{url}gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"})
        assert refused.status_code == 401
    with httpx.Client() as client:
        assert client.post(f"{url}login", data={"username": "ada", "password": "wrong"}).status_code == 400
        assert client.post(f"{url}login", data={"username": "ada", "password": "s3cret ada"}).status_code == 200
        assert client.get(f"{url}config").status_code == 200


def test_the_browser_logs_in_and_judges_as_the_logged_in_user(studio) -> None:
    from playwright.sync_api import sync_playwright

    url = studio["url"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.get_by_label("username").fill("bob")
            page.get_by_label("password").fill("plain-bob")
            page.get_by_role("button", name="Login").click()
            page.locator("#as-timeline").wait_for(timeout=60_000)
            page.get_by_role("tab", name="Annotate").click()
            page.locator("#as-progress", has_text="bob: 0 judged").wait_for(timeout=30_000)
            field = page.locator("#as-annotator input, #as-annotator textarea").first
            assert field.input_value() == "bob" and field.is_disabled()  # nobody judges in another's name
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("1")
            page.locator("#as-progress", has_text="bob: 1 judged").wait_for(timeout=30_000)
        finally:
            browser.close()
    # A client that sends another name (the widget is disabled, the request is not) still judges as itself.
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}login", data={"username": "ada", "password": "s3cret ada"}).raise_for_status()
        config = client.get(f"{url}config").json()
        tab = "mallory-tab"
        shown = call(
            url, handler_of(config, "as-queue-refresh"), [None, "mallory", "", "", "", ""], client, session=tab
        )
        assert "ada: 0 judged" in shown["output"]["data"][1], shown
        reply = call(
            url,
            handler_of(config, "as-judge-left"),
            [None, "mallory", "", "", "", "", "", [], "—"],
            client,
            session=tab,
        )
        assert reply.get("success") and "ada: 1 judged" in reply["output"]["data"][1], reply
        with open_store(studio["db"]) as store:
            episode_id = store.episodes.summaries()[0].id
        labelled = call(url, handler_of(config, "as-label-good"), [episode_id, 0, "mallory", ""], client)
        assert labelled.get("success"), labelled
    with open_store(studio["db"]) as store:
        assert sorted({a.annotator for a in store.preferences.annotations()}) == ["ada", "bob"]
        assert [(label.step_index, label.annotator) for label in store.preferences.step_labels()] == [(0, "ada")]
