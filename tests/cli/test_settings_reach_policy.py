"""One way to build a policy: a setting added to the schema reaches the policy from the Episode
panel (its form and session), from ``run`` and from a sweep, with nothing else edited.

The test does what a developer does: in a copy of the project it adds one field to
``EpisodeSettings`` and uses it in one place, ``policy_from_settings``, then drives each surface.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOY_FIELD = """    toy_level: int = setting(3, "Toy level", "a setting a test adds", minimum=0, maximum=9)

    def policy_fields(self)"""
TOY_USE = """    with open(__import__("os").environ["TOY_LOG"], "a") as log:  # the toy setting's one use
        log.write(f"{settings.toy_level}\\n")
    if scripted is not None:"""

UI_SCRIPT = """
import gradio as gr
from agent_studio.components.settings_form import SettingsForm
from studio.models.registry import ModelRegistry
from studio.session import StudioSession
from studio.settings import EpisodeSettings

with gr.Blocks():
    form = SettingsForm(EpisodeSettings)
    for group in ("episode", "policy", "sampling", "verifier"):
        form.build(group)
values = [form[name].value for name in form.widgets]
values[list(form.widgets).index("toy_level")] = 8  # what the user set in the widget
settings = form.settings(*values)
session = StudioSession(ModelRegistry())
session.reset(EpisodeSettings(**{**settings.__dict__, "policy": "expert", "env": "gridworld"}))
session.step(None)
"""


def _project_with_a_toy_setting(target: Path) -> Path:
    skip = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=skip)
    settings = target / "studio" / "settings.py"
    text = settings.read_text(encoding="utf-8")
    assert text.count("    def policy_fields(self)") == 1
    settings.write_text(text.replace("    def policy_fields(self)", TOY_FIELD), encoding="utf-8")
    factory = target / "studio" / "policies.py"
    text = factory.read_text(encoding="utf-8")
    assert text.count("    if scripted is not None:") == 1
    factory.write_text(text.replace("    if scripted is not None:", TOY_USE), encoding="utf-8")
    return target


def test_a_new_setting_reaches_the_policy_from_the_ui_the_cli_and_a_sweep(tmp_path: Path) -> None:
    project = _project_with_a_toy_setting(tmp_path / "project")
    log = tmp_path / "toy.log"
    env = {**os.environ, "TOY_LOG": str(log), "GRADIO_ANALYTICS_ENABLED": "False"}

    def run(*command: str) -> list[str]:
        log.write_text("")
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return log.read_text().split()

    db = str(tmp_path / "toy.db")
    help_text = subprocess.run(
        [sys.executable, "app.py", "sweep", "--help"], cwd=project, capture_output=True, text=True, env=env
    ).stdout
    assert "--toy-level" in help_text
    assert set(run(sys.executable, "app.py", "run", "--env", "gridworld", "--toy-level", "7", "--db", db)) == {"7"}
    swept = run(
        sys.executable, "app.py", "sweep", "--models", "expert", "--envs", "gridworld", "--seeds", "0-1",
        "--toy-level", "5", "--db", db,
    )  # fmt: skip
    assert swept and set(swept) == {"5"}
    assert set(run(sys.executable, "-c", UI_SCRIPT)) == {"8"}
    log.write_text("")
    assert set(_step_in_chromium(project, env, tmp_path / "ui.db")) == {"6"}
    assert set(run(sys.executable, "app.py", "run", "--env", "gridworld", "--db", db)) == {"3"}  # the default


def _step_in_chromium(project: Path, env: dict[str, str], db: Path) -> list[str]:
    """In the copy's studio, in Chromium: set the toy widget to 6 and Reset (the new episode's policy is
    made then); what the policy got."""
    from playwright.sync_api import sync_playwright

    from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio

    with (
        running_studio("--model", "none", "--db", str(db), env=env, project=project, timeout=300) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
            Path(env["TOY_LOG"]).write_text("")  # the page's first session is made with the defaults
            page.get_by_text("Sampling", exact=True).click()
            page.locator("#as-toy-level input").first.fill("6")
            page.locator("#as-toy-level input").first.press("Enter")
            page.click("#as-reset")
            deadline = time.monotonic() + 60
            while not Path(env["TOY_LOG"]).read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.2)
            page.click("#as-step")  # a step acts with that policy, made once
            page.locator("#as-status", has_text="step 1 of").wait_for(timeout=60_000)
        finally:
            browser.close()
    return Path(env["TOY_LOG"]).read_text().split()
