"""The Backend base class: what the studio needs from a model, whatever runs it.

A backend must generate (:meth:`Backend.generate`) and describe itself (:attr:`Backend.card`,
a :class:`ModelCard`). Everything else is optional, with a default, and declared in
:class:`Capabilities` so panels and policies enable themselves only where it makes sense
(LIT's habit): scoring given continuations, token logprobs, top alternatives, attention,
images, prefix reuse, a local device. Records here are plain dataclasses; torch never leaks
out of a backend.

A new backend is one file: a subclass and a loader registered under a name scheme with
:func:`studio.models.registry.register_backend` (``scripted:FILE.json`` is one).

Per-session state that makes stepping fast — the KV cache of the prompt seen so far —
lives in a :class:`PrefixSession` owned by the caller (one per policy, so per browser
session), never in the backend, which is shared by every session.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from studio.errors import StudioError
from studio.models.steering import Steering, current_steering, steered
from studio.trace import TokenAlternative, TokenInfo

#: Dtypes a model can be loaded in (``auto``: bfloat16 on a GPU, float32 on a CPU).
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
#: A chat message: ``{"role": "system"|"user"|"assistant", "content": str}``.
Message = dict[str, Any]
#: Called with (row, token) as each generated token is drawn: a live view of the generation.
TokenListener = Callable[[int, TokenInfo], None]
#: Called during loading with (fraction done 0..1, what is happening).
ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The default progress callback: ignore."""


Stop = str | re.Pattern[str]
"""What ends a continuation: a stop string (cut from the text where it starts), or a compiled
pattern, which ends it at its first match: cut where the match's last group starts (the group is
the stop text, like a stop string), or at the whole match's start when it has no group. Engines
take stop strings only: a backend applies patterns to the text as it streams."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond generating text; the UI and the policies read these flags."""

    logprobs: bool = False
    """Generated tokens carry the model's log-probabilities (token colours, signals)."""
    scoring: bool = False
    """:meth:`Backend.score` works: log-probabilities of given continuations (score mode, the
    forced ``Thought:`` and inserted ``Action:`` tokens)."""
    top_alternatives: bool = False
    """The most likely other tokens at each position are known."""
    attention: bool = False
    """:meth:`Backend.attention` works (the attention panel)."""
    images: bool = False
    """The model sees images (the environment's frame goes with each observation)."""
    prefix_reuse: bool = False
    """A :class:`PrefixSession` keeps the prompt's KV cache between calls (steps encode only what is new)."""
    local_device: bool = False
    """Runs in this process on a local device: sessions queue on the device's lock, unloading frees memory."""
    batched_generate: bool = False
    """:meth:`Backend.open_batch` decodes several callers' prompts in one batch that calls join and
    leave (lockstep rollouts); without it, concurrent calls go to the backend directly."""
    internals: bool = False
    """:meth:`Backend.internals` works: residual streams, steering, the logit lens, output distributions."""

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @property
    def token_level(self) -> bool:
        """Outputs can be stored token by token (every token with the model's logprob, including
        the ones the policy writes, which are scored)."""
        return self.logprobs and self.scoring


@dataclass(frozen=True)
class ModelCard:
    """What the studio shows and records about a loaded model (the Models tab, every episode)."""

    id: str
    """The name it was loaded as (a hub id, a folder, ``scripted:...``)."""
    source: str
    """Where the weights came from: ``hub``, ``cache``, ``local``, ``scripted``, a server URL..."""
    capabilities: Capabilities
    architecture: str = ""
    kind: str = "causal-lm"
    """``causal-lm``, ``image-text-to-text``, ``scripted``, ``served`` (by an inference engine)..."""
    parameters: int | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    context_length: int = 2048
    """Tokens the model attends over: the policy keeps its prompt under it."""
    vocab_size: int | None = None
    device: str = "cpu"
    dtype: str = "none"
    memory_mb: float = 0.0
    load_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON (``info``): every field, capabilities as a dict of flags."""
        data = asdict(self)
        data["capabilities"] = self.capabilities.to_dict()
        return data


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` is greedy decoding.

    The defaults are the studio's (the settings schema in :mod:`studio.settings` reads them from
    here): greedy, top-p 0.95, 64 new tokens."""

    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int | None = None
    """Seed for sampling; None draws from the backend's generator."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence (benchmarks that need equal work on both sides)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Generation:
    """One generated continuation with its token-level signals."""

    text: str
    """Decoded text, cut before a stop string if one was hit."""
    tokens: list[TokenInfo]
    """Generated tokens (those kept in ``text``; their texts join to it) with the model's logprob and entropy."""
    finish_reason: str
    """``stop`` (a stop string), ``eos``, ``length`` (max_new_tokens) or ``interrupted``."""


