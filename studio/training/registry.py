"""Trained models by name: a folder each (``AGENT_STUDIO_TRAINED``, else ``trained/`` beside the database),
holding the adapter (or the whole model), the tokenizer and ``manifest.json`` (kind, base, the run's record).

A run writes into a staging folder (``.staging-NAME-...``) and registers by renaming it to its name in one
step, after everything is written: a stopped or failed run leaves no half-registered model, and a name is
never registered twice. No torch here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.processes import pid_alive
from studio.training.spec import POLICY_KINDS, VERIFIER_KINDS, check_name

MANIFEST = "manifest.json"
#: The prefix of a trained verifier's name (``--verifier model:NAME``).
VERIFIER_PREFIX = "model:"
#: What joins a base model and a trained adapter in a model name (``default+lora:NAME``).
LORA_JOIN = "+lora:"


def trained_root() -> Path:
    """Where trained models are kept unless ``AGENT_STUDIO_TRAINED`` says otherwise (beside the database)."""
    override = os.environ.get("AGENT_STUDIO_TRAINED")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("agent-studio", appauthor=False)) / "trained"


@dataclass(frozen=True)
class TrainedModel:
    """A registered trained model."""

    name: str
    folder: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", ""))

    @property
    def base(self) -> str:
        return str(self.manifest.get("base", ""))

    @property
    def lora(self) -> bool:
        return bool(self.manifest.get("lora"))

    @property
    def weights(self) -> Path:
        """The adapter folder (LoRA) or the whole model's folder."""
        return self.folder / ("adapter" if self.lora else "model")

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer"

    @property
    def is_verifier(self) -> bool:
        return self.kind in VERIFIER_KINDS

    @property
    def is_policy(self) -> bool:
        return self.kind in POLICY_KINDS

    def model_name(self) -> str:
        """How ``--model`` names it as a policy: ``BASE+lora:NAME`` (a fully trained model: its folder)."""
        return f"{self.base}{LORA_JOIN}{self.name}" if self.lora else str(self.weights)

    def trained_on(self) -> str:
        """What it was trained on, in one line (results pages say it beside the arm that used it)."""
        record = self.manifest.get("record", {})
        data, spec = record.get("data", {}), record.get("spec", {})
        accuracy = record.get("held_out_accuracy")
        shown = "" if accuracy is None else f", held-out pair accuracy {accuracy:.0%}"
        return (
            f"{self.kind} model of {self.base} ({'LoRA' if self.lora else 'full'}) trained on "
            f"{', '.join(spec.get('sources') or [])}: {data.get('train_rows')} rows ({data.get('held_out_rows')} "
            f"held out), data sha256 {str(data.get('data_hash'))[:12]}, seed {spec.get('seed')}{shown}"
        )

    def describe(self) -> dict[str, Any]:
        """The listing's row: name, kind, base, how to use it, and what it was trained on."""
        uses = []
        if self.is_verifier:
            uses.append(f"--verifier {VERIFIER_PREFIX}{self.name}")
        if self.is_policy:
            uses.append(f"--model {self.model_name()}")
        record = self.manifest.get("record", {})
        return {
            "name": self.name,
            "kind": self.kind,
            "base": self.base,
            "lora": self.lora,
            "use": uses,
            "sources": record.get("spec", {}).get("sources"),
            "rows": record.get("data", {}).get("rows"),
            "data_hash": record.get("data", {}).get("data_hash"),
            "held_out_accuracy": record.get("held_out_accuracy"),
            "created_at": self.manifest.get("created_at"),
        }


