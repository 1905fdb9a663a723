"""Chat transcripts as steps: the one mapping of roles to steps every message-based importer uses.

- ``system`` messages: kept in the episode's source (the start of every rebuilt prompt), not steps;
- the first ``user`` message: the instruction, and the first step's observation;
- ``user`` and ``tool`` messages: what the agent observed before its next turn (a tool's answer is
  written ``[tool NAME] TEXT``); they are also the previous step's ``next_observation``;
- each ``assistant`` message: one step. Its tool calls are the action (``name(arguments)``, several
  joined by ``; ``) and its text the thought; without tool calls its text is the action (a reply).

Each step keeps the messages it answered (``extra["transcript"]``), so the prompt the model saw at
any step is rebuilt exactly from the episode (:func:`prompt_at`) without storing every growing
prefix (a 200-turn conversation would store 200 copies of its start).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from studio.errors import StudioError
from studio.trace import Episode, Step

ROLES = ("system", "user", "assistant", "tool")
#: The longest text kept of one message (longer ones are cut, and say so).
MAX_MESSAGE_CHARS = 200_000


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (a 1 GB log is never held)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_time(path: Path) -> str:
    """When a file was last written, as records store times: an imported episode's start where the record
    has none (a fixed time, so importing the same file again finds it unchanged)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="milliseconds")


def stamped(episode: Episode, started_at: str) -> Episode:
    """``episode`` started and ended at ``started_at`` (an imported record is finished)."""
    episode.started_at = episode.ended_at = started_at
    return episode


