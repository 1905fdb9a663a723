"""Browsers owned by one thread each: the small actor every call to a web environment goes through.

Playwright's sync API belongs to the thread that started it ("cannot switch to a different thread"),
and the studio steps an episode from whatever thread the caller has (a UI worker, a sweep's pool, a
job). So each web environment holds a :class:`BrowserActor`: a thread that starts its own Playwright,
launches the environment's browser and runs every call sent to it, one at a time. Actors whose
environment was closed wait in a small per-process pool (:data:`ACTORS`) for the next one, because
starting Playwright's driver and a browser takes a while.

:func:`adapt_browsergym` fits BrowserGym to this, once per process:

- its one *global* Playwright (bound to whichever thread made it first) becomes one per actor thread,
  whose Chromium is launched once and kept: a reset closes the episode's context (its pages, cookies
  and storage) and opens a new one in the same browser, instead of launching another;
- its chat window, a second browser per environment that nothing here reads, becomes a list of messages;
- every Chromium it launches is the system's (``AGENT_STUDIO_CHROMIUM``, else ``/usr/bin/chromium``):
  Playwright's own browser download needs a host these machines cannot reach.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from studio.errors import UnknownEnvironment

T = TypeVar("T")

#: How to get the web family's packages (one line in every refusal).
INSTALL = "pip install 'agent-studio[web]' (BrowserGym, MiniWoB++) and a Chromium (apt-get install chromium)"
#: Where a Chromium is looked for when AGENT_STUDIO_CHROMIUM is not set.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """The Chromium every web environment launches: ``AGENT_STUDIO_CHROMIUM``, else the system's
    (None: Playwright's own download, if it has one)."""
    chosen = os.environ.get("AGENT_STUDIO_CHROMIUM", "").strip()
    if chosen:
        return chosen
    for candidate in CHROMIUM_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


def chromium_processes() -> list[int]:
    """The Chromium processes this process started (its browsers and their helpers), read from /proc:
    what a memory measurement adds up, or a test kills to see a crash handled."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            names[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:  # a process that ended while the list was read
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, name in names.items() if "chrom" in os.path.basename(name) and ours(pid)]


class _ThreadChat:
    """BrowserGym's chat without its browser window: the messages, kept as a list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[dict[str, Any]] = []

    def add_message(self, role: str, msg: str) -> None:
        self.messages.append({"role": role, "timestamp": time.time(), "message": msg})

    def wait_for_user_message(self) -> None:
        raise RuntimeError("the studio's web environments do not wait for chat messages")

    def close(self) -> None:
        pass


class _KeptBrowser:
    """A thread's Chromium as BrowserGym holds it: closing it closes its contexts (every page of the
    episode, its cookies and storage) and keeps the process for the next reset."""

    def __init__(self, browser: Any) -> None:
        self._browser = browser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)

    def close(self) -> None:
        for context in list(self._browser.contexts):
            context.close()


class _KeptChromium:
    """Playwright's Chromium launcher, launching a browser once per thread and set of launch options
    (launching one costs most of a reset's time and CPU): each reset gets a new context in it."""

    def __init__(self, chromium: Any) -> None:
        self._chromium = chromium
        self.kept: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chromium, name)

    def launch(self, **options: Any) -> _KeptBrowser:
        key = repr(sorted(options.items()))
        browser = self.kept.get(key)
        if browser is None or not browser.is_connected():  # first use, or a browser that died
            browser = self.kept[key] = self._chromium.launch(**options)
        return _KeptBrowser(browser)


class _ThreadPlaywright:
    """One thread's Playwright, its Chromium launcher keeping browsers (what BrowserGym's global becomes)."""

    def __init__(self, playwright: Any) -> None:
        self._playwright = playwright
        self.chromium = _KeptChromium(playwright.chromium)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._playwright, name)

    def stop(self) -> None:
        for browser in self.chromium.kept.values():
            try:
                browser.close()
            except Exception:  # a browser that already went away
                pass
        self._playwright.stop()


