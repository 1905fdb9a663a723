"""Model backends: the protocol, the transformers backend, name resolution and the shared registry.

Importing this package does not import torch; ``studio.models.hf`` does.
"""

from studio.models.base import (
    Backend,
    Capabilities,
    Generation,
    GenerateResult,
    PrefixSession,
    SamplingParams,
    ScoreResult,
)
from studio.models.registry import ModelRegistry

__all__ = [
    "Backend",
    "Capabilities",
    "GenerateResult",
    "Generation",
    "ModelRegistry",
    "PrefixSession",
    "SamplingParams",
    "ScoreResult",
]
