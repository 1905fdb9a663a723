"""Lockstep batching: many episodes' policies share one model, and their generate calls decode as one batch.

Each episode runs in its own thread with its own policy, unchanged; the policy's backend is a
:class:`LockstepMember` of one :class:`LockstepPool`. A member's ``generate`` waits until every
live member is waiting too (or has left), then one of them answers all the waiting calls with
one :meth:`~studio.models.base.Backend.generate_many`: one forward per token for all live
episodes instead of one per episode. Members whose episode ended leave and the batch shrinks.
Everything else (scoring, encoding, the card) goes straight to the shared backend.

Backends without ``capabilities.batched_generate`` (a served model: the engine batches
concurrent requests itself; scripted models) are called directly and concurrently.

The members' :class:`~studio.models.base.PrefixSession` objects are made peers of one another,
so forks of one step encode their common history once and copy it.
"""

from __future__ import annotations

import threading
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
    ScoreResult,
    TokenListener,
)


class _Waiting:
    def __init__(self, call: GenerateCall) -> None:
        self.call = call
        self.outcome: GenerateResult | BaseException | None = None  # the result, or what to raise
        self.done = threading.Event()


class LockstepPool:
    """The rendezvous of the members sharing one backend (see the module docstring)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.batched = backend.capabilities.batched_generate
        self._condition = threading.Condition()
        self._live = 0
        self._waiting: list[_Waiting] = []
        self._peers: list[PrefixSession] = []
        #: Batches run and the calls they answered (a batch of 1 is a call that ran alone).
        self.batches = 0
        self.calls = 0

    def member(self) -> LockstepMember:
        """A new member (one per episode); it counts as live until :meth:`LockstepMember.leave`."""
        with self._condition:
            self._live += 1
        return LockstepMember(self)

    def _join_peers(self, session: PrefixSession | None) -> None:
        if session is None or session.peers is self._peers:
            return
        with self._condition:
            session.peers = self._peers
            self._peers.append(session)

    def _leave(self, sessions: list[PrefixSession]) -> None:
        with self._condition:
            self._live -= 1
            for session in sessions:
                if session in self._peers:
                    self._peers.remove(session)
            batch = self._take_batch()
        self._answer(batch)

    def _generate(self, call: GenerateCall) -> GenerateResult:
        waiting = _Waiting(call)
        with self._condition:
            self._waiting.append(waiting)
            batch = self._take_batch()
        self._answer(batch)
        waiting.done.wait()
        if isinstance(waiting.outcome, BaseException):
            raise waiting.outcome
        assert waiting.outcome is not None
        return waiting.outcome

    def _take_batch(self) -> list[_Waiting]:
        """The waiting calls, once every live member waits (called with the condition held)."""
        if not self._waiting or len(self._waiting) < self._live:
            return []
        batch, self._waiting = self._waiting, []
        self.batches += 1
        self.calls += len(batch)
        return batch

    def _answer(self, batch: list[_Waiting]) -> None:
        """Run ``batch`` in this thread (the last member to arrive) and wake its callers."""
        if not batch:
            return
        try:
            answers = self.backend.generate_many([w.call for w in batch])
            for waiting, answer in zip(batch, answers):
                waiting.outcome = answer
        except BaseException as exc:  # every caller of the batch gets the error, nobody hangs
            for waiting in batch:
                waiting.outcome = exc
        finally:
            for waiting in batch:
                waiting.done.set()


class LockstepMember(Backend):
    """One episode's view of the shared backend: ``generate`` joins the batch, the rest delegates."""

    def __init__(self, pool: LockstepPool) -> None:
        self.pool = pool
        self.backend = pool.backend
        self.capabilities = pool.backend.capabilities
        self.no_attention_reason = pool.backend.no_attention_reason
        self._sessions: list[PrefixSession] = []
        self._left = False

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
        stop: list[str] | None = None,
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        should_stop: Callable[[], bool] | None = None,
        assistant_prefix: str = "",
        on_token: TokenListener | None = None,
    ) -> GenerateResult:
        call = GenerateCall(messages, n, sampling, stop, images, session, should_stop, assistant_prefix, on_token)
        self._session(session)
        if not self.pool.batched or self._left:
            return self.backend.generate(**call.kwargs())
        return self.pool._generate(call)

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
        return self.backend.score(messages, continuations, images, session, assistant_prefix, end_with_eos)

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        return self.backend.encode(messages, assistant_prefix, images)

    def attention(
        self, messages: list[Message], output: str, images: list[np.ndarray] | None = None, **options: Any
    ) -> Any:
        return self.backend.attention(messages, output, images, **options)

    def leave(self) -> None:
        """This member's episode is over: the others stop waiting for it (idempotent)."""
        if not self._left:
            self._left = True
            self.pool._leave(self._sessions)

    def unload(self) -> None:
        """Members never unload the shared model."""
