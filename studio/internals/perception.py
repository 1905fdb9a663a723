"""How much each output token depends on the observation, counterfactually (VPPO's token perception):
the KL divergence between the model's next-token distribution with the real observation and with
the observation ablated, at every token of the step's output (the output itself held fixed).

Ablations: ``mask`` replaces the observation's text in the step's last user turn by a
placeholder of the same shape (letters and digits become ``_``); ``other`` puts another
observation (another step's, another seed's) in its place; ``blank`` and ``noise`` replace the
step's image (for image-text models) by a black or a seeded random one. Set beside the
attention-based perception view of the trace: attention says where the model looked, this says
what changing it would have changed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.importers.transcript import prompts_of
from studio.models.base import Backend
from studio.models.steering import Steering
from studio.trace import Episode, Step

ABLATIONS = ("mask", "other", "blank", "noise")


@dataclass
class ObservationDependence:
    """Each output token's KL(real || ablated) in nats."""

    step_index: int
    ablation: str
    tokens: list[str]
    kl: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_index,
            "ablation": self.ablation,
            "tokens": self.tokens,
            "kl": [round(v, 8) for v in self.kl],
        }


def masked(text: str) -> str:
    """``text`` with every letter and digit replaced by ``_`` (its layout kept)."""
    return re.sub(r"[A-Za-z0-9]", "_", text)


def ablated_messages(messages: list[dict[str, Any]], observation: str, replacement: str) -> list[dict[str, Any]]:
    """``messages`` with ``observation`` replaced by ``replacement`` in the last user turn (the whole
    turn when the observation is not found in it)."""
    changed = copy.deepcopy(messages)
    for message in reversed(changed):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = (
                content.replace(observation, replacement) if observation and observation in content else replacement
            )
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str) and observation in part["text"]:
                    part["text"] = part["text"].replace(observation, replacement)
        return changed
    raise StudioError("The step's prompt has no user turn holding an observation to ablate.")


def kl_per_token(real: np.ndarray, ablated: np.ndarray) -> list[float]:
    """KL(p || q) per row of two (tokens, vocab) log-distributions, in float64."""
    p_log, q_log = real.astype(np.float64), ablated.astype(np.float64)
    return [max(0.0, float(v)) for v in (np.exp(p_log) * (p_log - q_log)).sum(axis=1)]


def observation_dependence(
    backend: Backend,
    episode: Episode,
    step: Step,
    ablation: str = "mask",
    other: str | None = None,
    steering: Steering | None = None,
) -> ObservationDependence:
    """Each token of ``step``'s output: KL between the model's distribution with its observation and
    with it ablated (``other``: the observation put in its place for ``ablation="other"``)."""
    if ablation not in ABLATIONS:
        raise StudioError(f"Ablate the observation by one of {', '.join(ABLATIONS)}.")
    prompt = prompts_of(episode)[step.index]
    if not prompt or not step.raw:
        raise StudioError(f"Step {step.index} has no model output and prompt to compare.")
    internals = backend.internals()
    images = [step.frame] if backend.capabilities.images and step.frame is not None else None
    ids, real = internals.output_logprobs(prompt, step.raw, images=images, steering=steering)
    changed_prompt, changed_images = prompt, images
    if ablation in ("mask", "other"):
        if ablation == "other" and not other:
            raise StudioError("Ablating by another observation needs that observation.")
        changed_prompt = ablated_messages(
            prompt, step.observation, masked(step.observation) if ablation == "mask" else other or ""
        )
    else:
        if images is None:
            raise StudioError("This step has no image the model sees: ablate its text (mask or other).")
        frame = step.frame
        changed_images = [
            np.zeros_like(frame)
            if ablation == "blank"
            else np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)
        ]
    ids_again, ablated = internals.output_logprobs(changed_prompt, step.raw, images=changed_images, steering=steering)
    if ids_again != ids:
        raise StudioError("The output tokenised differently after the ablation: cannot compare token by token.")
    texts = [backend.token_text(i) for i in ids] if hasattr(backend, "token_text") else [str(i) for i in ids]
    return ObservationDependence(step.index, ablation, texts, kl_per_token(real, ablated))
