"""A person's input as an environment's action: typed text, or a click on the frame (a web page)."""

from __future__ import annotations

from typing import Any

from studio.envs.base import StudioEnv
from studio.errors import StudioError


def typed_action(env: StudioEnv, text: str) -> str:
    """What a person typed, as the action it means: itself when it is an action, else what the
    environment makes of typing (a web page: fill the focused field), else itself (refused later)."""
    if env.validate_action(text).valid:
        return text
    return env.typed_action(text) or text


def clicked_action(env: StudioEnv, x: Any, y: Any) -> str:
    """The action of a person's click at pixel (``x``, ``y``) of the frame; one line when there is none."""
    try:
        px, py = float(x), float(y)
    except (TypeError, ValueError):
        raise StudioError("A click on the frame needs a point.") from None
    action = env.action_at(px, py)
    if action is None:
        raise StudioError(f"A click on the frame does not act in {env.name}: type or pick an action.")
    return action
