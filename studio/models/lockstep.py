"""Lockstep batching: many episodes' policies share one model, and their model calls run as one batch.

Each episode runs in its own thread with its own policy, unchanged; the policy's backend is a
:class:`LockstepMember` of one :class:`LockstepPool`. The pool's scheduler thread does the
model work of every member (continuous batching): a member's ``generate`` joins the batch being
decoded (its prompt prefilled between two decode steps) and returns as soon as its own output
is done, while the others go on decoding; its ``score`` runs between two steps too. One
forward per token serves every live episode, and no episode waits for another's longer output.

Backends without ``capabilities.batched_generate`` (a served model: the engine batches
concurrent requests itself; scripted models) are called directly and concurrently.

The members' :class:`~studio.models.base.PrefixSession` objects are made peers of one another,
so forks of one step encode their common history once and copy it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from studio.models.base import (
    Backend,
    GenerateCall,
    GenerateResult,
    Message,
    ModelCard,
    PrefixSession,
    SamplingParams,
    ScoreCall,
    ScoreResult,
    Stop,
    TokenListener,
)
from studio.models.steered import steering_of


#: How long the scheduler waits for answered callers' next calls before the next forward (seconds).
FOLLOW_UP_S = 0.02


class _Work:
    """A member's call waiting for the scheduler: a generate or score call, or other work to run."""

    def __init__(self, call: GenerateCall | ScoreCall | None = None, run: Callable[[], Any] | None = None) -> None:
        self.call, self.run = call, run
        self.outcome: Any = None  # the answer, or the exception to raise
        self.done = threading.Event()

    def answer(self, outcome: Any) -> None:
        self.outcome = outcome
        self.done.set()


