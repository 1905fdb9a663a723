"""Environment names -> constructors, descriptions for the CLI and the UI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from studio.envs.base import StudioEnv
from studio.envs.gridworld import GridWorld
from studio.envs.household import Household
from studio.envs.wikihop import WikiHop
from studio.errors import BadOption, UnknownEnvironment
from studio.validation import MAX_OPTIONS_CHARS, check_json

GYM_PREFIX = "gym:"


@dataclass(frozen=True)
class EnvInfo:
    """What the studio knows about a built-in environment before making it."""

    name: str
    cls: type[StudioEnv]
    summary: str
    default_max_steps: int

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name, summary, options, action space."""
        return {
            "name": self.name,
            "summary": self.summary,
            "options": [spec.describe() for spec in self.cls.option_specs],
            "action_space": self.cls.action_summary,
            "expert": self.cls.provides_expert(),
            "default_max_steps": self.default_max_steps,
        }


#: Built-in environments. Immutable: nothing registers at run time.
BUILTIN: dict[str, EnvInfo] = {
    info.name: info
    for info in (
        EnvInfo("gridworld", GridWorld, "Walk to the goal through walls; a key opens a locked door.", 100),
        EnvInfo("household", Household, "ALFWorld-style household: find, clean, heat, cool and place objects.", 50),
        EnvInfo("wikihop", WikiHop, "Multi-hop questions over a fictional encyclopedia: search, lookup, finish.", 20),
    )
}
GYM_DEFAULT_MAX_STEPS = 200


def parse_cli_value(text: str) -> Any:
    """A CLI option value: JSON when it parses (numbers, true/false, lists), else the string."""
    lowered = text.strip()
    if lowered.lower() in {"true", "false"}:
        return lowered.lower() == "true"
    if len(lowered) > MAX_OPTIONS_CHARS:
        raise BadOption(f"An option value has at most {MAX_OPTIONS_CHARS:,} characters.")
    try:
        value = json.loads(lowered)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        raise BadOption("An option value is nested too deeply.") from None
    check_json(value, "the option value", max_depth=8)
    return value


def make_env(name: str, options: dict[str, Any] | None = None) -> StudioEnv:
    """Make environment ``name`` (a built-in name or ``gym:<id>``) with ``options``.

    Raises UnknownEnvironment or BadOption with a one-sentence message on user errors.
    """
    options = dict(options or {})
    if name.startswith(GYM_PREFIX):
        from studio.envs.gym_adapter import GymAdapter  # gymnasium's registry loads only when asked

        gym_id = name[len(GYM_PREFIX):].strip()
        if not gym_id:
            raise UnknownEnvironment("Give a Gymnasium id after 'gym:', e.g. gym:FrozenLake-v1.")
        return GymAdapter(gym_id, **options)
    info = BUILTIN.get(name)
    if info is None:
        known = ", ".join(BUILTIN)
        raise UnknownEnvironment(f"Unknown environment '{name}'. Known: {known}, or gym:<id> for an installed Gymnasium environment.")
    return info.cls(**options)


def default_max_steps(name: str) -> int:
    """A step limit that leaves the expert plenty of room on every seed."""
    info = BUILTIN.get(name)
    return info.default_max_steps if info else GYM_DEFAULT_MAX_STEPS


def describe_all() -> list[dict[str, Any]]:
    """Descriptions of the built-ins plus the gym: family."""
    described = [info.describe() for info in BUILTIN.values()]
    described.append(
        {
            "name": "gym:<id>",
            "summary": "Any installed Gymnasium environment with a Discrete action space, e.g. gym:FrozenLake-v1.",
            "options": [{"name": "<any>", "type": "json", "default": None, "help": "Passed to gymnasium.make(id, **options)."}],
            "action_space": "finite: the environment's named Discrete actions",
            "expert": False,
            "default_max_steps": GYM_DEFAULT_MAX_STEPS,
        }
    )
    return described
