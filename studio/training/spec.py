"""What a training run is asked to do (:class:`TrainingSpec`), checked at the boundary, and the rows it
trains on (:class:`TrainingData`): the same rows ``export`` writes, split by episode seed.

No torch here: the CLI, the Train panel and the store read specs without loading a trainer.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.validation import MAX_SEED

#: What can be trained, and the export format each trains on.
KINDS: dict[str, str] = {
    "reward": "reward",  # the step-level Q-value model: a scalar head scoring a step's output after its prompt
    "dpo": "dpo",  # the policy, by direct preference optimisation
    "kto": "kto",  # the policy, from unpaired good/bad outputs
    "sft": "sft",  # the policy, imitating successful episodes
}
#: Kinds that give a verifier (``model:NAME``): the reward head, or a DPO model's implicit reward.
VERIFIER_KINDS = ("reward", "dpo")
#: Kinds that train on judged pairs (which ``sweep`` can limit to one sweep's).
PAIR_KINDS = ("reward", "dpo", "kto")
#: Kinds that give a policy (``BASE+lora:NAME``).
POLICY_KINDS = ("dpo", "kto", "sft")
#: Whose judgements a run trains on, and the ``export --annotators`` selection each means.
SOURCES: dict[str, str] = {
    "human": "humans",
    "mc": "mc:*",
    "judge": "judge:*",
    "all": "all",
}
#: A trained model's name: it is spelled in ``model:NAME`` and ``BASE+lora:NAME``, and names a folder.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: Any) -> str:
    """``name`` if it can name a trained model (one line if not)."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        shown = str(name)[:40]
        raise StudioError(
            f"A trained model's name is up to 64 letters, digits, '_', '.' or '-', starting with a letter or "
            f"digit (no '..'), not {shown!r}."
        )
    return name


def annotators_of(sources: Iterable[str]) -> str:
    """The ``export --annotators`` text that counts the judgements of ``sources`` (``human``, ``mc``,
    ``judge``, ``judge:NAME``, ``all``): what ``train --sources`` reads is what that export writes."""
    parts = []
    for source in sources:
        if source in SOURCES:
            parts.append(SOURCES[source])
        elif source.startswith(("judge:", "mc:")) and len(source.partition(":")[2]) > 0:
            parts.append(source)  # one judge, or one Monte Carlo estimate's settings (mc:expert-m1-h10-g0.95)
        else:
            raise StudioError(
                f"Unknown source {str(source)[:40]!r}: use human, mc, mc:SETTINGS, judge, judge:NAME or all "
                "(comma-separated)."
            )
    if "all" in parts and len(parts) > 1:
        raise StudioError("The source 'all' counts everyone already: give it alone.")
    return ",".join(dict.fromkeys(parts))


def parse_sources(text: Any) -> tuple[str, ...]:
    """``human,mc`` as a checked tuple of sources."""
    sources = tuple(dict.fromkeys(part.strip() for part in str(text or "").split(",") if part.strip()))
    if not sources:
        raise StudioError(
            "Give the sources to train on: human, mc, mc:SETTINGS, judge, judge:NAME or all (comma-separated)."
        )
    annotators_of(sources)
    return sources


def _number(value: Any, what: str, low: float, high: float, whole: bool = False) -> Any:
    try:
        number = int(value) if whole and float(value) == int(float(value)) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"{what} must be a number from {low:g} to {high:g}, not {str(value)[:40]!r}.") from None
    if isinstance(number, float) and not math.isfinite(number) or not low <= number <= high:
        raise StudioError(f"{what} must be a number from {low:g} to {high:g}, not {str(value)[:40]!r}.")
    if whole and not isinstance(number, int):
        raise StudioError(f"{what} must be a whole number from {low:g} to {high:g}, not {str(value)[:40]!r}.")
    return number


