"""What the model looked at: attention rows of chosen tokens, extracted lazily and bounded.

For one step (or candidate), :func:`capture_rows` runs one forward pass over the prompt plus
the output with eager attention (switched on for that pass only) and keeps, layer by layer
through forward hooks on the attention modules, only the query rows of interest (the
action's tokens, the thought's, or all generated tokens). Each layer's full T×T weights exist
only while that layer runs, so what is kept grows as layers × heads × queries × T instead of
layers × heads × T² (what ``output_attentions=True`` returns).

:class:`AttentionMap` holds the rows with what is needed to read them: the tokens, their
character offsets, the prompt's segments (system, task, history, current observation,
image, output). Aggregations (mean, max, one layer, one head, attention rollout) and the
per-token "perception" share are pure numpy over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studio.errors import StudioError

SEGMENTS = ("system", "task", "history", "observation", "image", "output")
AGGREGATIONS = ("mean", "max", "layer", "head", "rollout")
#: Rollout multiplies full (head-averaged) matrices of every layer: only for prompts this short.
ROLLOUT_MAX_TOKENS = 3072


@dataclass
class AttentionMap:
    """Captured attention rows of one output, and how to read them."""

    tokens: list[str]
    """The text of every position (prompt, then output)."""
    prompt_length: int
    rows: list[int]
    """Absolute positions of the captured query rows."""
    weights: np.ndarray
    """(layers, heads, len(rows), T) float32: each row sums to 1 over positions 0..row."""
    segments: dict[str, list[int]] = field(default_factory=dict)
    """Segment name -> positions."""
    offsets: list[tuple[int, int]] | None = None
    """Character span of each position in :attr:`text` (None for image positions)."""
    text: str = ""
    """The rendered prompt followed by the output."""
    image_grid: tuple[int, int] | None = None
    """(rows, columns) of the image patches, for image-text models."""
    rollout: np.ndarray | None = None
    """(len(rows), T) attention rollout of the captured rows, when it was asked for."""
    seconds: float = 0.0
    span: str = "generated"
    """The span the rows were captured for."""
    span_rows: dict[str, list[int]] = field(default_factory=dict)
    """Span name (``action``, ``thought``, ``generated``) -> indices into :attr:`rows`."""
    observation_span: tuple[int, int] | None = None
    """Character span of the current observation in :attr:`text`."""

    @property
    def layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def length(self) -> int:
        return int(self.weights.shape[-1])

    def _indices(self, span: str | None) -> list[int]:
        """The captured rows of ``span`` (all rows for None). A span the output does not have
        is an error, never a silent fall-back to every row."""
        if not span or span not in self.span_rows:
            return list(range(len(self.rows)))
        chosen = self.span_rows[span]
        if not chosen:
            raise missing_span(span)
        return chosen

    def aggregate(
        self, mode: str = "mean", layer: int | None = None, head: int | None = None, span: str | None = None
    ) -> np.ndarray:
        """Attention from a span's rows to every position (T,), averaged over those rows."""
        indices = self._indices(span)
        weights = self.weights[:, :, indices]
        if mode == "rollout":
            if self.rollout is None:
                raise ValueError("rollout was not computed for this map")
            return self.rollout[indices].mean(axis=0)
        if mode == "layer":
            per_row = weights[int(layer or 0)].mean(axis=0)
        elif mode == "head":
            per_row = weights[int(layer or 0), int(head or 0)]
        elif mode == "max":
            per_row = weights.max(axis=(0, 1))
        else:
            per_row = weights.mean(axis=(0, 1))
        return per_row.mean(axis=0)

    def segment_shares(self, span: str | None = None) -> dict[str, np.ndarray]:
        """Segment -> (layers, heads) share of the span's attention that lands in it."""
        mean_rows = self.weights[:, :, self._indices(span)].mean(axis=2)  # (L, H, T)
        return {name: mean_rows[:, :, positions].sum(axis=-1) for name, positions in self.segments.items() if positions}

    def perception(self, segment_names: tuple[str, ...] = ("observation", "image")) -> np.ndarray:
        """For each captured row, the share of its attention (mean over layers and heads) on the observation."""
        positions = sorted({p for name in segment_names for p in self.segments.get(name, [])})
        if not positions:
            return np.zeros(len(self.rows), dtype=np.float32)
        return self.weights.mean(axis=(0, 1))[:, positions].sum(axis=-1)


def attention_modules(model: Any) -> list[Any]:
    """The self-attention modules of the language model, in layer order (not a vision tower's)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    found, names = [], []
    for name, module in decoder.named_modules():
        # LlamaAttention (…self_attn), GPT2Attention (…attn), …: the outermost attention modules.
        if type(module).__name__.endswith("Attention") and not any(name.startswith(n + ".") for n in names):
            found.append(module)
            names.append(name)
    if not found:
        raise ValueError(f"no self-attention modules found in {type(model).__name__}")
    return found


def capture_rows(
    model: Any, inputs: dict[str, Any], rows: list[int], rollout: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward pass keeping only ``rows`` of every layer's attention: (L, H, Q, T) and the rollout.

    Eager attention is switched on for this pass only (SDPA returns no weights) and the
    previous implementation restored, whatever happens. With ``rollout``, each layer's
    head-averaged matrix is also kept (float16) to compute attention rollout (Abnar &
    Zuidema, 2020: residual-weighted products of the layers' attention) for the rows.
    """
    import torch

    captured: list[torch.Tensor] = []
    full: list[torch.Tensor] = []
    index = torch.tensor(rows, dtype=torch.long)

    def keep(_module: Any, _args: Any, _kwargs: Any, output: Any) -> None:
        weights = output[1]  # (B, H, T, T), alive only while this layer runs
        captured.append(weights[0].index_select(1, index.to(weights.device)).float().cpu())
        if rollout:
            full.append(weights[0].mean(dim=0).to(torch.float16).cpu())

    previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
    hooks = [module.register_forward_hook(keep, with_kwargs=True) for module in attention_modules(model)]
    try:
        model.set_attn_implementation("eager")
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
        model.set_attn_implementation(previous)
    weights = torch.stack(captured).numpy()  # (L, H, Q, T)
    return weights, (_rollout(full, rows) if rollout else None)


