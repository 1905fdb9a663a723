"""The selected step shows its own frame and observation: in the Episode panel (a stored CLI episode
without kept frames redraws them from its snapshots), in the Plots, and in Annotate's step labels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from agent_studio.storage import open_store
from studio.envs.registry import env_at
from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, running_studio

pytestmark = pytest.mark.browser


def _image(url: str) -> np.ndarray:
    from PIL import Image

    with urllib.request.urlopen(url, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def test_clicking_steps_of_a_stored_cli_episode_shows_each_steps_own_frame_and_observation(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db = tmp_path / "s.db"
    ran = subprocess.run(  # no --frames: the steps keep no frame, only their snapshots
        [
            sys.executable,
            "app.py",
            "run",
            "--env",
            "gridworld",
            "--policy",
            "expert",
            "--seed",
            "1",
            "--json",
            "--db",
            str(db),
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    episode_id = json.loads(ran.stdout)["episode_id"]
    with open_store(db) as store:
        episode = store.episodes.get(episode_id)
    assert episode.length >= 8 and all(step.frame is None for step in episode.steps)
    expected = {
        i: env_at(episode.env, episode.env_options, episode.seed, episode.steps[i].state).render() for i in (0, 3, 7)
    }
    assert not np.array_equal(expected[0], expected[3]) and not np.array_equal(expected[3], expected[7])
    with running_studio("--model", "none", "--db", str(db)) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.goto(url)
                page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
                page.get_by_role("tab", name="Episodes", exact=True).click()
                page.locator("#as-episode-id textarea, #as-episode-id input").first.fill(episode_id)
                page.click("#as-open")
                page.locator("#as-timeline .as-step").nth(episode.length - 1).wait_for(timeout=30_000)
                observation = page.locator("#as-observation textarea")
                for index in (0, 3, 7):
                    page.locator(f'#as-timeline .as-step[data-step="{index}"]').click(position={"x": 8, "y": 8})
                    page.locator("#as-observation", has_text=f"Step {index} acted on this").wait_for(timeout=30_000)
                    assert observation.input_value() == episode.steps[index].observation
                    source = page.locator("#as-frame img").get_attribute("src")
                    assert np.array_equal(
                        _image(source if source.startswith("http") else url + source.lstrip("/")), expected[index]
                    )
                page.get_by_role("tab", name="Plots", exact=True).click()
                page.locator("#as-path", has_text="over the map step 7 acted on").wait_for(timeout=30_000)
                page.get_by_role("tab", name="Annotate", exact=True).click()
                page.get_by_role("tab", name="Step labels", exact=True).click()
                page.click("#as-label-current")
                page.locator("#as-label-frame img").wait_for(timeout=30_000)
                source = page.locator("#as-label-frame img").get_attribute("src")
                assert np.array_equal(
                    _image(source if source.startswith("http") else url + source.lstrip("/")), expected[0]
                )
            finally:
                browser.close()
