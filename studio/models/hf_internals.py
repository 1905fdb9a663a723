"""The insides of the transformers backend: the residual stream after each decoder block, the logit
lens, and the model's next-token distributions over a given output.

Each is one forward pass over prompt + output, without the caller's cache, under the device lock,
with the prompt tokenized as :meth:`TransformersBackend.score` does (so the lens at the last
layer reads the same distribution the model scores with). A steering given is applied as the
step was steered (prompt and output tokens each as its positions say).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from studio.errors import StudioError
from studio.models.base import Message
from studio.models.hf_steering import module_at
from studio.models.steering import Steering


@dataclass
class Residuals:
    """The residual stream after each decoder block at chosen positions of prompt + output."""

    layers: np.ndarray
    """float32 (layers, positions, hidden): row ``i`` is the output of decoder block ``i``."""
    positions: list[int]
    """Token positions read (the last prompt token first, then the output's tokens)."""
    tokens: list[str]
    """The text of the token at each position read."""
    prompt_length: int


def final_norm(model: Any) -> Any:
    """The norm applied after the last block, before the unembedding (identity when there is none)."""
    found = module_at(
        model, ("model.norm", "model.language_model.norm", "language_model.model.norm", "transformer.ln_f")
    )
    return found if found is not None else torch.nn.Identity()


class Internals:
    """What an in-process model computes inside (``capabilities.internals``)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.steerer = backend.steerer
        self.layer_count = len(self.steerer.layers)

    # -- one forward over prompt + output ------------------------------------------------------
    def _inputs(
        self, messages: list[Message], output: str, assistant_prefix: str, images: list[np.ndarray] | None
    ) -> tuple[list[int], list[int], dict[str, Any]]:
        ids, extra = self.backend.encode(messages, assistant_prefix, images)
        piece = self.backend.tokenizer(output, add_special_tokens=False)["input_ids"] if output else []
        return list(ids), list(piece), dict(extra)

    @contextlib.contextmanager
    def _captured(self, wanted: list[int]) -> Iterator[dict[int, torch.Tensor]]:
        """Hooks that keep each block's output at token positions ``wanted`` (float32)."""
        captured: dict[int, torch.Tensor] = {}
        index = torch.tensor(wanted, dtype=torch.long)

        def keep(layer: int) -> Any:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                hidden = output[0] if isinstance(output, tuple) else output
                captured[layer] = hidden[0, index.to(hidden.device)].float().cpu()

            return hook

        handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(self.steerer.layers)]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def _forward(
        self, ids: list[int], prompt_length: int, extra: dict[str, Any], steering: Steering | None, wanted: list[int]
    ) -> tuple[Any, dict[int, torch.Tensor]]:
        backend = self.backend
        inputs = {k: v.to(backend.device) if hasattr(v, "to") else v for k, v in extra.items()}
        rows = [(steering, "prompt", prompt_length), (steering, "generated", len(ids) - prompt_length)]
        with backend.lock, torch.inference_mode():
            with self.steerer.per_token(rows), self._captured(wanted) as captured:
                try:
                    out = backend.model(input_ids=torch.tensor([ids], device=backend.device), use_cache=False, **inputs)
                except torch.OutOfMemoryError:
                    raise StudioError(backend._out_of_memory()) from None
        return out, captured

    # -- what callers ask ------------------------------------------------------------------------
    def residuals(
        self,
        messages: list[Message],
        output: str = "",
        assistant_prefix: str = "",
        images: list[np.ndarray] | None = None,
        steering: Steering | None = None,
        positions: str = "last",
    ) -> Residuals:
        """Each block's output at the last prompt token (``positions="last"``), or there and at every
        token of ``output`` (``"output"``)."""
        ids, piece, extra = self._inputs(messages, output if positions == "output" else "", assistant_prefix, images)
        prompt_length = len(ids)
        wanted = [prompt_length - 1] + list(range(prompt_length, prompt_length + len(piece)))
        _out, captured = self._forward(ids + piece, prompt_length, extra, steering, wanted)
        layers = np.stack([captured[i].numpy() for i in range(self.layer_count)]).astype(np.float32)
        text = self.backend.token_text
        return Residuals(layers, wanted, [text((ids + piece)[p]) for p in wanted], prompt_length)

    def lens(
        self,
        messages: list[Message],
        continuations: list[str],
        assistant_prefix: str = "",
        images: list[np.ndarray] | None = None,
        steering: Steering | None = None,
    ) -> np.ndarray:
        """The logit lens: (layers, continuations) log-probability of each continuation, read from
        each block's output through the final norm and the unembedding (row -1: the model's own)."""
        if not continuations or any(not c for c in continuations):
            raise StudioError("The logit lens needs non-empty continuations to read.")
        norm, unembed = final_norm(self.backend.model), self.backend.model.get_output_embeddings()
        table = np.zeros((self.layer_count, len(continuations)), dtype=np.float64)
        for column, continuation in enumerate(continuations):
            ids, piece, extra = self._inputs(messages, continuation, assistant_prefix, images)
            start = len(ids)
            wanted = list(range(start - 1, start + len(piece) - 1))  # each position predicts the next token
            _out, captured = self._forward(ids + piece, start, extra, steering, wanted)
            target = torch.tensor(piece)
            with torch.inference_mode():
                for layer in range(self.layer_count):
                    hidden = captured[layer].to(self.backend.device, self.backend.dtype)
                    logits = unembed(norm(hidden[None]))[0].float().cpu()
                    logprobs = torch.log_softmax(logits, dim=-1)
                    table[layer, column] = float(logprobs[torch.arange(len(piece)), target].sum())
        return table

    def output_logprobs(
        self,
        messages: list[Message],
        output: str,
        assistant_prefix: str = "",
        images: list[np.ndarray] | None = None,
        steering: Steering | None = None,
    ) -> tuple[list[int], np.ndarray]:
        """``output``'s token ids and the model's next-token log-distribution (tokens, vocab) at each
        of them (float32), in one forward."""
        ids, piece, extra = self._inputs(messages, output, assistant_prefix, images)
        if not piece:
            raise StudioError("There is no output to read distributions over.")
        out, _ = self._forward(ids + piece, len(ids), extra, steering, [len(ids) - 1])
        logits = out.logits[0, len(ids) - 1 : len(ids) + len(piece) - 1].float()
        return piece, torch.log_softmax(logits, dim=-1).cpu().numpy()