@dataclass
class CacheStats:
    """How much of a prompt was served from the session's KV cache."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    """Tokens whose keys and values came from the cache."""
    encoded_tokens: int = 0
    """Tokens run through the model for this prompt."""
    prefix_changed: bool = False
    """The cached prompt was not a prefix of this one (its tail had to be dropped)."""
    source: str = "session"
    """Whose cache: ``session`` (the caller's :class:`PrefixSession`), ``engine`` (a server's
    prefix cache, as it reported), ``unreported`` (a server that did not say)."""
    shared_tokens: int = 0
    """Of ``reused_tokens``, those copied from a peer session's cache (lockstep rollouts that
    share a prompt: forks of one step encode the common history once)."""

    @property
    def full_encode(self) -> bool:
        """Nothing could be reused: the whole prompt was encoded."""
        return self.reused_tokens == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "encoded_tokens": self.encoded_tokens,
            "prefix_changed": self.prefix_changed,
            "full_encode": self.full_encode,
            "source": self.source,
            "shared_tokens": self.shared_tokens,
        }


@dataclass
class GenerateCall:
    """The arguments of one :meth:`Backend.generate` call, for :meth:`Backend.generate_many`."""

    messages: list[Message]
    n: int = 1
    sampling: SamplingParams | None = None
    stop: list[Stop] | None = None
    images: list[np.ndarray] | None = None
    session: PrefixSession | None = None
    should_stop: Callable[[], bool] | None = None
    assistant_prefix: str = ""
    on_token: TokenListener | None = None
    steering: Steering | None = field(default_factory=current_steering)
    """The caller's steering (:func:`studio.models.steering.steered`), taken where the call is made."""

    def kwargs(self) -> dict[str, Any]:
        """The :meth:`Backend.generate` arguments (the steering goes by :func:`steered`)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "steering"}


@dataclass
class ScoreCall:
    """The arguments of one :meth:`Backend.score` call, for a :class:`Batcher`."""

    messages: list[Message]
    continuations: list[str]
    images: list[np.ndarray] | None = None
    session: PrefixSession | None = None
    assistant_prefix: str = ""
    end_with_eos: bool = False
    steering: Steering | None = field(default_factory=current_steering)

    def kwargs(self) -> dict[str, Any]:
        """The :meth:`Backend.score` arguments (the steering goes by :func:`steered`)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "steering"}


