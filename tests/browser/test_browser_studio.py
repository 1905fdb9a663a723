"""The studio as a user drives it: Playwright and Debian's Chromium against the running app."""

from __future__ import annotations

import re

import pytest

from tests.support.live_server import studio_in_chromium

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """One studio for the module; model A of new sessions is the scripted XSS model (fast to start)."""
    with studio_in_chromium(tmp_path_factory.mktemp("browser") / "studio.db") as studio:
        yield studio


def open_page(studio, width: int = 1280, height: int = 800):
    page = studio["browser"].new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(studio["url"])
    page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)  # gridworld is ready, nothing stepped
    return page


def step_count(page) -> int:
    return page.locator("#as-timeline .as-step").count()


def wait_steps(page, count: int, timeout: float = 120_000) -> None:
    page.wait_for_function(f"document.querySelectorAll('#as-timeline .as-step').length === {count}", timeout=timeout)


def load_default_model(page, message: str = "Loaded") -> None:
    """Load `default` into slot A from the Models tab and wait for the panel to say so."""
    page.get_by_role("tab", name="Models").click()
    page.locator("#as-model-a input, #as-model-a textarea").first.fill("default")
    page.click("#as-load-a")
    page.locator("#as-model-message-a", has_text=message).wait_for(timeout=180_000)


def reset_to_the_default_model(page) -> None:
    """Reset, and wait for that reset's own render (the page already shows an empty episode)."""
    page.click("#as-reset")
    page.locator("#as-timeline .as-episode-head", has_text="SmolLM2-135M-Instruct").wait_for(timeout=30_000)
    page.locator("#as-timeline .as-empty").wait_for(timeout=30_000)


def signals_points(page) -> int:
    return page.evaluate(
        "() => { const p = document.querySelector('#as-signals .js-plotly-plot'); return p ? p.data.find(t => t.name.startsWith('reward')).x.length : -1; }"
    )


