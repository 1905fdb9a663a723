"""A scripted backend: replays given outputs. A first-class backend, not a test hack.

Use it to demo the studio without a model, to reproduce a policy bug from a logged
output, or to test panels deterministically. Each ``generate`` call returns the next
scripted text (``n`` times, cycling); ``score`` prefers continuations listed in
``preferences`` and otherwise shorter ones. Token-level data is made up per character
(logprob -0.1, entropy 1.0) so the views have something to show. ``token_seconds`` replays
at a model's pace (live steps, Stop), e.g. ``{"outputs": [...], "token_seconds": 0.05}``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from studio.models.base import (
    Backend,
    CacheStats,
    Capabilities,
    GenerateResult,
    Generation,
    Message,
    ModelCard,
    PrefixSession,
    SamplingParams,
    ScoreResult,
    Stop,
    TokenListener,
)
from studio.models.tokens import stop_boundary
from studio.trace import TokenInfo


class ScriptedBackend(Backend):
    """Replays ``outputs`` in order (cycling)."""

    def __init__(
        self,
        outputs: list[str],
        preferences: list[str] | None = None,
        name: str = "scripted",
        token_seconds: float = 0.0,
    ) -> None:
        if not outputs:
            raise ValueError("a scripted backend needs at least one output")
        #: Seconds per token: replay at a model's pace (a demo of live steps; Stop interrupts between tokens).
        self.token_seconds = float(token_seconds)
        self.outputs = list(outputs)
        self.preferences = list(preferences or [])
        self.name = name
        self.calls = 0
        self.capabilities = Capabilities(logprobs=True, scoring=True)

    @property
    def card(self) -> ModelCard:
        return ModelCard(
            id=self.name,
            source="scripted",
            capabilities=self.capabilities,
            architecture="ScriptedBackend",
            kind="scripted",
            parameters=0,
            layers=0,
            heads=0,
            kv_heads=0,
            context_length=1_000_000,
            vocab_size=0,
        )

    def encode(
        self, messages: list[Message], assistant_prefix: str = "", images: list[np.ndarray] | None = None
    ) -> tuple[list[int], dict[str, Any]]:
        text = "".join(str(m.get("content", "")) for m in messages) + assistant_prefix
        return [ord(ch) % 256 for ch in text], {}

    @staticmethod
    def _tokens(text: str) -> list[TokenInfo]:
        return [TokenInfo(id=ord(ch) % 256, text=ch, logprob=-0.1, entropy=1.0) for ch in text]

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
        generations = []
        for row in range(n):
            text = self.outputs[self.calls % len(self.outputs)]
            self.calls += 1
            if assistant_prefix and text.startswith(assistant_prefix):
                text = text[len(assistant_prefix) :]  # the prompt already holds it
            finish = "eos"
            boundary = stop_boundary(text, stop or [])
            if boundary is not None:
                text, finish = text[:boundary], "stop"
            tokens = self._tokens(text)
            if self.token_seconds or on_token is not None:
                tokens, finish = self._replay(row, tokens, finish, on_token, should_stop)
                text = "".join(t.text for t in tokens)
            generations.append(Generation(text=text, tokens=tokens, finish_reason=finish))
        prompt = len(self.encode(messages, assistant_prefix)[0])
        return GenerateResult(
            generations=generations,
            cache=CacheStats(prompt_tokens=prompt, encoded_tokens=prompt),
            timing={"total_s": 0.0},
        )

    def _replay(
        self, row: int, tokens: list[TokenInfo], finish: str, on_token: Any, should_stop: Any
    ) -> tuple[list[TokenInfo], str]:
        """Hand out tokens one by one at ``token_seconds`` each; a Stop cuts the output there."""
        for count, token in enumerate(tokens):
            if should_stop is not None and should_stop():
                return tokens[:count], "interrupted"
            if self.token_seconds:
                time.sleep(self.token_seconds)
            if on_token is not None:
                on_token(row, token)
        return tokens, finish

    def score(
        self,
        messages: list[Message],
        continuations: list[str],
        images: list[np.ndarray] | None = None,
        session: PrefixSession | None = None,
        assistant_prefix: str = "",
        end_with_eos: bool = False,
    ) -> ScoreResult:
        values, tokens, texts = [], [], []
        for text in continuations:
            stripped = text.strip()
            bonus = (
                5.0 * (len(self.preferences) - self.preferences.index(stripped))
                if stripped in self.preferences
                else 0.0
            )
            total = -0.5 * len(stripped) + bonus
            chars = list(text) or [""]
            values.append(
                [total / len(chars)] * len(chars) + ([0.0] if end_with_eos else [])
            )  # one made-up token per character
            tokens.append([ord(c) % 256 for c in chars] + ([0] if end_with_eos else []))
            texts.append(chars + ([""] if end_with_eos else []))
        return ScoreResult(
            token_logprobs=values, tokens=tokens, texts=texts, entropies=[[1.0] * len(v) for v in values]
        )

    def unload(self) -> None:
        """Nothing to free."""


def load_scripted(path: str) -> ScriptedBackend:
    """A scripted backend from a JSON file: a list of outputs, or ``{"outputs": [...], "preferences": [...]}``."""
    import json
    from pathlib import Path

    from studio.errors import StudioError

    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StudioError(f"Cannot read the scripted model {file}: {exc.strerror or exc}.") from None
    except json.JSONDecodeError as exc:
        raise StudioError(f"The scripted model {file} is not valid JSON: {exc.msg} at line {exc.lineno}.") from None
    outputs, preferences = (
        (data, None)
        if isinstance(data, list)
        else (data.get("outputs"), data.get("preferences"))
        if isinstance(data, dict)
        else (None, None)
    )
    if not outputs or not all(isinstance(o, str) for o in outputs):
        raise StudioError(f"The scripted model {file} needs a non-empty list of output strings.")
    pace = data.get("token_seconds", 0.0) if isinstance(data, dict) else 0.0
    if not isinstance(pace, (int, float)) or isinstance(pace, bool) or not 0 <= pace <= 1:
        raise StudioError(f"The scripted model {file}: token_seconds must be a number from 0 to 1.")
    return ScriptedBackend(list(outputs), preferences=preferences, name=f"scripted:{file.name}", token_seconds=pace)
