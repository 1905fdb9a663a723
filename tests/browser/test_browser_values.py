"""The Values view in Chromium: estimate Q for a step's outputs, see the bars, make pairs from them,
and find them in Annotate as source mc."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.support.live_server import server_log, studio_in_chromium
from tests.browser.test_browser_annotate import sample_candidates, start_annotating

pytestmark = pytest.mark.browser


def test_values_of_a_steps_outputs_become_pairs_to_verify(tmp_path: Path) -> None:
    with studio_in_chromium(tmp_path / "studio.db") as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 900}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        # Seed 4, where going east shortens the way to the goal (10 steps to 9).
        page.locator("#as-seed input").fill("4")
        page.click("#as-reset")
        page.locator("#as-timeline .as-episode-head", has_text="seed 4").wait_for(timeout=30_000)
        # The scripted model A: two outputs at the step, "go east" (taken) and an invalid one that
        # leaves the agent where it is.
        sample_candidates(page, 1, candidates=2)

        page.get_by_text("Values: Monte Carlo Q").click()  # defaults: the expert, 4 rollouts, discount 0.95, gap 0
        page.click("#as-values-estimate")
        page.locator("#as-values-message", has_text="highest Q: taken").wait_for(timeout=60_000)
        assert "2 outputs × 4 rollouts (expert-m4-end-g0.95)" in page.inner_text("#as-values-message")
        page.wait_for_function(
            "() => { const p = document.querySelector('#as-values-bars .js-plotly-plot'); return p && p.data[0].x.length === 2; }",
            timeout=30_000,
        )
        bars = page.evaluate("() => document.querySelector('#as-values-bars .js-plotly-plot').data[0].x")
        assert bars == pytest.approx([0.95**9, 0.95**10])  # the goal 9 steps after the action, or 10
        assert page.locator("#as-values-curve .js-plotly-plot").count() == 1

        page.click("#as-values-pairs")
        # The studio queued the two outputs' pair as it stepped (source candidates): the values judge it.
        page.locator("#as-values-message", has_text="1 judged by the values").wait_for(timeout=30_000)
        assert "1 already queued" in page.inner_text("#as-values-message")
        page.screenshot(path=str(tmp_path / "values.png"), full_page=True)

        # A person sees the pair blind in Annotate, as any other.
        start_annotating(page, "ada")
        page.locator("#as-progress", has_text="0 judged of 1 pairs").wait_for(timeout=30_000)

        # And a model judges it too: the default model in slot B, from the Overview.
        page.get_by_role("tab", name="Models").click()
        page.locator("#as-model-b input, #as-model-b textarea").first.fill("default")
        page.click("#as-load-b")
        page.locator("#as-model-message-b", has_text="Loaded").wait_for(timeout=180_000)
        page.get_by_role("tab", name="Annotate").click()
        page.get_by_role("tab", name="Overview").click()
        page.click("#as-judge-queue")
        page.locator("#as-judge-message", has_text="judged 1 pair").wait_for(timeout=120_000)
        assert "judge:HuggingFaceTB/SmolLM2-135M-Instruct" in page.inner_text("#as-overview")

        # Model B's view of what the scripted model A wrote: its logprob of every token, shown as text.
        page.get_by_role("tab", name="Episode", exact=True).click()
        page.locator("#as-cross").get_by_text("Model B's view").click()
        page.click("#as-cross-score")
        page.locator("#as-cross-message", has_text="Scored 1 step under HuggingFaceTB/SmolLM2-135M-Instruct").wait_for(
            timeout=120_000
        )
        view = page.inner_text("#as-cross-view")
        assert "B − A" in view and "A took go east" in view and "B prefers" in view
        assert page.locator("#as-cross-view img").count() == 0  # the model's <img onerror> is text
        page.locator("#as-cross-plot .js-plotly-plot").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "cross.png"), full_page=True)
        page.close()
    with open_store(studio["db"]) as store:
        (pair,) = store.preferences.pairs()
        assert pair.kind == "step" and pair.step_index == 0, server_log(studio["url"])
        judged = {a.annotator: a for a in store.preferences.annotations(pair.id)}
        assert set(judged) == {"mc:expert-m4-end-g0.95", "judge:HuggingFaceTB/SmolLM2-135M-Instruct"}
        (cross,) = store.cross_scores.of_episode(pair.left.episode_id)
        assert cross.scorer == "HuggingFaceTB/SmolLM2-135M-Instruct" and cross.step_index == 0
        assert "p(left better)" in judged["judge:HuggingFaceTB/SmolLM2-135M-Instruct"].rationale
        verdict = judged["mc:expert-m4-end-g0.95"]
        assert verdict.annotator == "mc:expert-m4-end-g0.95" and "Q 0.6302 (taken)" in verdict.rationale
        taken_side = "left" if pair.left.candidate_id is None else "right"
        assert verdict.choice == taken_side  # the higher Q: the taken output
        values = store.preferences.step_values()
        assert [v.output for v in values] == ["taken", "candidate 1"] and values[0].q > values[1].q


def test_a_default_model_step_picked_by_a_verifier_then_valued_paired_judged_and_stopped(tmp_path: Path) -> None:
    """The default model samples 2 outputs; the oracle verifier picks one (its scores on the cards);
    the expert's rollouts value them (bars); pairs come from the values; a person judges the pair
    and the Overview says how MC agrees with people; a model's value estimate stops on Stop."""
    with studio_in_chromium(tmp_path / "studio.db", model="default") as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 900}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        # Seed 5: the model's two outputs go north and east (measured here), which the expert's
        # discounted rollouts tell apart.
        page.locator("#as-seed input").fill("5")
        page.click("#as-reset")
        page.locator("#as-timeline .as-episode-head", has_text="seed 5").wait_for(timeout=30_000)
        page.get_by_text("Best-of-K: who picks").click()
        page.locator("#as-verifier input").click()
        page.get_by_role("option", name="oracle").click()
        sample_candidates(page, 1, candidates=2)
        cards = page.locator("#as-candidates-view")
        cards.get_by_text("verifier").wait_for(timeout=30_000)
        assert "by the oracle verifier" in cards.inner_text() and "oracle 0." in cards.inner_text()

        page.get_by_text("Values: Monte Carlo Q").click()  # the expert, 4 rollouts, discount 0.95
        page.click("#as-values-estimate")
        page.locator("#as-values-message", has_text="highest Q").wait_for(timeout=120_000)
        page.wait_for_function(
            "() => { const p = document.querySelector('#as-values-bars .js-plotly-plot'); return p && p.data[0].x.length === 2; }",
            timeout=30_000,
        )
        page.fill("#as-values-gap input", "0")
        page.click("#as-values-pairs")
        page.locator("#as-values-message", has_text="Verify them in Annotate").wait_for(timeout=30_000)
        message = page.inner_text("#as-values-message")
        with open_store(studio["db"]) as store:
            values = store.preferences.step_values()
            gap = abs(values[0].q - values[1].q)
        assert gap > 0 and "1 judged by the values" in message, (values, message)

        # A model's rollouts, stopped: nothing is kept and the view says so in one line.
        page.locator("#as-rollout-policy input").click()
        page.get_by_role("option", name="model A").click()
        page.click("#as-values-estimate")
        page.wait_for_timeout(1_500)
        page.click("#as-values-stop")
        page.locator("#as-values-message", has_text="Stopped after").wait_for(timeout=120_000)
        assert "no values were kept" in page.inner_text("#as-values-message")

        # A person verifies the values' verdict; the Overview compares them.
        start_annotating(page, "ada")
        page.keyboard.press("1")
        page.locator("#as-progress", has_text="ada: 1 judged").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Overview").click()
        page.locator("#as-overview", has_text="mc pairs vs people").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "verified.png"), full_page=True)
        page.close()
    with open_store(studio["db"]) as store:
        assert len(store.preferences.step_values()) == 2  # the stopped estimate kept nothing


