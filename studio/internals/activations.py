"""The residual stream of stored steps: read on demand (never while an episode runs), cached in files.

A step's activations are the output of every decoder block at the last prompt token (the
decision point: what the model holds just before it writes) and, with ``positions="output"``,
at each token of its output, from one forward pass over the step's recorded prompt and output
(:meth:`studio.models.hf_internals.Internals.residuals`). A steered step is read under its own
steering when the caller passes it. Memory is bounded: at most :data:`MAX_OUTPUT_POSITIONS`
output tokens are read.

The cache is a folder of safetensors files, one per (model, episode, step, positions, steering):
``layer.N`` tensors (float32, or float16 to halve the disk) and metadata naming what they are
(format ``agent-studio-activations`` version 1).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.importers.transcript import prompts_of
from studio.models.base import Backend
from studio.models.steering import Steering, steering_key
from studio.trace import Episode, Step

FORMAT = "agent-studio-activations"
VERSION = "1"
#: Output tokens read at most per step (the rest are cut: memory stays bounded).
MAX_OUTPUT_POSITIONS = 512
POSITION_KINDS = ("last", "output")


@dataclass
class StepActivations:
    """One step's residual stream: ``layers[i]`` is block ``i``'s output at each position read."""

    episode_id: str
    step_index: int
    model: str
    positions: str
    layers: np.ndarray
    """(layers, positions, hidden), float32 in memory."""
    steering: str = ""

    @property
    def last(self) -> np.ndarray:
        """(layers, hidden): the last prompt token, where the step's decision is made."""
        return self.layers[:, 0, :]


def default_cache() -> Path:
    """``AGENT_STUDIO_CACHE``/activations (the studio's cache folder)."""
    from studio.models.resolve import studio_cache_dir

    return studio_cache_dir() / "activations"


class ActivationCache:
    """Activations in files, keyed by what they were computed from."""

    def __init__(self, folder: Path | str | None = None, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise StudioError("Activations are stored as float32 or float16.")
        self.folder = Path(folder) if folder is not None else default_cache()
        self.dtype = dtype

    def path(self, model: str, episode_id: str, step: int, positions: str, steering: str) -> Path:
        key = "\x1f".join([model, episode_id, str(step), positions, steering])
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, model: str, episode_id: str, step: int, positions: str, steering: str) -> StepActivations | None:
        from safetensors.numpy import load_file

        path = self.path(model, episode_id, step, positions, steering)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache file is computed again
            return None
        count = len(tensors)
        if count == 0 or any(f"layer.{i}" not in tensors for i in range(count)):
            return None
        layers = np.stack([tensors[f"layer.{i}"].astype(np.float32) for i in range(count)])
        return StepActivations(episode_id, step, model, positions, layers, steering)

    def put(self, activations: StepActivations) -> None:
        from safetensors.numpy import save_file

        path = self.path(
            activations.model,
            activations.episode_id,
            activations.step_index,
            activations.positions,
            activations.steering,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"layer.{i}": np.ascontiguousarray(layer.astype(self.dtype)) for i, layer in enumerate(activations.layers)
        }
        metadata = {
            "format": FORMAT,
            "version": VERSION,
            "model": activations.model,
            "episode": activations.episode_id,
            "step": str(activations.step_index),
            "positions": activations.positions,
            "steering": activations.steering,
            "dtype": self.dtype,
        }
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        save_file(tensors, str(partial), metadata=metadata)
        partial.replace(path)


def model_key(backend: Backend) -> str:
    """What names a model in the cache: its id, architecture and size."""
    card = backend.card
    return f"{card.id}|{card.architecture}|{card.parameters}"


def step_activations(
    backend: Backend,
    episode: Episode,
    step: Step,
    *,
    positions: str = "last",
    steering: Steering | None = None,
    cache: ActivationCache | None = None,
    prompt: list[dict[str, Any]] | None = None,
) -> StepActivations:
    """``step``'s residual stream under ``backend`` (cached when ``cache`` is given)."""
    if positions not in POSITION_KINDS:
        raise StudioError(f"Activation positions are {' or '.join(POSITION_KINDS)}.")
    prompt = prompt if prompt is not None else prompts_of(episode)[step.index]
    if not prompt:  # neither recorded nor rebuilt from an imported transcript
        raise StudioError(f"Step {step.index} of episode {episode.id} has no prompt to read activations from.")
    key, steer = model_key(backend), steering_key(steering)
    if cache is not None and (found := cache.get(key, episode.id, step.index, positions, steer)) is not None:
        return found
    # Tokens are a few characters at most: this many characters hold the positions kept below.
    output = step.raw[: MAX_OUTPUT_POSITIONS * 16] if positions == "output" else ""
    residuals = backend.internals().residuals(prompt or [], output, positions=positions, steering=steering)
    layers = residuals.layers[:, : 1 + MAX_OUTPUT_POSITIONS, :]
    activations = StepActivations(episode.id, step.index, key, positions, layers, steer)
    if cache is not None:
        cache.put(activations)
    return activations


def keep_decision_point(
    backend: Backend,
    episode_id: str,
    step_index: int,
    layers: np.ndarray,
    steering: Steering | None = None,
    cache: ActivationCache | None = None,
) -> None:
    """Store a step's residual stream at its decision point, read while the step ran (a recorder in
    its prompt encoding), where :func:`step_activations` finds it."""
    record = StepActivations(
        episode_id, step_index, model_key(backend), "last", layers[:, None, :], steering_key(steering)
    )
    (cache or ActivationCache()).put(record)
