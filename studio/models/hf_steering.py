"""Steering hooks of the transformers backend: ``alpha * vector`` added to the residual stream after
chosen decoder layers, for one call's forward passes (the device lock is held, so hooks on the
shared model see only that call).

Which tokens are steered depends on the phase of the forward: ``prompt`` while a prompt is
encoded (:func:`studio.models.hf_decode.prefill`), ``generated`` for the tokens after it
(decoding, scored continuations). The lanes of a pool pack several callers' tokens in one
forward: there each token gets its own caller's addition (:meth:`Steerer.per_token`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from studio.errors import StudioError
from studio.models.steering import Steering


def module_at(model: Any, paths: tuple[str, ...], kind: type = torch.nn.Module) -> Any:
    """The first of ``paths`` (dotted attribute paths) that leads to a ``kind`` module in ``model``, else None."""
    for path in paths:
        node = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, kind):
            return node
    return None


def decoder_layers(model: Any) -> Any:
    """The model's decoder blocks in order (a ``ModuleList``): ``model.model.layers`` and the
    variants image-text models nest it under."""
    paths = ("model.layers", "model.language_model.layers", "language_model.model.layers", "transformer.h")
    layers = module_at(model, paths, torch.nn.ModuleList)
    if layers is None or not len(layers):
        raise StudioError(f"Cannot find the decoder layers of {type(model).__name__} to steer or read them.")
    return layers


def _add(output: Any, delta: torch.Tensor) -> Any:
    """A decoder layer's output with ``delta`` added to its hidden states (a tensor, or a tuple's first)."""
    if isinstance(output, tuple):
        return (output[0] + delta.to(output[0].dtype), *output[1:])
    return output + delta.to(output.dtype)


class Steerer:
    """The steering of one backend's model: hooks registered for a call, removed after it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = decoder_layers(model)
        self.steering: Steering | None = None
        self.phase = "generated"
        self._directions: dict[int, torch.Tensor] = {}
        self._tokens: dict[int, torch.Tensor] | None = None  # per-token additions (lanes)

    def check(self, steering: Steering) -> None:
        """One line when ``steering`` does not fit this model (a layer it lacks, another hidden size)."""
        count = len(self.layers)
        hidden = int(self.model.config.get_text_config().hidden_size)
        for layer in steering.layers:
            if not 0 <= layer < count:
                raise StudioError(f"Steering vector {steering.name!r}: layer {layer} is not one of 0..{count - 1}.")
            size = int(steering.vectors[layer].shape[-1])
            if size != hidden:
                raise StudioError(
                    f"Steering vector {steering.name!r} has size {size}, this model's hidden size is {hidden}: "
                    "it was made for another model."
                )

    @contextlib.contextmanager
    def active(self, steering: Steering | None) -> Iterator[None]:
        """Within the block, forwards are steered by ``steering`` (None: nothing is hooked)."""
        if steering is None:
            yield
            return
        self.check(steering)
        device = next(self.model.parameters()).device
        self._directions = {
            layer: torch.as_tensor(steering.vectors[layer], dtype=torch.float32, device=device) * float(steering.alpha)
            for layer in steering.layers
        }
        self.steering, self.phase = steering, "generated"
        handles = [self.layers[layer].register_forward_hook(self._hook(layer)) for layer in steering.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.steering, self._directions = None, {}

    @contextlib.contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        """Within the block, forwards encode tokens of ``phase`` (``prompt`` or ``generated``)."""
        before, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = before

    @contextlib.contextmanager
    def per_token(self, rows: list[tuple[Steering | None, str, int]]) -> Iterator[None]:
        """One packed forward whose tokens come from several callers: ``rows`` lists, in order,
        each caller's (steering, phase, token count); each token gets its caller's addition."""
        if not any(steering is not None and steering.applies_to(phase) for steering, phase, _ in rows):
            yield
            return
        device = next(self.model.parameters()).device
        hidden = int(self.model.config.get_text_config().hidden_size)
        total = sum(count for _, _, count in rows)
        additions: dict[int, torch.Tensor] = {}
        start = 0
        for steering, phase, count in rows:
            if steering is not None and steering.applies_to(phase):
                self.check(steering)
                for layer in steering.layers:
                    if layer not in additions:
                        additions[layer] = torch.zeros(1, total, hidden, dtype=torch.float32, device=device)
                    vector = torch.as_tensor(steering.vectors[layer], dtype=torch.float32, device=device)
                    additions[layer][0, start : start + count] += float(steering.alpha) * vector
            start += count
        self._tokens = additions
        handles = [self.layers[layer].register_forward_hook(self._hook(layer)) for layer in additions]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._tokens = None

    def _hook(self, layer: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            if self._tokens is not None:
                return _add(output, self._tokens[layer]) if layer in self._tokens else output
            if self.steering is None or not self.steering.applies_to(self.phase):
                return output
            return _add(output, self._directions[layer])

        return hook


@contextlib.contextmanager
def recorded_last_token(layers: Any, recorder: Any) -> Iterator[None]:
    """Within the block (one prompt encoding), each block's output at the last token goes to
    ``recorder.layers`` (float32, (layers, hidden)); nothing is hooked when there is no recorder or it
    already holds this step's."""
    if recorder is None or recorder.layers is not None:
        yield
        return
    read: dict[int, torch.Tensor] = {}

    def keep(index: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            read[index] = hidden[0, -1].detach().float().cpu()

        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    if len(read) == len(layers):
        recorder.layers = torch.stack([read[i] for i in range(len(layers))]).numpy()
