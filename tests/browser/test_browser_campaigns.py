"""Annotating as a team in the browser: two logged-in annotators judge their own assignments with the
guidelines beside the pair, a third person settles their disagreement in the Adjudicate view, and a
campaign that hides consequences never sends them to the page."""

from __future__ import annotations

import httpx
import pytest

from agent_studio.storage import open_store
from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio
from studio.scaling.values import estimate_step_values, rollout_policy_factory
from tests.support.raw_client import call, handler_of
from tests.support.store_helpers import run_react

pytestmark = pytest.mark.browser

GUIDELINES = "## Prefer progress\n\nPick the output that moves **toward the goal**. <script>alert('g')</script>"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("campaigns")
    db = folder / "studio.db"
    with open_store(db) as store:
        episodes = [run_react(store, seed=seed, steps=2, candidates=3) for seed in range(2)]
        store.preferences.pairs_from_candidates()
        for episode in episodes:  # stored Monte Carlo values, shown beside the consequences
            for index in range(episode.length):
                store.preferences.save_values(
                    estimate_step_values(
                        episode, index, rollout_policy_factory("random"), rollout_policy="random", rollouts=3, horizon=4
                    )
                )
        store.campaigns.create(
            "team", overlap=2, annotators=["ada", "bob"], limit=2, guidelines=GUIDELINES, taxonomy=["progress", "loop"]
        )
        store.campaigns.create("blind", overlap=1, annotators=["ada", "bob"], limit=2, show_consequences=False)
    logins = folder / "logins.txt"
    logins.write_text("ada:ada-pass\nbob:bob-pass\nlead:lead-pass\n", encoding="utf-8")
    with (
        running_studio("--model", "none", "--db", str(db), "--auth-file", str(logins)) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield {"url": url, "db": db, "browser": browser, "folder": folder}
        finally:
            browser.close()


def _logged_in(studio: dict, user: str):  # noqa: ANN202 - a Playwright page
    context = studio["browser"].new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(studio["url"])
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(f"{user}-pass")
    page.get_by_role("button", name="Login").click()
    page.locator("#as-timeline").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#as-progress", has_text=f"{user}:").wait_for(timeout=30_000)
    return page


def _pick_campaign(page, name: str) -> None:  # noqa: ANN001
    page.locator("#as-campaign input").click()
    page.get_by_role("option", name=name, exact=True).click()


def _side_actions(page) -> list[str]:  # noqa: ANN001
    """The action each shown side's consequences start from (``Left: ACTION → …``)."""
    texts = page.locator("#as-consequences-view .as-consequence").all_inner_texts()
    return [t.split(": ", 1)[1].split(" →")[0] for t in texts]


def test_two_annotators_judge_their_assignments_and_an_adjudicator_settles_the_disagreement(studio) -> None:
    ada, bob = _logged_in(studio, "ada"), _logged_in(studio, "bob")
    for page in (ada, bob):  # side by side: both at once, each with the guidelines beside the pair
        _pick_campaign(page, "team")
    for page, user in ((ada, "ada"), (bob, "bob")):
        page.locator("#as-progress", has_text=f"{user}: 0 judged of 2 assigned in team").wait_for(timeout=30_000)
        guidelines = page.locator("#as-guidelines")
        guidelines.locator("h2", has_text="Prefer progress").wait_for(timeout=30_000)
        assert "version 1" in guidelines.inner_text()
        assert guidelines.locator("script").count() == 0 and "<script>" in guidelines.inner_text()
        assert page.locator("#as-tags label").all_inner_texts() == ["progress", "loop"]  # the campaign's taxonomy
    # What each action leads to: both next frames, in a campaign that shows them.
    ada.click("#as-consequences")
    ada.locator("#as-consequences-view img.as-consequence-frame").nth(1).wait_for(timeout=60_000)
    assert ada.locator("#as-consequences-view .as-consequence").count() == 2
    with open_store(studio["db"]) as store:  # each side's stored Q, matched by its action
        pair = store.preferences.pair(store.campaigns.queue("team", "ada")[0].pair_id)
        stored = {v.action: v.q for v in store.preferences.latest_step_values(pair.left.episode_id, pair.step_index)}
    shown = ada.locator("#as-consequences-view .as-consequence-value").all_inner_texts()
    assert len(shown) == 2 and all(text.startswith("stored Q ") for text in shown)
    assert sorted(float(t.split()[2]) for t in shown) == pytest.approx(
        sorted(round(stored[a], 3) for a in _side_actions(ada)), abs=1e-3
    )
    ada.screenshot(path=str(studio["folder"] / "ada.png"), full_page=True)
    for page, user, button in ((ada, "ada", "#as-judge-left"), (bob, "bob", "#as-judge-right")):
        for judged in (1, 2):
            page.click(button)
            page.locator("#as-progress", has_text=f"{user}: {judged} judged of 2").wait_for(timeout=30_000)
    with open_store(studio["db"]) as store:
        items = store.campaigns.pair_ids("team")
        votes = store.campaigns.votes("team")
        assert sorted(votes) == sorted(items) and all(sorted(v) == ["ada", "bob"] for v in votes.values())
        assert len(store.campaigns.disagreements("team")) == 2  # left against right, as shown, on both
    # The adjudicator sees both judgements side by side and decides; the originals stay.
    lead = _logged_in(studio, "lead")
    lead.get_by_role("tab", name="Adjudicate").click()
    _pick_campaign(lead, "team")
    judgements = lead.locator("#as-adjudicate-judgements .as-judgement")
    judgements.nth(1).wait_for(timeout=30_000)
    assert sorted(t.split(":")[0] for t in judgements.all_inner_texts()) == ["ada", "bob"]
    assert "Left is better" in judgements.all_inner_texts()[0] + judgements.all_inner_texts()[1]
    lead.screenshot(path=str(studio["folder"] / "adjudicate.png"), full_page=True)
    for _ in range(2):
        lead.locator("#as-adjudicate-rationale textarea").fill("the goal is east")
        lead.click("#as-decide-left")
        lead.locator("#as-adjudicate-message", has_text="Decided by lead").wait_for(timeout=30_000)
    lead.locator("#as-adjudicate-context", has_text="No disagreement is waiting").wait_for(timeout=30_000)
    lead.get_by_role("tab", name="Overview").click()  # the campaign on its own, following the decisions
    lead.click("#as-export")
    lead.locator("#as-overview", has_text="dpo of campaign team: 2 records; 2 pairs as adjudicated").wait_for(
        timeout=30_000
    )
    with open_store(studio["db"]) as store:
        decisions = store.campaigns.adjudications("team")
        assert sorted(decisions) == sorted(items)
        assert {(d.adjudicator, d.rationale) for d in decisions.values()} == {("lead", "the goal is east")}
        for pair_id in items:  # left as shown is ada's judgement, in the store's terms
            ada_choice = store.campaigns.votes("team")[pair_id]["ada"]
            assert decisions[pair_id].choice == ada_choice
        assert len(store.preferences.annotations()) == 4


def test_a_campaign_that_hides_consequences_never_sends_them(studio) -> None:
    ada = _logged_in(studio, "ada")
    _pick_campaign(ada, "blind")
    ada.locator("#as-progress", has_text="in blind").wait_for(timeout=30_000)
    ada.locator("#as-left").wait_for(timeout=30_000)
    assert not ada.locator("#as-consequences").is_visible()
    assert ada.locator("#as-consequences-view .as-consequence, img.as-consequence-frame").count() == 0
    # Nor does a client that calls the handler itself get them: the server refuses.
    url = studio["url"]
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}login", data={"username": "ada", "password": "ada-pass"}).raise_for_status()
        config = client.get(f"{url}config").json()
        tab = "curious-tab"
        shown = call(url, handler_of(config, "as-queue-refresh"), [None, "", "", "", "", "blind"], client, session=tab)
        assert "in blind" in shown["output"]["data"][1], shown
        reply = call(url, handler_of(config, "as-consequences"), [None], client, session=tab)
        view = reply["output"]["data"][0]
        assert "does not show annotators" in view and "as-consequence-frame" not in view, reply
        hostile = "<img src=x onerror=alert(1)>"
        refused = call(
            url, handler_of(config, "as-queue-refresh"), [None, "", "", "", "", hostile], client, session="x"
        )
        message = refused["output"]["data"][6]
        assert "No campaign named" in message and "<img" not in message and "&lt;img" in message, refused
