"""The conversation around a step, as chat messages: what a model saw before it acted and what it
wrote, rebuilt for steps no model took (an expert, a random policy, a person) in the ReAct policy's
own format. The exports build their rows from these (``storage/export_rows.py``).

A step here is anything with ``observation``, ``raw``, ``action`` and ``prompt`` (the messages the
model saw, or None).
"""

from __future__ import annotations

from typing import Any

from studio.agents.react_prompt import EXAMPLE_TITLES, expert_thought

Message = dict[str, Any]


def output_text(raw: str, action: str | None) -> str:
    """An output as an assistant turn: the model's own text, or the action someone else took (an
    expert, a random policy, a person) in the policy's format, with the thought an expert step has
    in the policy's few-shot examples, so both sides of a pair teach the same format."""
    if raw and raw.strip() != (action or "").strip():
        return raw
    return f"Thought: {expert_thought(action)}\nAction: {action}" if action else raw


def step_text(step: Any) -> str:
    """A step's output as an assistant turn: an imported step's text is a model's own reply as recorded
    (even when it is also the action), any other step's as :func:`output_text` writes it."""
    if getattr(step, "actor", "") == "imported":
        return step.raw
    return output_text(step.raw, step.action)


def compact_messages(messages: list[Message]) -> list[Message]:
    """The messages without the few-shot example in the system message: a prompting device, not
    the task, and most of a prompt's length (an export in ``compact`` mode trains at short max_length)."""
    out = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "system" and isinstance(content, str):
            cuts = [content.find(f"\n\n{title}") for title in EXAMPLE_TITLES if f"\n\n{title}" in content]
            if cuts:
                message = {**message, "content": content[: min(cuts)]}
        out.append(message)
    return out


def fallback_prompt(instruction: str, steps: list[Any], upto: int) -> list[Message]:
    """The chat up to step ``upto`` for steps no model took (expert, random, human)."""
    messages: list[Message] = [
        {"role": "system", "content": f"You are an agent solving a task step by step.\nTask: {instruction}"}
    ]
    for step in steps[:upto]:
        messages.append({"role": "user", "content": f"Observation: {step.observation}"})
        messages.append({"role": "assistant", "content": step_text(step)})
    messages.append({"role": "user", "content": f"Observation: {steps[upto].observation}"})
    return messages


def prompt_at(instruction: str, steps: list[Any], index: int) -> list[Message]:
    step = steps[index]
    return step.prompt if step.prompt else fallback_prompt(instruction, steps, index)


def continuation(steps: list[Any]) -> list[Message]:
    """A trajectory after its first prompt: assistant turns with the observations between them."""
    messages: list[Message] = []
    for position, step in enumerate(steps):
        if position:
            messages.append({"role": "user", "content": f"Observation: {step.observation}"})
        messages.append({"role": "assistant", "content": step_text(step)})
    return messages