def test_the_values_view_follows_the_selected_step(tmp_path: Path) -> None:
    """Each step shows its own stored estimate; a step without one says so (no stale bars)."""
    with studio_in_chromium(tmp_path / "studio.db") as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 900}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        for count in (1, 2):
            page.click("#as-step")
            page.wait_for_function(
                f"document.querySelectorAll('#as-timeline .as-step').length === {count}", timeout=60_000
            )
        page.get_by_text("Values: Monte Carlo Q").click()
        page.click("#as-values-estimate")  # the selected step: the latest, step 1
        message = page.locator("#as-values-message")
        message.filter(has_text="Step 1: 1 outputs").wait_for(timeout=60_000)
        bars = "#as-values-bars .js-plotly-plot"
        page.locator(bars).wait_for(timeout=30_000)

        page.locator("#as-timeline .as-step").nth(0).click()
        message.filter(has_text="No values for step 0 yet").wait_for(timeout=30_000)
        assert page.locator(bars).count() == 0, server_log(studio["url"])
        assert page.locator("#as-values-curve .js-plotly-plot").count() == 1  # the episode's curve stays

        page.locator("#as-timeline .as-step").nth(1).click()
        message.filter(has_text="Step 1: 1 outputs × 4 rollouts (expert-m4-end-g0.95)").wait_for(timeout=30_000)
        page.locator(bars).wait_for(timeout=30_000)
        title = page.evaluate(f"() => document.querySelector('{bars}').layout.title.text")
        assert title.startswith("step 1:"), title

        # A step out of range is refused once (by the select handler), not once per view that follows it.
        box = page.locator("#as-selected input[type=number]")
        box.fill("-5")
        box.press("Enter")
        refusal = page.get_by_text("Value -5 is less than minimum value 0.")
        refusal.first.wait_for(timeout=30_000)
        page.wait_for_timeout(2_000)  # any other listener's refusal would have come by now
        assert refusal.count() == 1, server_log(studio["url"])
        page.close()
