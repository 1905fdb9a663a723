"""Attention of the transformers backend: what the model looked at while producing an output.

One forward pass over prompt + output with the attention rows of the chosen span captured
(:func:`studio.analysis.attention.capture_rows`), mapped back to text offsets and image patches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from studio.errors import StudioError
from studio.models.base import Message


def attention(
    backend: Any,
    messages: list[Message],
    output: str,
    images: list[np.ndarray] | None = None,
    span: str = "generated",
    instruction: str = "",
    observation: str = "",
    rollout: bool = False,
    written: list[tuple[int, int]] = (),
) -> Any:
    """What the model attended to while producing ``output`` after ``messages`` (one pass, bounded).

    Returns a :class:`studio.analysis.attention.AttentionMap` with the rows of ``span``
    (``action``, ``thought`` or ``generated``) for every layer and head. ``written``: the
    character ranges of ``output`` the policy wrote (in no span).
    """
    from studio.analysis.attention import (
        AttentionMap,
        ROLLOUT_MAX_TOKENS,
        assign_segments,
        capture_rows,
        locate_parts,
        missing_span,
        query_rows,
    )

    started = time.perf_counter()
    prompt = backend.render(messages)
    text = prompt + output
    encoded = backend.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    inputs: dict[str, Any] = {}
    if backend.processor is not None and images:
        batch = backend.processor(text=[text], images=list(images), return_tensors="pt")
        expanded = batch["input_ids"][0].tolist()
        offsets = _expand_offsets(ids, offsets, expanded, backend.image_token_id)
        ids = expanded
        inputs = {
            k: v.to(backend.device) if hasattr(v, "to") else v
            for k, v in batch.items()
            if k not in ("input_ids", "attention_mask")
        }
    image_positions = [
        i for i, t in enumerate(ids) if backend.image_token_id is not None and t == backend.image_token_id
    ]
    first_output = next((i for i, o in enumerate(offsets) if o is not None and o[1] > len(prompt)), len(ids))
    output_offsets = [(max(o[0] - len(prompt), 0), o[1] - len(prompt)) for o in offsets[first_output:]]
    rows = query_rows(output_offsets, output, span, first_output, written)
    if not rows:
        raise missing_span(span)
    span_rows = {
        name: [rows.index(p) for p in query_rows(output_offsets, output, name, first_output, written) if p in rows]
        for name in ("action", "thought", "generated")
    }
    if rollout and len(ids) > ROLLOUT_MAX_TOKENS:
        raise StudioError(f"Attention rollout is limited to {ROLLOUT_MAX_TOKENS} tokens; this step has {len(ids)}.")
    with backend.lock:
        inputs["input_ids"] = torch.tensor([ids], device=backend.device)
        weights, rolled = capture_rows(backend.model, inputs, rows, rollout=rollout)
    parts = locate_parts(text, messages, instruction, observation, len(prompt))
    tokens = [text[o[0] : o[1]] if o is not None else "\u25a3" for o in offsets]
    return AttentionMap(
        tokens=tokens,
        prompt_length=first_output,
        rows=rows,
        weights=weights,
        segments=assign_segments(offsets, parts, image_positions),
        offsets=offsets,
        text=text,
        image_grid=_image_grid(len(image_positions), len(images or [])),
        rollout=rolled,
        seconds=time.perf_counter() - started,
        span=span,
        span_rows=span_rows,
        observation_span=parts.observation,
    )


def _image_grid(image_tokens: int, images: int) -> tuple[int, int] | None:
    """(rows, columns) of patches per image, for square-patch vision towers."""
    if not image_tokens or not images:
        return None
    per_image = image_tokens // images
    side = int(round(per_image**0.5))
    return (side, side) if side * side == per_image else None


def _expand_offsets(
    ids: list[int], offsets: list[tuple[int, int]], expanded: list[int], image_token: int | None
) -> list[tuple[int, int] | None]:
    """Offsets for the processor's ids, where each image placeholder became a run of image tokens."""
    result: list[tuple[int, int] | None] = []
    position = 0
    for token, span in zip(ids, offsets):
        if token == image_token:
            run = 0
            while position + run < len(expanded) and expanded[position + run] == image_token:
                run += 1
            result.extend([None] * run)
            position += run
        else:
            result.append(span)
            position += 1
    if position != len(expanded):  # a tokenizer that splits differently: fall back to no text offsets
        return [None if t == image_token else (0, 0) for t in expanded]
    return result
