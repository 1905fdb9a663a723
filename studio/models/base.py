"""The Backend protocol: what the studio needs from a model, whatever runs it.

A backend generates (``generate``), scores given continuations (``score``) and declares
what it can do (``capabilities``), so panels enable themselves only where it makes sense.
Records here are plain dataclasses; torch never leaks out of a backend.

Per-session state that makes stepping fast — the KV cache of the prompt seen so far —
lives in a :class:`PrefixSession` owned by the caller (one per policy, so per browser
session), never in the backend, which is shared by every session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from studio.trace import TokenInfo

#: A chat message: ``{"role": "system"|"user"|"assistant", "content": str}``.
Message = dict[str, Any]
#: Called with (row, token) as each generated token is drawn: a live view of the generation.
TokenListener = Callable[[int, TokenInfo], None]
#: Called during loading with (fraction done 0..1, what is happening).
ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """The default progress callback: ignore."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can produce; the UI shows a panel only where the capability exists."""

    logprobs: bool = True
    attention: bool = False
    images: bool = False


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` is greedy decoding."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 96
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
        }


@dataclass
class GenerateResult:
    """The answer of :meth:`Backend.generate`: n generations from one prompt."""

    generations: list[Generation]
    cache: CacheStats
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds: ``prefill_s``, ``first_token_s`` (prefill plus the first token), ``decode_s``, ``total_s``."""


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

    def reset(self) -> None:
        self.token_ids, self.cache, self.image_keys, self.owner = [], None, [], None


@runtime_checkable
class Backend(Protocol):
    """A loaded model."""

    capabilities: Capabilities

    @property
    def info(self) -> dict[str, Any]:
        """The model card: id, source, architecture, parameters, layers, heads, context, device, dtype, memory, load time."""
        ...

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
        """Sample ``n`` continuations of the chat (batched, sharing the prompt's cache).

        ``on_token(row, token)``, when given, sees each token of each row as it is drawn
        (a live view; stop strings are cut from the result afterwards)."""
        ...

    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        """Per-token logprobs of each continuation after the chat's generation prompt (one pass)."""
        ...

    def unload(self) -> None:
        """Free the weights (and device memory)."""
        ...
