"""Steps watched as they happen: the output being written, token by token.

A step of a model-driven policy takes as long as the model writes. :func:`stream` runs the
stepping in a worker thread and hands the caller (a UI handler, in its own thread) what there
is to show, as it comes: a :class:`LiveOutput` (the output so far) at most every
``interval`` seconds, and each finished :class:`~studio.trace.Step`. Nothing here knows
about a UI; the session exposes it as :meth:`StudioSession.step_live` and ``run_live``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from studio.models.base import TokenListener
from studio.trace import Step, TokenInfo


@dataclass
class LiveOutput:
    """The output of the step being decided, as far as it is written."""

    index: int
    """The index the step will have."""
    tokens: list[TokenInfo] = field(default_factory=list)
    """The first output's tokens so far (the ``Thought:`` the policy writes first included)."""
    rows: int = 1
    """How many outputs are being written at once (K candidates)."""
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


class _Watch:
    """Collects tokens from the policy's thread; snapshots for the reader's thread."""

    def __init__(self, index: int, feed: queue.Queue) -> None:
        self.lock = threading.Lock()
        self.live = LiveOutput(index)
        self.version = 0
        self.feed = feed

    def token(self, row: int, token: TokenInfo) -> None:
        with self.lock:
            self.live.rows = max(self.live.rows, row + 1)
            if row == 0:
                self.live.tokens.append(token)
            self.version += 1
        self.feed.put(("token", None))  # wakes the reader: the first token shows at once

    def next_step(self, index: int) -> None:
        with self.lock:
            self.live = LiveOutput(index)
            self.version += 1

    def snapshot(self) -> tuple[int, LiveOutput]:
        with self.lock:
            live = self.live
            return self.version, LiveOutput(live.index, list(live.tokens), live.rows, live.started)


def stream(
    work: Callable[[], Iterator[Step]],
    next_index: Callable[[], int],
    attach: Callable[[TokenListener | None], None],
    stop: Callable[[], None],
    interval: float = 0.08,
) -> Iterator[LiveOutput | Step]:
    """Run ``work`` (it yields steps) in a worker thread; yield live outputs and steps as they come.

    ``attach(listener)`` hands the policy a token listener (None detaches it); ``next_index()``
    is the index of the step being decided. An error in ``work`` is raised here, after the steps
    before it. If the caller stops reading (the browser went away), ``stop()`` interrupts the
    work and this waits for it, so nothing keeps running unseen.
    """
    feed: queue.Queue[tuple[str, object]] = queue.Queue()
    watch = _Watch(next_index(), feed)

    def worker() -> None:
        attach(watch.token)
        try:
            for step in work():
                feed.put(("step", step))
                watch.next_step(step.index + 1)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            feed.put(("error", exc))
        finally:
            attach(None)
            feed.put(("done", None))

    thread = threading.Thread(target=worker, name="studio-step", daemon=True)
    thread.start()
    finished, shown_version, shown_at, shown_tokens = False, 0, time.perf_counter(), False
    try:
        yield watch.snapshot()[1]  # the card appears at once, before the first token
        while True:
            # Wake at once for a token, but redraw at most every ``interval`` seconds.
            wait = interval - (time.perf_counter() - shown_at) if shown_tokens else 0.0  # the first token: at once
            pending = watch.version != shown_version  # an int read: no copy of the tokens
            try:
                kind, item = feed.get(timeout=max(wait, 0.0) if pending else 1.0)
            except queue.Empty:
                kind, item = "", None
            if kind == "step":
                yield item  # type: ignore[misc]
                shown_at, shown_tokens = time.perf_counter(), False
            elif kind == "error":
                raise item  # type: ignore[misc]
            elif kind == "done":
                finished = True
                return
            version, live = watch.snapshot()
            # A card with no token yet after a step could be a step that never comes (the run ended).
            due = not shown_tokens or time.perf_counter() - shown_at >= interval
            if version != shown_version and live.tokens and due and _only_tokens(feed):
                shown_version, shown_at, shown_tokens = version, time.perf_counter(), True
                yield live
            elif version != shown_version and not live.tokens:
                shown_version = version
    finally:
        if not finished:
            stop()
        thread.join()


def _only_tokens(feed: queue.Queue) -> bool:
    """Whether nothing but token wake-ups waits in ``feed`` (a finished step goes first)."""
    with feed.mutex:
        return all(kind == "token" for kind, _ in feed.queue)
