"""Steering vectors: a direction per decoder layer, saved as safetensors in a library folder with how
it was made, and the ``NAME[:LAYERS]:ALPHA[:POSITIONS]`` spelling that turns one into a
:class:`~studio.models.steering.Steering`.

A vector file holds one float32 tensor per layer (``layer.0``, ``layer.1``, ...) and, in its
metadata, the method (``contrastive``, ``east``), the model it was read from, the layer steered
when none is named, and what it was made from (JSON). Names are plain (letters, digits, ``._-``):
a browser names vectors, never paths. Loading parses tensors only (safetensors has no code).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.models.steering import POSITIONS, Steering
from studio.trace import utc_now

#: What a vector's name may be (it is also its file name).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The largest vector file read (a 100-layer model of hidden size 16,384 is 6.5 MB).
MAX_VECTOR_BYTES = 64 * 1024 * 1024
FORMAT = "agent-studio-steering-vector"
VERSION = "1"
#: The strongest coefficient accepted (the residual stream's scale is in the tens).
MAX_ALPHA = 1000.0


def check_name(name: str) -> str:
    """``name`` if it is a vector name, else one line."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise StudioError(
            f"A vector name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (got {str(name)[:40]!r})."
        )
    return name


@dataclass
class SteeringVector:
    """A direction per layer and how it was made."""

    name: str
    directions: dict[int, np.ndarray]
    """Layer -> float32 vector of the model's hidden size."""
    method: str
    model: str
    layer: int
    """The layer steered when a spelling names none."""
    made_from: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors = {f"layer.{i}": np.ascontiguousarray(v, dtype=np.float32) for i, v in sorted(self.directions.items())}
        return save(tensors, metadata=self._metadata())

    def _metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "model": self.model,
            "layer": str(self.layer),
            "made_from": json.dumps(self.made_from, sort_keys=True),
            "created_at": self.created_at,
        }

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> SteeringVector:
        from safetensors.numpy import load

        try:
            tensors = load(data)
            metadata = _metadata(data)
        except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is one line
            raise StudioError(f"Vector {name!r} is not a readable safetensors file: {str(exc)[:120]}") from None
        if metadata.get("format") != FORMAT:
            raise StudioError(f"Vector {name!r} is not an Agent Studio steering vector (its format is not {FORMAT}).")
        directions = {}
        for key, value in tensors.items():
            match = re.fullmatch(r"layer\.(\d{1,4})", key)
            if match is None or value.ndim != 1 or value.dtype != np.float32 or not np.isfinite(value).all():
                raise StudioError(f"Vector {name!r} has a tensor {key[:40]!r} that is not a finite float32 direction.")
            directions[int(match.group(1))] = value
        if not directions or len({v.shape[0] for v in directions.values()}) != 1:
            raise StudioError(f"Vector {name!r} has no directions, or directions of different sizes.")
        try:
            made_from = json.loads(metadata.get("made_from", "{}"))
            layer = int(metadata.get("layer", min(directions)))
        except ValueError:
            raise StudioError(f"Vector {name!r} has damaged metadata.") from None
        return cls(
            name=name,
            directions=directions,
            method=str(metadata.get("method", "")),
            model=str(metadata.get("model", "")),
            layer=layer if layer in directions else min(directions),
            made_from=made_from if isinstance(made_from, dict) else {},
            created_at=str(metadata.get("created_at", "")),
        )

    @property
    def sha256(self) -> str:
        """The hash of the directions and the metadata in a canonical order (the file's bytes are not:
        safetensors writes metadata in no fixed order)."""
        digest = hashlib.sha256(json.dumps(self._metadata(), sort_keys=True).encode("utf-8"))
        for layer, direction in sorted(self.directions.items()):
            digest.update(f"layer.{layer}".encode())
            digest.update(np.ascontiguousarray(direction, dtype="<f4").tobytes())
        return digest.hexdigest()

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    def steering(self, layers: tuple[int, ...] | None, alpha: float, positions: str = "all") -> Steering:
        """This vector added ``alpha`` times after ``layers`` (None: its default layer)."""
        chosen = layers if layers is not None else (self.layer,)
        missing = [layer for layer in chosen if layer not in self.directions]
        if missing:
            have = f"{min(self.directions)}-{max(self.directions)}"
            raise StudioError(f"Vector {self.name!r} has no direction for layer {missing[0]} (it has layers {have}).")
        return Steering(self.name, self.sha256, tuple(chosen), float(alpha), positions, self.directions)

    def summary(self) -> dict[str, Any]:
        """What ``steer list`` and ``steer show`` print."""
        return {
            "name": self.name,
            "method": self.method,
            "model": self.model,
            "layer": self.layer,
            "layers": sorted(self.directions),
            "hidden_size": self.hidden_size,
            "norms": {str(i): round(float(np.linalg.norm(v)), 6) for i, v in sorted(self.directions.items())},
            "made_from": self.made_from,
            "created_at": self.created_at,
            "sha256": self.sha256,
        }


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's metadata (read from the bytes: the header is JSON after its length)."""
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or length > len(data) - 8:
        raise ValueError("bad header length")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def default_library() -> Path:
    """Where vectors are kept unless ``AGENT_STUDIO_VECTORS`` says otherwise (beside the database)."""
    override = os.environ.get("AGENT_STUDIO_VECTORS")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("agent-studio", appauthor=False)) / "vectors"


