"""Inspect AI eval logs (``.eval`` and ``.json``), read through ``inspect_ai.log``'s own reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.importers.chat import record_id
from studio.importers.transcript import episode_from_messages, file_digest, source_record
from studio.trace import Episode

#: Inspect's letter grades of a sample that count as success and failure.
CORRECT, INCORRECT = ("C", "correct"), ("I", "incorrect")


def message_dict(message: Any) -> dict[str, Any]:
    """An Inspect chat message as plain data (role, text, tool calls, a tool's function name)."""
    data: dict[str, Any] = {"role": message.role, "content": message.text}
    calls = getattr(message, "tool_calls", None)
    if calls:
        data["tool_calls"] = [{"function": {"name": c.function, "arguments": c.arguments}} for c in calls]
    if message.role == "tool":
        data["name"] = getattr(message, "function", None) or "tool"
        error = getattr(message, "error", None)
        if error is not None:
            data["content"] = f"{data['content']}\n[error] {getattr(error, 'message', error)}".strip()
    return data


def success_of(scores: dict[str, Any] | None) -> bool | None:
    """The first score's verdict: C/I grades, booleans, or a number (1 or more: success); else None."""
    for score in (scores or {}).values():
        value = getattr(score, "value", None)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.strip() in CORRECT:
                return True
            if value.strip() in INCORRECT:
                return False
            return None
        if isinstance(value, (int, float)):
            return value >= 1
        return None
    return None


def scores_data(scores: dict[str, Any] | None) -> dict[str, Any]:
    """Every scorer's value, answer and explanation (plain data, cut to a sensible size)."""
    kept = {}
    for name, score in (scores or {}).items():
        value = getattr(score, "value", None)
        kept[str(name)[:100]] = {
            "value": value if isinstance(value, (str, int, float, bool)) or value is None else str(value)[:1000],
            "answer": (getattr(score, "answer", None) or "")[:2000] or None,
            "explanation": (getattr(score, "explanation", None) or "")[:4000] or None,
        }
    return kept


def json_samples(path: Path) -> Iterator[Any]:
    """The samples of a ``.json`` Inspect log, one at a time (``ijson``, which Inspect itself depends on),
    each validated as Inspect's own ``EvalSample``."""
    import ijson
    from inspect_ai.log import EvalSample

    with open(path, "rb") as handle:
        for item in ijson.items(handle, "samples.item", use_float=True):
            yield EvalSample.model_validate(item)


class InspectImporter:
    """Inspect AI eval logs (.eval, .json): each sample an episode, each assistant turn a step."""

    name = "inspect"

    def read(self, path: Path) -> Iterator[Episode]:
        try:
            from inspect_ai.log import read_eval_log, read_eval_log_samples
        except ImportError:
            raise StudioError("Reading Inspect logs needs inspect_ai: pip install inspect-ai.") from None
        if path.suffix not in (".eval", ".json"):
            raise StudioError(f"{path.name} is not an Inspect log: expected a .eval or .json file.")
        sha256 = file_digest(path)
        try:
            header = read_eval_log(str(path), header_only=True)
            # .eval logs are zip files: Inspect reads one sample at a time. A .json log Inspect would read
            # whole (a 1 GB log, 1 GB and more in memory): its samples are streamed here with ijson instead.
            samples = (
                json_samples(path)
                if path.suffix == ".json"
                else read_eval_log_samples(str(path), all_samples_required=False)
            )
            model = {"id": header.eval.model, "config": header.eval.model_generate_config.model_dump(exclude_none=True)}
            for sample in samples:
                yield self._episode(sample, header, model, path, sha256)
        except StudioError:
            raise
        except Exception as exc:  # Inspect's reader raises many kinds for a broken file
            raise StudioError(
                f"{path.name} could not be read as an Inspect log: {str(exc).splitlines()[0][:200]}"
            ) from None

    def _episode(self, sample: Any, header: Any, model: dict[str, Any], path: Path, sha256: str) -> Episode:
        messages = [message_dict(m) for m in sample.messages]
        key = f"{sample.id}/epoch {sample.epoch}"
        source = source_record(
            self.name,
            path,
            sha256,
            key,
            task=header.eval.task,
            run=header.eval.run_id,
            scores=scores_data(sample.scores),
        )
        return episode_from_messages(
            messages,
            env=f"inspect:{str(header.eval.task)[:180]}",
            source=source,
            instruction=sample.input if isinstance(sample.input, str) else None,
            id=record_id(self.name, {"file": sha256, "task": header.eval.task_id, "sample": key}),
            model=model,
            success=success_of(sample.scores),
            end_reason="imported",
            started_at=str(header.eval.created)[:32] or None,
        )


IMPORTER = InspectImporter()
