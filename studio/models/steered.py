"""A backend whose every model call is steered: what a policy acting under a steering vector holds.

:class:`SteeredBackend` wraps a loaded backend (shared, unchanged) and sets the steering
(:func:`studio.models.steering.steered`) around each of its calls; the calls it makes carry the
steering wherever they are decoded (alone, as packed candidates, in a pool's lanes). A policy
records ``backend.steering`` on each step it takes. Only a backend with
``capabilities.internals`` can be steered; any other is refused in one line.
"""

from __future__ import annotations

from typing import Any

from studio.errors import StudioError
from studio.models.base import Backend, Batcher, GenerateCall, GenerateResult, ModelCard, ScoreResult
from studio.models.steering import Steering, steered


class SteeredBackend(Backend):
    """``inner`` with ``steering`` applied to every generate and score call."""

    def __init__(self, inner: Backend, steering: Steering) -> None:
        if not inner.capabilities.internals:
            raise StudioError(
                f"Model {inner.card.id} cannot be steered: steering adds to the residual stream of an in-process "
                "transformers model (a served model would need a steering plugin in its engine; see docs/inside.md)."
            )
        steerer = getattr(inner, "steerer", None)
        if steerer is not None:
            steerer.check(steering)  # a layer the model lacks, another hidden size: refused before any step
        self.inner, self.steering = inner, steering
        self.capabilities = inner.capabilities
        self.no_attention_reason = inner.no_attention_reason

    @property
    def card(self) -> ModelCard:
        return self.inner.card

    @property
    def info(self) -> dict[str, Any]:
        return {**self.inner.info, "steering": self.steering.record()}

    def generate(self, messages: Any, *args: Any, **kwargs: Any) -> GenerateResult:
        with steered(self.steering):
            return self.inner.generate(messages, *args, **kwargs)

    def generate_many(self, calls: list[GenerateCall]) -> list[Any]:
        for call in calls:
            call.steering = call.steering or self.steering
        return self.inner.generate_many(calls)

    def open_batch(self, pooled: bool = False) -> Batcher:
        return self.inner.open_batch(pooled)

    def score(self, messages: Any, *args: Any, **kwargs: Any) -> ScoreResult:
        with steered(self.steering):
            return self.inner.score(messages, *args, **kwargs)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.encode(*args, **kwargs)

    def attention(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.attention(*args, **kwargs)

    def internals(self) -> Any:
        return self.inner.internals()

    def unload(self) -> None:
        """Nothing: the weights belong to the wrapped backend, which others may be using."""

    def __getattr__(self, name: str) -> Any:  # lock, tokenizer, device...: the wrapped backend's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def steering_of(backend: Any) -> Steering | None:
    """The steering a backend applies (None for an unsteered one)."""
    return backend.steering if isinstance(backend, SteeredBackend) else None