class VectorLibrary:
    """A folder of named vectors (``NAME.safetensors``)."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_library()

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.safetensors"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.safetensors") if NAME_PATTERN.match(p.stem))

    def load(self, name: str) -> SteeringVector:
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()[:10]) or "none yet: make one with agent-studio steer make"
            raise StudioError(f"No steering vector named {name!r} (vectors: {known}).")
        if path.stat().st_size > MAX_VECTOR_BYTES:
            raise StudioError(f"Vector {name!r} is over {MAX_VECTOR_BYTES // 2**20} MiB: not a steering vector.")
        return SteeringVector.from_bytes(path.read_bytes(), name)

    def save(self, vector: SteeringVector, replace: bool = False) -> Path:
        """Write ``vector`` (atomically); an existing name is refused unless ``replace``."""
        path = self.path(vector.name)
        if path.exists() and not replace:
            raise StudioError(f"A vector named {vector.name!r} exists: choose another name (or --replace).")
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(vector.to_bytes())
        partial.replace(path)
        return path


@dataclass(frozen=True)
class SteerSpec:
    """A parsed ``NAME[:LAYERS]:ALPHA[:POSITIONS]``."""

    name: str
    layers: tuple[int, ...] | None
    alpha: float
    positions: str = "all"

    def resolve(self, library: VectorLibrary) -> Steering:
        return library.load(self.name).steering(self.layers, self.alpha, self.positions)

    def with_alpha(self, alpha: float) -> SteerSpec:
        return SteerSpec(self.name, self.layers, alpha, self.positions)

    def text(self) -> str:
        layers = "" if self.layers is None else ":" + ",".join(map(str, self.layers))
        positions = "" if self.positions == "all" else f":{self.positions}"
        return f"{self.name}{layers}:{self.alpha:g}{positions}"


USAGE = "NAME[:LAYERS]:ALPHA[:POSITIONS] (e.g. explore:12:4, explore:10-14:2:generated)"


def parse_steer(text: str) -> SteerSpec | None:
    """``NAME[:LAYERS]:ALPHA[:POSITIONS]`` (LAYERS: ``12``, ``10-14`` or ``10,12``; POSITIONS: all,
    prompt, generated); empty is None (no steering). One line for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    if len(text) > 200:
        raise StudioError(f"Steering is {USAGE}: that is over 200 characters.")
    parts = text.split(":")
    positions = "all"
    if len(parts) == 4 or (len(parts) in (3, 4) and parts[-1] in POSITIONS):
        positions = parts.pop()
        if positions not in POSITIONS:
            raise StudioError(f"Steering positions are {', '.join(POSITIONS)} (got {positions[:20]!r}).")
    if len(parts) not in (2, 3):
        raise StudioError(f"Steering is {USAGE} (got {text[:60]!r}).")
    name = check_name(parts[0])
    layers = parse_layers(parts[1]) if len(parts) == 3 else None
    try:
        alpha = float(parts[-1])
    except ValueError:
        raise StudioError(f"Steering strength ALPHA is a number (got {parts[-1][:20]!r}); {USAGE}.") from None
    if not np.isfinite(alpha) or abs(alpha) > MAX_ALPHA:
        raise StudioError(
            f"Steering strength ALPHA is a number from -{MAX_ALPHA:g} to {MAX_ALPHA:g} (got {parts[-1][:20]!r})."
        )
    return SteerSpec(name, layers, alpha, positions)


def parse_layers(text: str) -> tuple[int, ...]:
    """Layers from ``12``, ``10-14`` or ``10,12`` (sorted, without repeats); one line if malformed."""
    found: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d{1,4})(?:-(\d{1,4}))?", part.strip())
        if match is None:
            raise StudioError(f"Steering LAYERS are numbers such as 12, 10-14 or 10,12 (got {text[:30]!r}).")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low or high - low > 512:
            raise StudioError(f"Steering layer range {part.strip()!r} is backwards or too long.")
        found += range(low, high + 1)
    return tuple(sorted(set(found)))


def steer_variant(base: str, value: str) -> str:
    """A sweep's varied ``steer`` value: a bare number is an ALPHA for the sweep's own ``steer``
    (``explore:12:1`` varied over ``0,2`` gives ``explore:12:0`` and ``explore:12:2``); anything else
    is a whole spelling."""
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        return value
    spec = parse_steer(base)
    if spec is None:
        raise StudioError(
            "Varying steer over numbers varies the ALPHA of the sweep's steer: give --steer NAME[:LAYERS]:ALPHA too."
        )
    return parse_steer(spec.with_alpha(alpha).text()).text()  # type: ignore[union-attr]


def recorded_steering(record: Any, library: VectorLibrary | None = None) -> Steering | None:
    """The steering a step recorded (``step.extra["steering"]``), its vector read from ``library``
    (None for an unsteered step); one line when the vector is gone or changed since."""
    if not isinstance(record, dict):
        return None
    try:
        spec = SteerSpec(
            check_name(str(record.get("vector"))),
            tuple(int(layer) for layer in record.get("layers") or ()) or None,
            float(record.get("alpha", 0.0)),
            str(record.get("positions", "all")),
        )
    except (TypeError, ValueError):
        raise StudioError("The step's steering record is damaged.") from None
    steering = spec.resolve(library or VectorLibrary())
    if steering.sha256 != record.get("sha256"):
        raise StudioError(
            f"Vector {spec.name!r} changed since the step was steered: its insides cannot be read as they were."
        )
    return steering


def steered_like(backend: Any, record: Any, library: VectorLibrary | None = None) -> Any:
    """``backend`` steered as a step recorded (its rollouts act as it did); unchanged for an unsteered
    step (or no backend)."""
    from studio.models.steered import SteeredBackend

    steering = recorded_steering(record, library)
    return backend if steering is None or backend is None else SteeredBackend(backend, steering)