class LockstepPool:
    """The members sharing one backend, and the scheduler thread that batches their calls."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.batched = backend.capabilities.batched_generate
        #: A steered backend's steering: every member's calls carry it into the shared batch.
        self.steering = steering_of(backend)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified when work is submitted
        self._pending: list[_Work] = []
        self._running = False
        self._peers: list[PrefixSession] = []
        self._batcher: Any = None  # opened by the first scheduler, kept for the pool's life (it may hold caches)
        #: Generate calls answered, decode steps run, calls decoded summed over the steps, and the
        #: most calls decoded in one step.
        self.calls = 0
        self.steps = 0
        self.lane_steps = 0
        self.widest = 0
        #: Seconds the scheduler spent: ``prefill`` (calls joining), ``decode`` (steps), ``other`` (scores).
        self.seconds: dict[str, float] = defaultdict(float)

    def member(self) -> LockstepMember:
        """A new member (one per episode)."""
        return LockstepMember(self)

    def _join_peers(self, session: PrefixSession | None) -> None:
        if session is None or session.peers is self._peers:
            return
        with self._lock:
            session.peers = self._peers
            self._peers.append(session)

    def _leave(self, sessions: list[PrefixSession]) -> None:
        with self._lock:
            for session in sessions:
                if session in self._peers:
                    self._peers.remove(session)
            batcher = self._batcher
        if batcher is not None and sessions:  # between two steps, in the scheduler: the caches are its
            self._run(lambda: batcher.release(sessions))

    def _submit(self, work: _Work) -> Any:
        """Hand ``work`` to the scheduler (starting it if idle) and wait for its answer."""
        with self._lock:
            self._pending.append(work)
            self._arrived.notify()
            if not self._running:  # the scheduler ends when it runs out of work: start a new one
                self._running = True
                threading.Thread(target=self._serve, name="lockstep-scheduler", daemon=True).start()
        work.done.wait()
        if isinstance(work.outcome, BaseException):
            raise work.outcome
        return work.outcome

    def _call(self, call: GenerateCall | ScoreCall) -> Any:
        """A generate or score call, answered by the batcher."""
        return self._submit(_Work(call=call))

    def _run(self, run: Callable[[], Any]) -> Any:
        return self._submit(_Work(run=run))

    def _serve(self) -> None:
        """The scheduler: take new work between decode steps, step while calls decode, stop when idle."""
        if self._batcher is None:
            self._batcher = self.backend.open_batch(pooled=True)
        batcher = self._batcher
        decoding: dict[int, _Work] = {}  # id(call) -> its work
        while True:
            with self._lock:
                if not self._pending and not batcher.busy:
                    self._running = False
                    return
                work, self._pending = self._pending, []
            for item in work:
                self._start(batcher, item, decoding)
            if not batcher.busy:
                continue
            self.widest = max(self.widest, len(decoding))
            self.lane_steps += len(decoding)
            started = time.perf_counter()
            try:
                finished = batcher.step()
            except BaseException as exc:  # every call in the batch gets the error, nobody hangs
                for call in batcher.abort():
                    decoding.pop(id(call)).answer(exc)
                continue
            finally:
                self.seconds["decode"] += time.perf_counter() - started
            self.steps += 1
            for call, result in finished:
                decoding.pop(id(call)).answer(result)
            self._await_answered(len(finished))

    def _await_answered(self, answered: int) -> None:
        """Give the callers just answered a moment to send their next call, so that it joins the
        next forward rather than the one after (their next call usually follows within a few
        milliseconds; a forward takes tens). Waits at most :data:`FOLLOW_UP_S`."""
        if not answered:
            return
        deadline = time.perf_counter() + FOLLOW_UP_S
        with self._arrived:
            while len(self._pending) < answered and (left := deadline - time.perf_counter()) > 0:
                self._arrived.wait(left)

    def _start(self, batcher: Any, item: _Work, decoding: dict[int, _Work]) -> None:
        """Run other work, or add a generate or score call to the batch (answered now if done already)."""
        started = time.perf_counter()
        try:
            if item.run is not None:
                item.answer(item.run())
                return
            assert item.call is not None
            if isinstance(item.call, ScoreCall):
                result = batcher.score(item.call)
            else:
                self.calls += 1
                result = batcher.add(item.call)
        except BaseException as exc:  # this call's own error (a prompt too long, a failed score)
            item.answer(exc)
            return
        finally:
            kind = "prefill" if isinstance(item.call, GenerateCall) else "other"
            self.seconds[kind] += time.perf_counter() - started
        if result is None:
            decoding[id(item.call)] = item
        else:
            item.answer(result)


class LockstepMember(Backend):
    """One episode's view of the shared backend: ``generate`` joins the batch, the rest delegates."""

    def __init__(self, pool: LockstepPool) -> None:
        self.pool = pool
        self.backend = pool.backend
        self.capabilities = pool.backend.capabilities
        self.no_attention_reason = pool.backend.no_attention_reason
        self._sessions: list[PrefixSession] = []

    def __getattr__(self, name: str) -> Any:  # tokenizer, top_k, device, ... of the shared backend
        if name in ("pool", "backend"):
            raise AttributeError(name)
        return getattr(self.backend, name)

    @property
    def card(self) -> ModelCard:
        return self.backend.card

    def _session(self, session: PrefixSession | None) -> None:
        if session is not None and session not in self._sessions:
            self._sessions.append(session)
            self.pool._join_peers(session)

    def generate(
        self,
        messages: list[Message],
        n: int = 1,
        sampling: SamplingParams | None = None,
        stop: list[Stop] | None = None,
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        should_stop: Callable[[], bool] | None = None,
        assistant_prefix: str = "",
        on_token: TokenListener | None = None,
    ) -> GenerateResult:
        call = GenerateCall(messages, n, sampling, stop, images, session, should_stop, assistant_prefix, on_token)
        call.steering = call.steering or self.pool.steering
        self._session(session)
        if not self.pool.batched:
            return self.backend.generate(**call.kwargs())
        return self.pool._call(call)

    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        self._session(session)
        call = ScoreCall(messages, continuations, images, session, assistant_prefix, end_with_eos)
        call.steering = call.steering or self.pool.steering
        # Batched: in the scheduler, beside the decode steps (in the same forward, where the batcher packs calls).
        return self.pool._call(call) if self.pool.batched else self.backend.score(**call.kwargs())

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        return self.backend.encode(messages, assistant_prefix, images)

    def attention(
        self, messages: list[Message], output: str, images: list[np.ndarray] | None = None, **options: Any
    ) -> Any:
        return self.backend.attention(messages, output, images, **options)

    def leave(self) -> None:
        """This member's episode is over: its sessions leave the peers (idempotent)."""
        self.pool._leave(self._sessions)

    def unload(self) -> None:
        """Members never unload the shared model."""