class TrainedModels:
    """The folder of trained models."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else trained_root()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

    def all(self) -> list[TrainedModel]:
        return [self.get(name) for name in self.names()]

    def get(self, name: str) -> TrainedModel:
        """The model registered as ``name``; one line naming the registered ones if there is none."""
        check_name(name)
        folder = self.root / name
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none yet: agent-studio train"
            raise StudioError(f"No trained model named {name!r} in {self.root} (registered: {known}).") from None
        except (OSError, ValueError) as exc:
            raise StudioError(f"The trained model {name!r} cannot be read: {exc}.") from None
        if not isinstance(manifest, dict):
            raise StudioError(f"The trained model {name!r} has a damaged manifest.")
        return TrainedModel(name, folder, manifest)

    def verifier(self, name: str) -> TrainedModel:
        """``name``, which must score outputs (a reward model, or a DPO model's implicit reward)."""
        model = self.get(name)
        if not model.is_verifier:
            raise StudioError(
                f"{name!r} is a {model.kind} model: a verifier is a reward model or a DPO model (train --kind reward)."
            )
        return model

    def staging(self, name: str) -> Path:
        """A fresh folder to write a run's files into before it is registered as ``name`` (refused when
        the name is taken: a run never overwrites a registered model)."""
        check_name(name)
        if (self.root / name).exists():
            raise StudioError(f"A trained model named {name!r} exists already: choose another name.")
        self.clear_abandoned()
        folder = self.root / f".staging-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def clear_abandoned(self) -> list[str]:
        """Remove the staging folders of runs whose process is gone (killed mid-run): their names."""
        removed = []
        for folder in self.root.glob(".staging-*") if self.root.is_dir() else []:
            pid = folder.name.rsplit("-", 2)[-2] if folder.name.count("-") >= 3 else ""
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            discard(folder)
            removed.append(folder.name)
        return removed

    def register(self, staging: Path, name: str, manifest: dict[str, Any]) -> TrainedModel:
        """Write ``manifest`` and rename ``staging`` to ``name``: the model appears whole or not at all."""
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        target = self.root / name
        try:
            os.rename(staging, target)  # atomic; fails when the name was taken meanwhile
        except OSError:
            discard(staging)
            raise StudioError(f"A trained model named {name!r} exists already: choose another name.") from None
        return self.get(name)

    def remove(self, name: str) -> None:
        """Forget the model ``name`` (its folder goes)."""
        shutil.rmtree(self.get(name).folder)


def discard(staging: Path) -> None:
    """Remove a staging folder (a stopped or failed run)."""
    shutil.rmtree(staging, ignore_errors=True)


def split_lora_name(name: str) -> tuple[str, str] | None:
    """``("default", "q")`` for ``default+lora:q``; None for a name without a trained adapter."""
    base, sep, adapter = name.rpartition(LORA_JOIN)
    if not sep:
        return None
    if not base:
        raise StudioError(f"Give the base model before {LORA_JOIN}: e.g. default{LORA_JOIN}{adapter or 'NAME'}.")
    return base, check_name(adapter)


def trained_adapter(name: str, root: Path | str | None = None) -> tuple[str, str | None]:
    """The base model's name and the adapter folder of ``BASE+lora:NAME`` (the name itself and None for a
    name without one); one line when NAME is not a LoRA-trained policy of that base."""
    split = split_lora_name(name)
    if split is None:
        return name, None
    base, adapter = split
    trained = TrainedModels(root).get(adapter)
    if not trained.lora or not trained.is_policy:
        raise StudioError(f"{adapter!r} is not a LoRA-trained policy ({trained.kind}): it cannot load as {name!r}.")
    if trained.base != base:
        raise StudioError(f"{adapter!r} was trained on {trained.base!r}: load it as {trained.model_name()}.")
    return base, str(trained.weights)


def trained_in(models: list[str], verifiers: list[Any], root: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """For each trained model among ``models`` (``BASE+lora:NAME``) and ``verifiers`` (``model:NAME``): its
    listing row and the line saying what it was trained on."""
    names = [(m, split[1]) for m in models if (split := split_lora_name(m)) is not None]
    names += [(str(v), str(v)[len(VERIFIER_PREFIX) :]) for v in verifiers if str(v).startswith(VERIFIER_PREFIX)]
    found: dict[str, dict[str, Any]] = {}
    for label, name in dict.fromkeys(names):
        try:
            model = TrainedModels(root).get(name)
        except StudioError:
            found[label] = {"name": name, "line": "no longer registered"}
            continue
        found[label] = {**model.describe(), "line": model.trained_on()}
    return found


def trained_verifier_names(root: Path | str | None = None) -> list[str]:
    """``model:NAME`` of every registered model that can verify."""
    models = TrainedModels(root)
    names = []
    for name in models.names():
        try:
            if models.get(name).is_verifier:
                names.append(VERIFIER_PREFIX + name)
        except StudioError:
            continue  # a damaged manifest is not offered; using it says why
    return names
