"""A browser episode is never left "running": it is ended when its tab goes away, when the server stops,
and — after a crash — at the next start."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, running_studio

pytestmark = pytest.mark.browser


def _one_step(page, url: str) -> None:
    page.goto(url)
    page.locator("#as-timeline .as-empty").wait_for(timeout=60_000)
    page.click("#as-step")
    page.wait_for_function("document.querySelectorAll('#as-timeline .as-step').length === 1", timeout=30_000)


def _episodes(db: Path) -> list[tuple[str | None, str | None]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT ended_at, end_reason FROM episodes ORDER BY started_at").fetchall()


def _wait_for(check, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def test_closing_the_tab_and_stopping_the_server_end_the_episodes(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db = tmp_path / "s.db"
    with running_studio("--model", "none", "--db", str(db)) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                closed = browser.new_page()
                _one_step(closed, url)
                kept = browser.new_page()
                _one_step(kept, url)
                assert [reason for _ended, reason in _episodes(db)] == [None, None]
                closed.close()
                ended = _wait_for(lambda: [r for e, r in _episodes(db) if e is not None], 20)
                assert ended == ["abandoned: the session ended"]  # seconds after the tab went, not an hour
            finally:
                browser.close()
    # The server stopped (SIGTERM) while the other page was still open: its episode was ended too.
    assert [reason for _ended, reason in _episodes(db)] == ["abandoned: the session ended"] * 2


def test_an_episode_a_crashed_server_left_running_is_ended_at_the_next_start(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db = tmp_path / "s.db"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--port", str(port), "--model", "none", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        assert _wait_for(lambda: _answers(url), 120)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                _one_step(page, url)
                os.kill(server.pid, signal.SIGKILL)  # a crash: nothing gets to end anything
                server.wait(30)
            finally:
                browser.close()
    finally:
        if server.poll() is None:
            server.kill()
    assert [reason for _ended, reason in _episodes(db)] == [None]
    with running_studio("--model", "none", "--db", str(db)):
        assert _episodes(db)[0][1] == "abandoned: the process that ran it ended before it did"


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


def test_a_page_load_logs_no_traceback_and_view_api_opens_the_api_page(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.support.live_server import server_log

    with running_studio("--model", "none", "--db", str(tmp_path / "s.db")) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                _one_step(page, url)
                for tab in ("Plots", "Models", "Episodes", "Annotate", "Compare", "Jobs", "Episode"):
                    page.get_by_role("tab", name=tab, exact=True).click()
                    page.wait_for_timeout(600)
                api = browser.new_page(viewport={"width": 1280, "height": 900})
                api.goto(f"{url}?view=api")
                api.locator(".api-docs", has_text="API documentation").wait_for(timeout=30_000)
                for endpoint in ("/load_model", "/reset", "/step", "/run", "/get_episode"):
                    assert endpoint in api.locator(".api-docs").inner_text()
            finally:
                browser.close()
        log = server_log(url, 200_000)
    assert "Traceback" not in log and "Error" not in log, log[-3000:]


def test_an_api_clients_episode_is_ended_when_the_server_stops(tmp_path: Path) -> None:
    from gradio_client import Client

    db = tmp_path / "s.db"
    with running_studio("--model", "none", "--db", str(db)) as url:
        client = Client(url, verbose=False)
        client.predict("gridworld", "{}", 2, "expert", api_name="/reset")
        client.predict("", api_name="/step")
        assert [reason for _ended, reason in _episodes(db)] == [None]
    # An API client has no page to close: the server's stop ended its session all the same.
    assert [reason for _ended, reason in _episodes(db)] == ["abandoned: the session ended"]