def source_record(fmt: str, path: Path, sha256: str, key: str, **more: Any) -> dict[str, Any]:
    """What an imported episode says about where it came from."""
    return {"format": fmt, "file": str(path)[:1000], "sha256": sha256, "key": str(key)[:200], **more}


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI-style list of parts (an image part
    is written ``[image]``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            elif isinstance(part, dict) and str(part.get("type", "")).startswith("image"):
                pieces.append("[image]")
            elif isinstance(part, str):
                pieces.append(part)
        text = "\n".join(pieces)
    else:
        raise StudioError(f"A message's content is {type(content).__name__}, not text or a list of parts.")
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " [cut]"


def call_text(call: Any) -> str:
    """One tool call as an action: ``name(arguments)`` (OpenAI's ``{"function": {"name", "arguments"}}``
    or a flat ``{"name", "arguments"}``; arguments as given, or as compact JSON when an object)."""
    if not isinstance(call, dict):
        raise StudioError(f"A tool call is {type(call).__name__}, not an object.")
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise StudioError("A tool call has no function name.")
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    return f"{name[:200]}({arguments})"


def clean_message(message: Any, position: int) -> dict[str, Any]:
    """One message checked and reduced to plain data: role, text content, tool calls, a tool's name."""
    if not isinstance(message, dict):
        raise StudioError(f"Message {position} is {type(message).__name__}, not an object with a role.")
    role = message.get("role")
    if role not in ROLES:
        raise StudioError(f"Message {position} has role {str(role)[:40]!r}: expected one of {', '.join(ROLES)}.")
    clean: dict[str, Any] = {"role": role, "content": text_of(message.get("content"))}
    calls = message.get("tool_calls") or []
    if role == "assistant" and calls:
        if not isinstance(calls, list):
            raise StudioError(f"Message {position}'s tool_calls is not a list.")
        clean["tool_calls"] = [call_text(call) for call in calls[:64]]
    if role == "tool":
        clean["name"] = str(message.get("name") or message.get("function") or "tool")[:200]
    return clean


def observed(messages: list[dict[str, Any]]) -> str:
    """What the agent saw in the messages between two of its turns."""
    lines = []
    for message in messages:
        if message["role"] == "tool":
            lines.append(f"[tool {message['name']}] {message['content']}")
        elif message["role"] == "user":
            lines.append(message["content"])
    return "\n".join(lines)


def as_chat_message(message: dict[str, Any]) -> dict[str, Any]:
    """A kept message as a chat message a model's template renders (tool calls written as text, as
    most small models' templates have no tool-call form)."""
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = "\n".join(message["tool_calls"])
        text = f"{message['content']}\n{calls}" if message["content"] else calls
        return {"role": "assistant", "content": text}
    if message["role"] == "tool":
        return {"role": "user", "content": f"[tool {message['name']}] {message['content']}"}
    return {"role": message["role"], "content": message["content"]}


def episode_from_messages(
    raw_messages: Any,
    *,
    env: str,
    source: dict[str, Any],
    instruction: str | None = None,
    started_at: str | None = None,
    **fields: Any,
) -> Episode:
    """An episode from one conversation (see the module's docstring for the mapping)."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise StudioError("A conversation needs a non-empty list of messages.")
    messages = [clean_message(m, n) for n, m in enumerate(raw_messages)]
    system = [m for m in messages if m["role"] == "system"]
    users = [m for m in messages if m["role"] == "user"]
    steps: list[Step] = []
    pending: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "system":
            continue
        if message["role"] != "assistant":
            pending.append(message)
            continue
        if steps:
            steps[-1].next_observation = observed(pending)
        calls = message.get("tool_calls")
        raw = as_chat_message(message)["content"]
        steps.append(
            Step(
                index=len(steps),
                observation=observed(pending),
                action="; ".join(calls) if calls else message["content"],
                actor="imported",
                raw=raw,
                thought=(message["content"] or None) if calls else None,
                extra={"transcript": {"before": pending, "turn": message}},
            )
        )
        pending = []
    if not steps:
        raise StudioError("The conversation has no assistant message: nothing the agent did to import.")
    if pending:
        steps[-1].next_observation = observed(pending)
    steps[-1].terminated = True
    source = {**source, "prompt": "rebuilt", "system": [m["content"] for m in system]}
    episode = Episode(
        env=env,
        seed=None,
        instruction=instruction if instruction is not None else (users[0]["content"] if users else ""),
        policy="imported",
        steps=steps,
        source=source,
        **fields,
    )
    return stamped(episode, started_at or file_time(Path(source["file"])))


def has_transcript(step: Step) -> bool:
    """Whether ``step`` was imported from a conversation (its prompt can be rebuilt)."""
    return isinstance(step.extra.get("transcript"), dict)


def rebuilt_prompts(
    system: list[str], transcripts: list[Any], upto: int | None = None
) -> list[list[dict[str, Any]] | None]:
    """The prompt before each turn of a conversation (system, then each earlier turn and what it was
    answered, then what this turn answered), from each step's ``extra["transcript"]`` (None where a
    step has none), up to step ``upto``: one pass, however many steps."""
    messages = [{"role": "system", "content": text} for text in system]
    prompts: list[list[dict[str, Any]] | None] = []
    for transcript in transcripts[: None if upto is None else upto + 1]:
        if not isinstance(transcript, dict):
            prompts.append(None)
            continue
        messages.extend(as_chat_message(m) for m in transcript.get("before", []))
        prompts.append(list(messages))
        messages.append(as_chat_message(transcript.get("turn") or {"role": "assistant", "content": ""}))
    return prompts


def prompt_at(episode: Episode, index: int) -> list[dict[str, Any]]:
    """The chat messages the model saw before its turn at step ``index``: the recorded prompt when
    there is one, else rebuilt from the transcript (:func:`rebuilt_prompts`)."""
    step = episode.steps[index]
    if step.prompt:
        return step.prompt
    if not has_transcript(step):
        raise StudioError(f"Step {index} has neither a recorded prompt nor a transcript to rebuild one from.")
    system = (episode.source or {}).get("system", [])
    return rebuilt_prompts(system, [s.extra.get("transcript") for s in episode.steps], upto=index)[index]


def prompts_of(episode: Episode) -> list[list[dict[str, Any]] | None]:
    """Every step's prompt, recorded or rebuilt (None where neither is), in one pass over the episode."""
    rebuilt = rebuilt_prompts(
        (episode.source or {}).get("system", []), [s.extra.get("transcript") for s in episode.steps]
    )
    return [step.prompt or again for step, again in zip(episode.steps, rebuilt)]
