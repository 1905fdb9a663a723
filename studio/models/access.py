"""What a web client may load: the operator decides on the command line, a browser never does.

The command line is the operator: ``run --model PATH`` or ``serve --model PATH`` load any
folder, and ``--trust-remote-code`` lets a model repository's own Python run. A browser tab
or an API client is anyone who can reach the port, so the names it sends are checked here:

- ``default`` and Hugging Face hub ids (the local cache first, then the Hub) load as usual;
- a local folder, a ``.gguf`` file or a ``scripted:`` file only under a folder the operator
  listed (``serve --models-dir DIR``, repeatable), and never inside Gradio's upload folder;
- remote code runs only if the operator started the studio with ``--trust-remote-code`` —
  and even then not from an ``auto_map`` entry that points into another repository or
  folder (``"other/repo--module.Class"``): that is how uploaded code would be reached.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.models.resolve import DEFAULT_NAME, check_hub_id
from studio.validation import check_text

SCRIPTED = "scripted:"


def upload_folder() -> Path:
    """Where Gradio keeps uploaded files (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


#: Characters in a model name: a hub id, or a path (folders can nest deep).
MAX_MODEL_NAME = 1_000


def check_model_name(name: Any) -> str:
    """A model name as typed: text of a sensible length, stripped."""
    return check_text(name, "A model name", MAX_MODEL_NAME).strip()


def operator_folders(folders: tuple[Any, ...], flag: str, why: str = "") -> tuple[Path, ...]:
    """Folders an operator listed with ``flag`` (``--models-dir``, ``--import-dir``), resolved; one line
    for one that is not a folder or that holds Gradio's upload folder (anyone could place files there)."""
    uploads = upload_folder()
    resolved = tuple(Path(d).expanduser().resolve() for d in folders)
    for folder in resolved:
        if not folder.is_dir():
            raise StudioError(f"{flag} {folder} is not a folder.")
        if uploads == folder or uploads.is_relative_to(folder):
            raise StudioError(
                f"{flag} {folder} contains Gradio's upload folder {uploads}: {why}pick a narrower folder."
            )
    return resolved


@dataclass(frozen=True)
class ModelAccess:
    """The operator's rules for model names that come from the web."""

    trust_remote_code: bool = False
    """``serve --trust-remote-code``: model repositories' own Python may run."""
    model_dirs: tuple[Path, ...] = ()
    """``serve --models-dir``: folders whose models (and scripted files) the web may load."""
    servers: tuple[str, ...] = ()
    """``serve --allow-server``: inference servers (base URLs) whose models the web may load."""

    def __post_init__(self) -> None:
        resolved = operator_folders(self.model_dirs, "--models-dir", "anyone could place a model there; ")
        object.__setattr__(self, "model_dirs", resolved)
        from studio.models.server_client import parse_server_url

        object.__setattr__(self, "servers", tuple(dict.fromkeys(parse_server_url(u).base for u in self.servers)))

    def check_server(self, name: str) -> str:
        """``name`` (a server URL) if the operator listed its server; otherwise one line saying how to."""
        from studio.models.replicas import is_replica_list, replica_urls
        from studio.models.server_client import parse_server_url

        if is_replica_list(name) and not name.startswith("replicas:"):  # each replica must be allowed
            for url in replica_urls(name):
                self.check_server(url)
            return name
        base = parse_server_url(name).base
        if base not in self.servers:
            if not self.servers:
                raise StudioError(
                    f"Loading models from servers in the browser is off ({base[:80]!r}): start the studio with --allow-server URL to allow a server."
                )
            raise StudioError(f"{base[:80]!r} is not a server the studio allows ({', '.join(self.servers)}).")
        return name

    def check(self, name: str) -> str:
        """``name`` if a web client may load it; otherwise a one-line refusal saying what is allowed."""
        name = check_model_name(name)
        from studio.training.registry import split_lora_name  # late: trained models sit above this layer

        trained = split_lora_name(name)
        if trained is not None:  # BASE+lora:NAME: the base as any name, the adapter by its registered name
            self.check(trained[0])
            return name
        if name.startswith(SCRIPTED):
            self._check_path(Path(name[len(SCRIPTED) :]), name)
            return name
        path = Path(name).expanduser()
        if name.startswith(("/", ".", "~")) or path.exists():
            self._check_path(path, name)
        elif name != DEFAULT_NAME:
            check_hub_id(name)  # refused here, before a sweep or a load is queued on it
        return name

    def _check_path(self, path: Path, name: str) -> None:
        resolved = path.expanduser().resolve()
        if resolved == upload_folder() or resolved.is_relative_to(upload_folder()):
            raise StudioError("Files uploaded to the studio cannot be loaded as models.")
        if not any(resolved.is_relative_to(folder) for folder in self.model_dirs):
            if not self.model_dirs:
                raise StudioError(
                    f"Loading local files from the browser is off ({name[:80]!r}): start the studio with --models-dir DIR to allow models under DIR, or use a hub id."
                )
            allowed = ", ".join(str(d) for d in self.model_dirs)
            raise StudioError(f"{name[:80]!r} is not under a folder the studio allows ({allowed}).")

    def check_folder(self, folder: str) -> None:
        """Before loading with remote code on: no ``auto_map`` may reach into another repository or folder."""
        if not self.trust_remote_code:
            return  # transformers refuses to run any remote code then
        for config in sorted(Path(folder).glob("*.json")):
            try:
                data = json.loads(config.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue
            for target in _auto_map_targets(data):
                if "--" in target:
                    raise StudioError(
                        f"{config.name} points its code at another repository or folder ({target[:80]!r}); the studio does not load it from the web."
                    )


def _auto_map_targets(data: Any) -> list[str]:
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    if not isinstance(auto_map, dict):
        return []
    targets: list[str] = []
    for value in auto_map.values():
        values = value if isinstance(value, (list, tuple)) else [value]
        targets.extend(str(v) for v in values if v is not None)
    return targets