def test_default_model_three_steps_trace_plots_and_fork(studio) -> None:
    page = open_page(studio)
    load_default_model(page, "Loaded HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "LlamaForCausalLM" in page.inner_text("#as-card-a")

    page.get_by_role("tab", name="Episode", exact=True).click()
    reset_to_the_default_model(page)
    page.click("#as-step")
    wait_steps(page, 1)
    page.locator("#as-status", has_text="step 1 of").wait_for(timeout=30_000)  # that step's render is complete
    # The shortcut clicks Step only while it is enabled (not mid-step); under load it is re-enabled a moment later.
    page.wait_for_function("!document.querySelector('#as-step').disabled", timeout=30_000)
    page.keyboard.press("s")  # the keyboard shortcut
    wait_steps(page, 2)
    page.click("#as-step")
    wait_steps(page, 3)
    header = page.inner_text("#as-timeline .as-episode-head")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in header and "3 steps" in header
    assert page.locator("#as-timeline .as-tok").count() > 10  # coloured tokens from the real model
    assert page.locator("#as-frame img").count() == 1

    page.get_by_role("tab", name="Plots").click()
    page.wait_for_function(
        "() => { const p = document.querySelector('#as-signals .js-plotly-plot'); return p && p.data.length > 0; }",
        timeout=30_000,
    )
    assert signals_points(page) == 3
    page.get_by_role("tab", name="Episode", exact=True).click()
    page.click("#as-step")
    wait_steps(page, 4)
    page.get_by_role("tab", name="Plots").click()
    page.wait_for_function(
        "() => document.querySelector('#as-signals .js-plotly-plot').data.find(t => t.name.startsWith('reward')).x.length === 4",
        timeout=30_000,
    )

    # Fork from step 1: steps 0 stays, the next step is a new step 1.
    page.get_by_role("tab", name="Episode", exact=True).click()
    slider_box = page.locator("#as-selected input[type=number]")
    slider_box.fill("1")
    slider_box.press("Enter")
    page.wait_for_function("document.querySelector('#as-timeline .as-selected')?.dataset.step === '1'", timeout=30_000)
    page.click("#as-fork")
    wait_steps(page, 1)
    assert "fork of" in page.inner_text("#as-timeline .as-episode-head")
    page.click("#as-step")
    wait_steps(page, 2)
    page.close()


def test_model_and_user_text_is_shown_as_text_and_runs_nothing(studio) -> None:
    page = open_page(studio)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.click("#as-step")  # model A is the scripted model whose thought carries <img onerror> and <script>
    wait_steps(page, 1)
    page.click("#as-step")
    wait_steps(page, 2)
    timeline = page.locator("#as-timeline")
    text = timeline.inner_text()
    assert '<img src=x onerror="window.__xss=1">' in text.replace("\u200b", "") or "onerror" in text
    assert "<script>window.__xss=2</script>" in text
    assert (
        timeline.locator("img").count() == 0
        and timeline.locator("script").count() == 0
        and timeline.locator("b").count() == 0
    )
    # A person's typed action with markup: recorded as an invalid action, shown as text.
    policy = page.locator("#as-policy input")
    policy.click()
    page.get_by_role("option", name="Human (you pick or type each action)").click()
    action = page.locator("#as-human-action input")
    action.fill('<img src=x onerror="window.__xss=3">')
    action.press("Enter")
    page.click("#as-take-action")
    wait_steps(page, 3)
    assert "invalid" in page.locator("#as-timeline .as-step").nth(2).inner_text()
    slider_box = page.locator("#as-selected input[type=number]")
    slider_box.fill("0")
    slider_box.press("Enter")
    page.wait_for_function("document.querySelector('#as-timeline .as-selected')?.dataset.step === '0'", timeout=30_000)
    page.click("#as-show-prompt")
    page.locator("#as-prompt .as-msg").first.wait_for(timeout=30_000)
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert page.locator("#as-prompt img, #as-candidates-view img").count() == 0
    page.close()


def test_empty_state_and_layout_at_1920(studio) -> None:
    page = open_page(studio, 1920, 1080)
    empty = page.inner_text("#as-timeline .as-empty")
    assert "Press Step" in empty and "gridworld (seed 0) is ready for the react policy with the model" in empty
    step_box, timeline_box = page.locator("#as-step").bounding_box(), page.locator("#as-timeline").bounding_box()
    assert step_box["y"] < 1080 and timeline_box["x"] > step_box["x"]  # controls left, trace right, Step above the fold
    page.close()


def test_named_api_endpoints(studio) -> None:
    from gradio_client import Client

    client = Client(studio["url"], verbose=False)
    card = client.predict("B", "default", "auto", "auto", api_name="/load_model")
    assert card["architecture"] == "LlamaForCausalLM"
    reset = client.predict("gridworld", '{"size": 7}', 3, "expert", api_name="/reset")
    assert reset["seed"] == 3 and "go north" in reset["valid_actions"]
    step = client.predict("", api_name="/step")
    assert step["step"]["index"] == 0 and step["step"]["actor"] == "expert" and "frame" not in step["step"]
    human = client.predict("go west", api_name="/step")
    assert human["step"]["actor"] == "human"
    summary = client.predict(0, api_name="/run")
    assert summary["steps"] >= 2 and summary["end_reason"]
    episode = client.predict(api_name="/get_episode")
    assert episode["id"] == summary["episode_id"] and len(episode["steps"]) == summary["steps"]
    failed = client.predict("nowhere", "{}", 0, "expert", api_name="/reset")
    assert set(failed) == {"error"} and "Unknown environment 'nowhere'" in failed["error"]


def test_attention_view_for_a_step_of_the_default_model(studio) -> None:
    page = open_page(studio)
    page.click("#as-step")  # model A of a new session is the scripted model: it has no attention
    wait_steps(page, 1)
    page.get_by_text("Attention: what the model looked at").click()
    page.click("#as-attention-show")
    page.locator("#as-attention .as-message", has_text="cannot show its attention").wait_for(timeout=30_000)

    load_default_model(page)
    page.get_by_role("tab", name="Episode", exact=True).click()
    reset_to_the_default_model(page)
    page.click("#as-step")
    wait_steps(page, 1)
    page.click("#as-attention-show")
    page.locator("#as-attention-strip .as-att").first.wait_for(timeout=120_000)
    assert page.locator("#as-attention-strip .as-seg", has_text="observation").count() >= 1
    page.wait_for_function(
        "() => { const p = document.querySelector('#as-attention-grid .js-plotly-plot'); return p && p.data.length >= 2; }",
        timeout=30_000,
    )  # observation and instruction (no history at step 0)
    assert page.locator("#as-attention-frame img").count() == 1  # the heatmap over the gridworld frame
    assert "on the current observation" in page.inner_text("#as-attention-perception")
    assert "30 layers × 9 heads" in page.inner_text("#as-attention .as-message")
    page.close()


def test_episode_browser_opens_read_only_and_forks(studio) -> None:
    page = open_page(studio)
    page.click("#as-step")
    wait_steps(page, 1)
    page.click("#as-step")
    wait_steps(page, 2)
    page.get_by_role("tab", name="Episodes").click()
    page.click("#as-browse")
    id_cell = page.locator("#as-episodes .body-cell").filter(has_text=re.compile(r"[0-9a-f]{32}")).first
    id_cell.wait_for(timeout=30_000)
    id_cell.click()
    page.wait_for_function(
        "() => (document.querySelector('#as-episode-id input, #as-episode-id textarea')?.value || '').length === 32",
        timeout=30_000,
    )
    page.click("#as-open")
    page.locator("#as-timeline .as-badge", has_text="read-only").wait_for(timeout=30_000)
    page.click("#as-step")  # a stored episode cannot be stepped: it says to fork
    page.locator("#as-status", has_text="read-only").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Episodes").click()
    page.click("#as-browser-fork")  # fork at step 0
    page.locator("#as-timeline .as-episode-head", has_text="fork of").wait_for(timeout=30_000)
    page.click("#as-step")
    wait_steps(page, 1)
    page.close()


def test_stop_interrupts_a_run_of_the_default_model(studio) -> None:
    page = open_page(studio)
    load_default_model(page)
    page.get_by_role("tab", name="Episode", exact=True).click()
    reset_to_the_default_model(page)
    page.click("#as-run")  # run to the end: up to 100 model steps
    wait_steps(page, 1)
    page.click("#as-stop")
    page.wait_for_timeout(6_000)  # a step takes about 1.3 s: a run that ignored Stop would be several steps further
    count = step_count(page)
    assert 1 <= count <= 3
    page.wait_for_timeout(3_000)
    assert step_count(page) == count  # stopped, not merely slow
    assert "Episode over" not in page.inner_text("#as-status")
    # Stop mid-generation leaves no step: the stored episode holds exactly the finished steps.
    from agent_studio.storage import open_store

    with open_store(studio["db"]) as store:
        newest = store.episodes.get(store.episodes.summaries(limit=1)[0].id)
    assert newest.length == count
    assert all("interrupted" not in s.extra.get("finish_reasons", []) for s in newest.steps)
    page.close()
