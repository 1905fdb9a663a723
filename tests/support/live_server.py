"""Helpers for browser tests: start the studio on a free port, open it in Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


#: Where each running studio (by URL) writes its output: tests print its tail when they fail.
LOGS: dict[str, Path] = {}


def server_log(url: str, chars: int = 3000) -> str:
    """The last ``chars`` characters the studio at ``url`` printed."""
    path = LOGS.get(url)
    return path.read_text(errors="replace")[-chars:] if path is not None and path.exists() else ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_studio(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, project: Path = ROOT
) -> Iterator[str]:
    """Start ``app.py serve`` of ``project`` (this one unless given) on a free port (with ``env`` added
    to its environment); yield its URL; stop it (by its own pid)."""
    port = free_port()
    # The server's output goes to a file, never an unread pipe (a full pipe would block the server).
    log = tempfile.NamedTemporaryFile("w+", prefix="agent-studio-server-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--port", str(port), *args],
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/"
    LOGS[url] = Path(log.name)
    try:
        deadline = time.time() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"studio exited early:\n{Path(log.name).read_text(errors='replace')[-4000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"studio did not answer on {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


XSS_MODEL = ROOT / "tests" / "data" / "xss_model.json"
SLOW_MODEL = ROOT / "tests" / "data" / "slow_model.json"


@contextlib.contextmanager
def studio_in_chromium(
    db: Path, model: str = f"scripted:{XSS_MODEL}", env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[dict]:
    """A studio whose new sessions get ``model`` in slot A (by default the scripted XSS model: fast
    to start), started with ``args`` added to ``serve``, and Chromium to drive it."""
    import pytest
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup.sh --test` (it installs Chromium)")
    with (
        running_studio("--model", model, "--db", str(db), *args, timeout=300, env=env) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield {"url": url, "browser": browser, "db": db}
        finally:
            browser.close()