@dataclass(frozen=True)
class TrainingSpec:
    """One training run: what to train, on whose judgements, from which base, how."""

    name: str
    kind: str = "reward"
    base: str = "default"
    sources: tuple[str, ...] = ("all",)
    lora: bool = True
    """LoRA adapters through PEFT (False: every weight is trained)."""
    lora_rank: int = 16
    epochs: float = 1.0
    learning_rate: float | None = None
    """None: 2e-4 with LoRA, 2e-5 without."""
    batch_size: int = 4
    seed: int = 0
    held_out: float = 0.2
    """The share of episode seeds whose rows are held out (the held-out pair accuracy)."""
    max_length: int = 1024
    beta: float = 0.1
    """DPO and KTO's β (and the β of a DPO model's implicit reward as a verifier)."""
    max_steps: int = 0
    """Optimizer steps at most (0: as the epochs say)."""
    sweep: str | None = None
    """Only the pairs of this sweep's episodes (``loop``: its collection), not every pair the store holds."""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise StudioError(f"Unknown kind {str(self.kind)[:40]!r}: train one of {', '.join(KINDS)}.")
        object.__setattr__(self, "sources", parse_sources(",".join(self.sources)))
        if not isinstance(self.base, str) or not self.base.strip() or "+lora:" in self.base:
            raise StudioError("Give the base model: default, a hub id or a folder (not a trained adapter).")
        object.__setattr__(self, "lora", bool(self.lora))
        object.__setattr__(self, "lora_rank", _number(self.lora_rank, "The LoRA rank", 1, 256, whole=True))
        object.__setattr__(self, "epochs", float(_number(self.epochs, "Epochs", 0.01, 100)))
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", float(_number(self.learning_rate, "The learning rate", 1e-8, 1)))
        object.__setattr__(self, "batch_size", _number(self.batch_size, "The batch size", 1, 256, whole=True))
        object.__setattr__(self, "seed", _number(self.seed, "The seed", 0, MAX_SEED, whole=True))
        object.__setattr__(self, "held_out", float(_number(self.held_out, "The held-out share", 0, 0.9)))
        object.__setattr__(self, "max_length", _number(self.max_length, "The maximum length", 16, 32768, whole=True))
        object.__setattr__(self, "beta", float(_number(self.beta, "β", 1e-4, 100)))
        object.__setattr__(self, "max_steps", _number(self.max_steps, "The step limit", 0, 1_000_000, whole=True))
        if self.sweep is not None:
            if not isinstance(self.sweep, str) or not self.sweep.strip() or len(self.sweep) > 200:
                raise StudioError("Give the sweep whose pairs to train on by its name (at most 200 characters).")
            if self.kind not in PAIR_KINDS:
                raise StudioError(f"A sweep limits the pairs a run trains on: train {', '.join(PAIR_KINDS)} with it.")

    @property
    def export_format(self) -> str:
        """The export format whose rows this run trains on."""
        return KINDS[self.kind]

    @property
    def annotators(self) -> str:
        """The ``export --annotators`` text of the sources."""
        return annotators_of(self.sources)

    @property
    def rate(self) -> float:
        """The learning rate used."""
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 2e-5)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSpec:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["sources"] = tuple(known.get("sources") or ("all",))
        return cls(**known)


def held_out_seed(seed: int | None, share: float) -> bool:
    """Whether rows of episodes with ``seed`` are held out: a fixed hash of the seed, so the split is the
    same in every run and every store (an episode without a seed trains)."""
    if seed is None or share <= 0:
        return False
    digest = hashlib.sha256(f"agent-studio-split:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class TrainingData:
    """The rows a run trains on and holds out, and what says exactly which they were."""

    train: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    rows: int
    """Rows the export wrote (train + held out: ``export``'s own count)."""
    rows_by_source: dict[str, int]
    """Each source alone: the rows ``export --annotators`` of that source writes."""
    data_hash: str
    """sha256 of the export's lines in order: the data snapshot."""
    held_out_seeds: list[int] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "train_rows": len(self.train),
            "held_out_rows": len(self.held_out),
            "rows_by_source": dict(self.rows_by_source),
            "data_hash": self.data_hash,
            "held_out_seeds": list(self.held_out_seeds),
            "left_out": dict(self.left_out),
        }