def _rollout(layers: list[Any], rows: list[int]) -> np.ndarray:
    """Rows of  Â_L · … · Â_1  with  Â = (A + I) / 2  renormalised; computed from the top down."""
    import torch

    length = layers[0].shape[-1]
    vectors = torch.zeros((len(rows), length), dtype=torch.float32)
    vectors[torch.arange(len(rows)), torch.tensor(rows)] = 1.0
    identity_weight = 0.5
    for matrix in reversed(layers):
        mixed = (1 - identity_weight) * (vectors @ matrix.float()) + identity_weight * vectors
        vectors = mixed / mixed.sum(dim=-1, keepdim=True)
    return vectors.numpy()


@dataclass
class PromptParts:
    """Where each part of a chat lies in its rendered text (character spans)."""

    system: tuple[int, int] | None = None
    task: tuple[int, int] | None = None
    history: tuple[int, int] | None = None
    observation: tuple[int, int] | None = None
    output: tuple[int, int] | None = None


def locate_parts(
    text: str, messages: list[dict[str, Any]], instruction: str, observation: str, output_start: int
) -> PromptParts:
    """Find the system message, the task, the history and the current observation in ``text``."""
    parts = PromptParts(output=(output_start, len(text)))

    def content_of(message: dict[str, Any]) -> str:
        content = message.get("content")
        if isinstance(content, list):
            return "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        return str(content or "")

    cursor, spans = 0, []
    for message in messages:
        body = content_of(message)
        start = text.find(body, cursor) if body else -1
        spans.append((start, start + len(body)) if start >= 0 else None)
        if start >= 0:
            cursor = start + len(body)
    if messages and messages[0].get("role") == "system" and spans[0]:
        parts.system = spans[0]
        at = text.find(instruction, spans[0][0], spans[0][1]) if instruction else -1
        if at >= 0:
            parts.task = (at, at + len(instruction))
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is not None and spans[last_user]:
        start, end = spans[last_user]
        at = text.find(observation, start, end) if observation else -1
        parts.observation = (at, at + len(observation)) if at >= 0 else (start, end)
        first_history = 1 if parts.system else 0
        history = [s for s in spans[first_history:last_user] if s]
        if history:
            parts.history = (history[0][0], history[-1][1])
    return parts


def assign_segments(
    offsets: list[tuple[int, int] | None], parts: PromptParts, image_positions: list[int]
) -> dict[str, list[int]]:
    """Positions of each segment; a token belongs to the segment its characters overlap most."""
    segments: dict[str, list[int]] = {name: [] for name in SEGMENTS}
    # The task sits inside the system message: it wins where both overlap.
    spans = [(name, getattr(parts, name)) for name in ("task", "observation", "output", "history", "system")]
    for position, span in enumerate(offsets):
        if span is None:
            continue
        start, end = span
        for name, region in spans:
            if region is not None and start < region[1] and end > region[0]:
                segments[name].append(position)
                break
    segments["image"] = list(image_positions)
    return segments


def missing_span(span: str) -> StudioError:
    """The error for an output that has no tokens of the model's own in ``span``."""
    what = 'no action (the model wrote no "Action:")' if span == "action" else f"no {span} tokens of the model's own"
    return StudioError(f"This output has {what}: look at another span.")


def query_rows(
    output_offsets: list[tuple[int, int]],
    output_text: str,
    span: str,
    first_position: int,
    written: list[tuple[int, int]] = (),
) -> list[int]:
    """Positions of the output's tokens in ``span``: ``action`` (after "Action:"), ``thought``
    (before it) or ``generated`` (all). Tokens inside ``written`` (character ranges the policy
    wrote, such as the forced ``Thought:``) are in no span: the model did not choose them.
    An output without "Action:" has no action span (empty)."""

    def by_policy(start: int, end: int) -> bool:
        return any(low <= start and end <= high for low, high in written)

    tokens = [(first_position + i, s, e) for i, (s, e) in enumerate(output_offsets) if not by_policy(s, e)]
    if span == "generated":
        return [p for p, _, _ in tokens]
    marker = output_text.rfind("Action:")
    if marker < 0:
        return [] if span == "action" else [p for p, _, _ in tokens]
    action_start = marker + len("Action:")
    if span == "action":
        chosen = [(p, output_text[max(s, action_start) : e]) for p, s, e in tokens if e > action_start]
        while chosen and not chosen[0][1].strip():  # the space after "Action:" is not the action
            chosen.pop(0)
        return [p for p, _ in chosen]
    return [p for p, s, e in tokens if s < marker]


def policy_written(text: str, tokens: list[Any] | None) -> list[tuple[int, int]]:
    """Character ranges of ``text`` whose tokens the policy wrote (``forced``/``inserted``), not the model."""
    if not tokens or "".join(t.text for t in tokens) != text:
        return []  # older records: no origins to go by
    ranges, at = [], 0
    for token in tokens:
        end = at + len(token.text)
        if token.origin in ("forced", "inserted") and end > at:
            if ranges and ranges[-1][1] == at:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((at, end))
        at = end
    return ranges