_PER_THREAD = threading.local()
_ADAPTED = threading.Lock()
_adapted = False


def _thread_playwright() -> _ThreadPlaywright:
    """This thread's Playwright (started on first use): what BrowserGym's global one becomes."""
    playwright = getattr(_PER_THREAD, "playwright", None)
    if playwright is None:
        from playwright.sync_api import sync_playwright

        playwright = _ThreadPlaywright(sync_playwright().start())
        _PER_THREAD.playwright = playwright
    return playwright


def stop_thread_playwright() -> None:
    """Stop this thread's Playwright and its browsers (after a crash: the next reset starts anew)."""
    playwright = getattr(_PER_THREAD, "playwright", None)
    _PER_THREAD.playwright = None
    if playwright is not None:
        try:
            playwright.stop()
        except Exception:  # a driver that already went away
            pass


def adapt_browsergym() -> None:
    """Import BrowserGym and fit it to per-thread browsers (see the module docstring); once per process.
    One line (:class:`UnknownEnvironment`) when it is not installed."""
    global _adapted
    with _ADAPTED:
        if _adapted:
            return
        try:
            import browsergym.core.chat as bg_chat
            import browsergym.core.env as bg_env
            import browsergym.miniwob  # noqa: F401  (registers browsergym/miniwob.* with Gymnasium)
        except ImportError:
            raise UnknownEnvironment(f"web: environments need BrowserGym: {INSTALL}.") from None
        bg_env._get_global_playwright = _thread_playwright
        bg_chat._get_global_playwright = _thread_playwright
        bg_env.Chat = _ThreadChat
        _adapted = True


class BrowserActor:
    """One thread that owns a Playwright and runs every call sent to it, in order.

    :meth:`call` from any thread runs the function on the actor's thread and gives back its result
    or raises its exception; from the actor's own thread it simply runs it.
    """

    def __init__(self, name: str = "studio-browser") -> None:
        self._calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, function: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``function(*args)`` on the actor's thread and return what it returns."""
        if threading.current_thread() is self._thread:
            return function(*args)
        if not self.alive:
            raise RuntimeError("the browser's thread has stopped")
        done: Future[T] = Future()
        self._calls.put((function, args, done))
        return done.result(timeout)

    def stop(self, wait: float | None = None) -> None:
        """Stop Playwright and the thread (the calls already sent run first); wait up to ``wait``
        seconds for the thread to end."""
        if self.alive:
            self._calls.put((stop_thread_playwright, (), Future()))
            self._calls.put(None)
            if wait:
                self._thread.join(wait)

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            function, args, done = item
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(function(*args))
            except BaseException as exc:  # handed to the caller, whatever it is
                done.set_exception(exc)


#: Every actor whose thread may still run: stopped at exit (see :func:`_stop_all`).
_LIVE: weakref.WeakSet[BrowserActor] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Stop every browser thread before the interpreter tears down: a thread still holding
    Playwright's greenlets when Python finalizes crashes the process (a segmentation fault after
    the last line of a test run, seen with eight browsers)."""
    actors = list(_LIVE)
    for actor in actors:
        actor.stop()
    for actor in actors:
        actor.thread.join(10)


class ActorPool:
    """Actors no environment holds now, kept for the next (their Playwright is already started)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._idle: list[BrowserActor] = []
        self._lock = threading.Lock()
        self._made = 0

    def acquire(self) -> BrowserActor:
        with self._lock:
            while self._idle:
                actor = self._idle.pop()
                if actor.alive:
                    return actor
            self._made += 1
            number = self._made
        return BrowserActor(name=f"studio-browser-{number}")

    def release(self, actor: BrowserActor) -> None:
        with self._lock:
            if actor.alive and len(self._idle) < self.keep:
                self._idle.append(actor)
                return
        actor.stop()


#: The process's idle browser actors (a cache of threads and their browsers, never of anyone's page:
#: every reset gets a new browser context).
ACTORS = ActorPool()