@dataclass
class GenerateResult:
    """The answer of :meth:`Backend.generate`: n generations from one prompt."""

    generations: list[Generation]
    cache: CacheStats
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds: ``prefill_s``, ``first_token_s`` (prefill plus the first token), ``decode_s``, ``total_s``."""
    served_by: str | None = None
    """A served model: the server (of its replicas) that answered."""


class Batcher:
    """Generate calls decoding together, joining and leaving between steps (continuous batching:
    :class:`~studio.models.lockstep.LockstepPool` drives one from its scheduler thread).

    This default answers the calls gathered since the last step with one
    :meth:`Backend.generate_many`; the transformers backend decodes them token by token in one
    batch that new calls join (:class:`studio.models.hf.TransformersBatcher`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.pending: list[GenerateCall] = []

    @property
    def busy(self) -> bool:
        """Calls are decoding: :meth:`step` has work."""
        return bool(self.pending)

    def add(self, call: GenerateCall) -> GenerateResult | None:
        """Take ``call`` into the batch; its result when it is already answered, else None
        (a later :meth:`step` answers it). A :class:`StudioError` is that call's own error."""
        self.pending.append(call)
        return None

    def step(self) -> list[tuple[GenerateCall, GenerateResult | StudioError]]:
        """Decode one step; the calls that finished, with their results (or their own errors)."""
        answers = self.backend.generate_many(self.pending)  # raising: the calls stay for abort
        calls, self.pending = self.pending, []
        return list(zip(calls, answers))

    def score(self, call: ScoreCall) -> ScoreResult | None:
        """Take a score call; its result when answered now (this default scores it at once), else
        None (a later :meth:`step` answers it, beside the generate calls)."""
        with steered(call.steering):
            return self.backend.score(**call.kwargs())

    def abort(self) -> list[Any]:
        """After :meth:`step` raised: the calls (generate or score) that were in the batch (none remain)."""
        calls, self.pending = self.pending, []
        return calls

    def release(self, sessions: list[PrefixSession]) -> None:
        """These sessions' caller is gone: give their caches back in the backend's own form (a
        batcher that holds caches in its own memory copies them out). This default holds none."""

    def answer(self, calls: list[GenerateCall]) -> list[GenerateResult | StudioError]:
        """Every call joins at once and the batch decodes until all are done; a result or that call's
        one-line error each, in ``calls`` order. A failed step fails them all (their sessions reset)."""
        answers: dict[int, GenerateResult | StudioError] = {}
        for call in calls:
            try:
                result = self.add(call)
            except StudioError as exc:
                result = exc
            if result is not None:
                answers[id(call)] = result
        try:
            while self.busy:
                answers.update((id(call), result) for call, result in self.step())
        except BaseException:
            self.abort()
            raise
        return [answers[id(call)] for call in calls]


@dataclass
class ScoreResult:
    """The answer of :meth:`Backend.score`: per-token logprobs of each continuation."""

    token_logprobs: list[list[float]]
    tokens: list[list[int]]
    texts: list[list[str]] | None = None
    """Each token's share of its continuation's text (joined, they spell it), where the backend knows."""
    entropies: list[list[float]] | None = None
    """Entropy (nats) of the model's distribution at each token's position, where the backend knows."""
    cache: CacheStats | None = None
    """How much of the prompt came from the session's cache, where the backend keeps one."""
    alternatives: list[list[list[TokenAlternative]]] | None = None
    """The model's most likely tokens at each token's position, where the backend reports them."""

    @property
    def totals(self) -> list[float]:
        """Sum of the token logprobs of each continuation (its sequence log-probability)."""
        return [float(sum(values)) for values in self.token_logprobs]


class PrefixSession:
    """The KV cache of the last prompt a caller sent, so the next one encodes only what is new.

    Owned by one caller (one policy, one browser session). A backend reads and updates it;
    ``reset`` drops it (a new episode, a fork, another model).
    """

    def __init__(self) -> None:
        self.token_ids: list[int] = []
        """Tokens whose keys and values are in ``cache``, in order."""
        self.cache: Any = None
        """Backend-specific cache object (a transformers ``DynamicCache``)."""
        self.image_keys: list[str] = []
        """Fingerprints of the images among ``token_ids``, in order (image-text models)."""
        self.owner: Any = None
        """The backend the cache belongs to; another backend starts afresh."""
        self.steering = ""
        """The steering key (:attr:`Steering.key`) the cache was computed under: another starts afresh."""
        self.peers: list[PrefixSession] | None = None
        """Other callers' sessions (shared list) whose cached prompts this one may copy instead of
        encoding them again: lockstep rollouts forked from one step share their whole history."""

    def reset(self) -> None:
        """Drop the cache (the peers stay: they are who this caller runs beside, not what it saw)."""
        self.token_ids, self.cache, self.image_keys, self.owner, self.steering = [], None, [], None, ""


class Backend(ABC):
    """A loaded model. Subclasses implement :meth:`generate` and :attr:`card`; the rest have defaults.

    ``capabilities`` says which optional methods do real work; a method a backend cannot do
    raises a one-line :class:`~studio.errors.StudioError` naming the model.
    """

    capabilities: Capabilities = Capabilities()
    #: Why :meth:`attention` is not available, when ``capabilities.attention`` is off (the panels say it).
    no_attention_reason: str = "it is not a local transformers model"

    @property
    @abstractmethod
    def card(self) -> ModelCard:
        """The model card."""

    @property
    def info(self) -> dict[str, Any]:
        """The model card as JSON (a fresh dict: callers may annotate it)."""
        return self.card.to_dict()

    @property
    def context_length(self) -> int:
        return int(self.card.context_length)

    @abstractmethod
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
        """Sample ``n`` continuations of the chat after its generation prompt and ``assistant_prefix``.

        ``stop``: what ends a continuation (:data:`Stop`: strings, cut from the text, or patterns;
        :func:`studio.models.tokens.stop_boundary` finds the cut). ``should_stop()`` is
        polled between tokens (Stop: finish reason ``interrupted``). ``on_token(row, token)``,
        when given, sees each token of each row as it is drawn (a live view). Generations carry
        their tokens when ``capabilities.logprobs``, else an empty list."""

    def generate_many(self, calls: list[GenerateCall]) -> list[GenerateResult | StudioError]:
        """Answer several callers' :meth:`generate` calls; each answer is a result or that call's
        one-line error. With ``capabilities.batched_generate`` they decode as one batch (lockstep
        rollouts); this default answers them one after another."""
        answers: list[GenerateResult | StudioError] = []
        for call in calls:
            try:
                with steered(call.steering):
                    answers.append(self.generate(**call.kwargs()))
            except StudioError as exc:
                answers.append(exc)
        return answers

    def open_batch(self, pooled: bool = False) -> Batcher:
        """A :class:`Batcher` of this backend's generate calls (for ``capabilities.batched_generate``).

        ``pooled``: the batcher serves a :class:`~studio.models.lockstep.LockstepPool` for as long as
        the pool lives, and is told (:meth:`Batcher.release`) when a caller's sessions are done."""
        return Batcher(self)

    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        """Per-token logprobs of each continuation after the chat's generation prompt (``capabilities.scoring``)."""
        raise StudioError(
            f"Model {self.card.id} cannot score given text (its backend has no scoring): use action mode generate."
        )

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        """Token ids of the rendered chat (and model inputs for its images), for prompt budgets.

        The default counts UTF-8 bytes: never fewer than a byte-level tokenizer's tokens, so a
        prompt kept under the budget by this count fits."""
        text = "".join(message_text(m.get("content", "")) for m in messages) + assistant_prefix
        return list(text.encode("utf-8")), {}

    def attention(
        self, messages: list[Message], output: str, images: list[np.ndarray] | None = None, **options: Any
    ) -> Any:
        """What the model attended to while producing ``output`` (``capabilities.attention``)."""
        raise StudioError(f"Model {self.card.id} cannot show its attention: {self.no_attention_reason}.")

    def internals(self) -> Any:
        """The model's insides (``capabilities.internals``): residual streams, steering hooks, the
        logit lens (:class:`studio.models.hf_internals.Internals` for in-process models)."""
        raise StudioError(f"Model {self.card.id} cannot show its insides: {self.no_attention_reason}.")

    def unload(self) -> None:
        """Free the weights (and device memory); nothing to do by default."""


def message_text(content: Any) -> str:
    """A message's text (a string, or the text parts of a multimodal content list)."""
    if isinstance(content, str):
        return content
    return (
        " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if isinstance(content, list)
        else str(content)
    )


#: The Stop of the step the current thread is deciding (set by :func:`stopping`): a backend waiting
#: for its device polls it, so that Stop works while another session holds the device.
_STOP_CHECK: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("stop_check", default=None)
#: How often a caller waiting for the device looks at its Stop (seconds).
LOCK_POLL_S = 0.05


@contextlib.contextmanager
def stopping(check: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, this thread's model calls give up waiting for the device once ``check()`` is true."""
    token = _STOP_CHECK.set(check)
    try:
        yield
    finally:
        _STOP_CHECK.reset(token)


def acquire_unless_stopped(lock: threading.Lock | threading.RLock, check: Callable[[], bool] | None = None) -> bool:
    """Take ``lock``, waiting as long as it takes unless ``check()`` (or the thread's :func:`stopping`
    check) becomes true first: False then, and the lock is not held."""
    checks = [c for c in (check, _STOP_CHECK.get()) if c is not None]
    if not checks:
        lock.acquire()
        return True
    while not lock.acquire(timeout=LOCK_POLL_S):
        if any(c() for c in checks):
            return False
    return True
