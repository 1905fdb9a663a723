"""Images for a served image-text model: the chat endpoint with image parts.

vLLM's completions endpoint takes token ids but no images, so a step with a frame (a web page's
screenshot) goes to ``/v1/chat/completions``: the studio's messages with each ``{"type": "image"}``
part replaced by the frame as a PNG data URI, the assistant's forced prefix (``Thought:``) as a
final assistant message that the engine continues (``continue_final_message``). The engine renders
the prompt with the model's chat template (not the studio: the one thing that is not exact here);
what comes back is exact: every generated token as its id (``return_tokens_as_token_ids``), its
logprob and the top k, as from the completions endpoint. Such a model does not score: the chat
endpoint cannot force given tokens exactly (it would re-tokenize a text prefix), so score mode and
the policy's forced ``Thought:`` logprobs are off for it, and a step keeps its text without token
records (its ``capabilities.scoring`` is False; a text-only served model keeps both).

Whether a served model takes images is read from its config (``vision_config``) in the folder its
tokenizer was loaded from; a model without one takes text only, and says so in one line.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.models.base import Message, SamplingParams


def takes_images(tokenizer: Any) -> bool:
    """Whether the served model's config (next to its tokenizer, when this machine has it) has a vision tower."""
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


def frame_uri(frame: np.ndarray) -> str:
    """A frame as a lossless PNG data URI (what an ``image_url`` part carries)."""
    from studio.frames import frame_to_png

    png = frame_to_png(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
    assert png is not None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def chat_messages(
    messages: list[Message], images: list[np.ndarray], assistant_prefix: str = ""
) -> list[dict[str, Any]]:
    """The studio's messages for the chat endpoint: image parts carry the frames, in order; one
    line when the messages and the images do not match."""
    frames = list(images)
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image":
                    if not frames:
                        raise StudioError("The prompt has more image places than images.")
                    parts.append({"type": "image_url", "image_url": {"url": frame_uri(frames.pop(0))}})
                elif isinstance(part, dict) and part.get("type") == "text":
                    parts.append({"type": "text", "text": str(part.get("text", ""))})
            content = parts
        out.append({"role": message["role"], "content": content})
    if frames:
        raise StudioError("The prompt has fewer image places than images.")
    if assistant_prefix:
        out.append({"role": "assistant", "content": assistant_prefix})
    return out


def stream_body(served_id: str, n: int, sampling: SamplingParams, stop: list[str]) -> dict[str, Any]:
    """What a streamed generation request says on either endpoint: ``n`` samples with ``sampling``, the
    stop strings, and every token as its id (``return_tokens_as_token_ids``)."""
    body: dict[str, Any] = {
        "model": served_id,
        "n": n,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "return_tokens_as_token_ids": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if stop:
        body["stop"] = stop
    if sampling.seed is not None:
        body["seed"] = int(sampling.seed)
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    return body


def chat_body(
    served_id: str,
    messages: list[dict[str, Any]],
    n: int,
    sampling: SamplingParams,
    top_k: int,
    stop: list[str],
    continues: bool,
) -> dict[str, Any]:
    """The chat request: ``n`` streamed samples with token ids, logprobs and the top ``top_k``."""
    body = stream_body(served_id, n, sampling, stop)
    body.update(messages=messages, logprobs=True, top_logprobs=top_k)
    if continues:  # the forced prefix is the assistant's own message, continued (not a new turn)
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def as_completion_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """A streamed chat choice in the completions shape the backend reads (tokens, their logprobs,
    the top k of each)."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return {
        "index": choice.get("index", 0),
        "finish_reason": choice.get("finish_reason"),
        "logprobs": {
            "tokens": [item.get("token") for item in content],
            "token_logprobs": [item.get("logprob") for item in content],
            "top_logprobs": [
                {top.get("token"): top.get("logprob") for top in item.get("top_logprobs") or []} for item in content
            ],
        },
    }
