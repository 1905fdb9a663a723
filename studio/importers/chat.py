"""Chat transcripts: JSONL of OpenAI-format ``messages``, or a Hugging Face dataset of conversations."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.importers.transcript import episode_from_messages, file_digest, source_record
from studio.trace import Episode

#: ShareGPT's speaker names, as roles.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
#: The longest JSONL line read (a record over it is refused: 64 MiB).
MAX_LINE_BYTES = 64 << 20


def record_id(fmt: str, record: Any) -> str:
    """A stable id for an imported record: the same record imports as the same episode (a second import
    changes nothing), another record as another."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{fmt}\n{text}".encode("utf-8")).hexdigest()[:32]


def messages_of(record: dict[str, Any]) -> list[Any]:
    """A record's messages: ``messages`` (role/content), or ShareGPT's ``conversations`` (from/value)."""
    if "messages" in record:
        return record["messages"]
    turns = record.get("conversations")
    if isinstance(turns, list):
        return [
            {"role": SHAREGPT_ROLES.get(str(t.get("from")), str(t.get("from"))), "content": t.get("value")}
            if isinstance(t, dict)
            else t
            for t in turns
        ]
    raise StudioError("A record needs 'messages' (OpenAI chat format) or 'conversations' (ShareGPT).")


def outcome_of(record: dict[str, Any]) -> bool | None:
    """``success`` if the record says it, else a ``score``/``reward`` of 1 or more counts as success."""
    if isinstance(record.get("success"), bool):
        return record["success"]
    for key in ("score", "reward"):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value >= 1
    return None


def valid_time(text: str) -> bool:
    """An ISO-8601 time a record may carry as its start."""
    from datetime import datetime

    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return len(text) <= 32


def episode_of(record: Any, fmt: str, path: Path, sha256: str, key: str) -> Episode:
    """One conversation record as an episode."""
    if not isinstance(record, dict):
        raise StudioError(f"Record {key} is {type(record).__name__}, not a JSON object.")
    model = record.get("model")
    env = record.get("env") or record.get("task") or "chat"
    episode = episode_from_messages(
        messages_of(record),
        env=f"imported:{str(env)[:180]}",
        source=source_record(fmt, path, sha256, str(record.get("id", key))),
        id=record_id(fmt, record),
        model={"id": str(model)[:200]} if isinstance(model, str) and model else None,
        success=outcome_of(record),
        end_reason="imported",
        started_at=created if isinstance(created := record.get("created_at"), str) and valid_time(created) else None,
    )
    return episode


class ChatImporter:
    """Chat transcripts: JSONL of OpenAI `messages` (with `tool_calls`), or a Hugging Face dataset folder."""

    name = "chat"

    def read(self, path: Path) -> Iterator[Episode]:
        if path.is_dir():
            yield from self._dataset(path)
            return
        sha256 = file_digest(path)
        with open(path, "rb") as handle:
            for number, line in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
                if len(line) > MAX_LINE_BYTES:
                    raise StudioError(f"Line {number} of {path.name} is over {MAX_LINE_BYTES >> 20} MiB: not read.")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise StudioError(f"Line {number} of {path.name} is not JSON: {str(exc)[:120]}.") from None
                except RecursionError:
                    raise StudioError(f"Line {number} of {path.name} is nested too deeply to read.") from None
                try:
                    yield episode_of(record, self.name, path, sha256, f"line {number}")
                except StudioError as exc:
                    raise StudioError(f"Line {number} of {path.name}: {exc}") from None
                except RecursionError:
                    raise StudioError(f"Line {number} of {path.name}: a value is nested too deeply.") from None

    def _dataset(self, path: Path) -> Iterator[Episode]:
        """A dataset saved with ``save_to_disk`` (read with ``load_from_disk``), else a folder of data files
        (``load_dataset``); its rows streamed in order."""
        try:
            import datasets
        except ImportError:
            raise StudioError("Reading a dataset folder needs the `datasets` package: pip install datasets.") from None
        try:
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                data = datasets.load_from_disk(str(path))
            else:
                data = datasets.load_dataset(str(path), split="train")
        except Exception as exc:  # the library's own errors, of many kinds
            raise StudioError(f"{path.name} is not a dataset the datasets library reads: {str(exc)[:160]}") from None
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else next(iter(data.values()))
        for number, row in enumerate(data):
            # A dataset folder is many files: each row's provenance is the hash of the record read.
            digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode("utf-8")).hexdigest()
            try:
                yield episode_of(row, self.name, path, digest, f"row {number}")
            except StudioError as exc:
                raise StudioError(f"Row {number} of {path.name}: {exc}") from None


IMPORTER = ChatImporter()
