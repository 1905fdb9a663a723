"""The Train tab in Chromium: a Q-value model trained on a small store's judged pairs (LoRA on a tiny random
Llama under the operator's --models-dir, two steps), registered and listed; then a best-of-K step whose outputs the trained verifier
scored, its scores on the candidates. A name that is a path is refused in one line and nothing is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from tests.browser.test_browser_annotate import sample_candidates
from tests.support.live_server import server_log, studio_in_chromium
from tests.support.store_helpers import judged_pairs
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.browser


def test_train_a_verifier_in_the_train_tab_and_step_with_it(tmp_path: Path) -> None:
    db, trained = tmp_path / "studio.db", tmp_path / "trained"
    with open_store(db) as store:
        judged_pairs(store)
    base = tmp_path / "models" / "tiny"
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    env = {"AGENT_STUDIO_TRAINED": str(trained), "HF_HUB_OFFLINE": "1"}
    with studio_in_chromium(db, env=env, args=("--models-dir", str(base.parent))) as studio:
        page = studio["browser"].new_context(viewport={"width": 1440, "height": 1000}).new_page()
        page.goto(studio["url"])
        page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
        page.get_by_role("tab", name="Train").click()
        page.locator("#as-trained", has_text="No trained models yet").wait_for(timeout=30_000)
        name = page.locator("#as-train-name textarea, #as-train-name input").first
        name.fill("../q")
        page.click("#as-train-start")
        page.locator("#as-train-status", has_text="trained model's name").wait_for(timeout=30_000)
        assert not trained.exists() or not any(trained.iterdir())
        name.fill("q-ui")
        page.locator("#as-train-sources").get_by_text("all").click()  # off
        page.locator("#as-train-sources").get_by_text("human").click()  # on
        page.locator("#as-train-base textarea, #as-train-base input").first.fill(str(base))
        page.locator("#as-train-steps input").fill("2")
        page.click("#as-train-start")
        done = page.locator("#as-train-status", has_text="Trained q-ui")
        (done.wait_for(timeout=600_000), server_log(studio["url"]))
        assert "model:q-ui" in page.inner_text("#as-train-status")
        assert f"reward model of {base} (LoRA) trained on human" in page.inner_text("#as-trained")
        assert (trained / "q-ui" / "adapter").is_dir()
        with open_store(db) as store:
            (run,) = store.training.runs()
            assert run.status == "done" and run.spec["sources"] == ["human"] and run.record["steps"] == 2
        page.screenshot(path=str(tmp_path / "train.png"))

        page.get_by_role("tab", name="Episode", exact=True).click()
        page.get_by_text("Best-of-K: who picks").click()
        page.locator("#as-verifier input").click()
        page.get_by_role("option", name="model:q-ui").click()
        sample_candidates(page, 1, candidates=2)
        cards = page.locator("#as-candidates-view")
        cards.get_by_text("verifier").wait_for(timeout=120_000)
        assert "by the model:q-ui verifier" in cards.inner_text(), cards.inner_text()
