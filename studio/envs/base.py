"""The environment API every studio environment implements.

A studio environment is a :class:`gymnasium.Env` whose observations and actions are text,
extended with what a language agent and the studio need:

- ``instruction``: the task, set by ``reset``;
- ``valid_actions()``: the allowed actions in the current state, or None when the set is
  not finite (e.g. ``search[anything]``);
- ``validate_action(text)``: canonical form of an action, or the reason it is not allowed;
- ``render()``: an RGB uint8 frame drawn with OpenCV;
- ``get_state()`` / ``set_state()``: JSON-serialisable snapshots, so any step can be
  branched without replaying the episode;
- ``expert_action()``: the oracle's next action (built-in environments only);
- ``sample_action(rng)``: a random allowed action, for the random policy.

An action that is not allowed never raises: ``step`` answers with an "Invalid action"
observation, zero reward, the state unchanged and ``info["invalid_action"]`` set to the
reason. :func:`check_env` is the public contract every environment passes.
"""

from __future__ import annotations

import copy
import json
import re
import string
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from studio.envs.fork_probe import ForkMode
from studio.errors import BadOption

#: Characters allowed in text observations and actions (printable ASCII plus newline).
TEXT_CHARSET = frozenset(string.printable)
MAX_TEXT_LENGTH = 100_000


def text_space(max_length: int = MAX_TEXT_LENGTH) -> spaces.Text:
    """A Gymnasium ``Text`` space over printable ASCII."""
    return spaces.Text(max_length=max_length, min_length=0, charset="".join(sorted(TEXT_CHARSET)))


def normalize_action(text: str) -> str:
    """Lower-case and collapse whitespace, so ``"  Go  North "`` matches ``"go north"``."""
    return re.sub(r"\s+", " ", text.strip()).lower()


def _kind(value: Any) -> str:
    """The JSON kind of a snapshot value (ints and floats are both numbers)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    for kind in (str, list, dict):
        if isinstance(value, kind):
            return kind.__name__
    return type(value).__name__


def invalid_observation(reason: str) -> str:
    """The observation an environment answers with when an action is not allowed."""
    return f"Invalid action: {reason} Nothing happens."


@dataclass(frozen=True)
class OptionSpec:
    """One option an environment accepts (``--env-opt name=value`` on the CLI)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, value: Any) -> Any:
        """Convert ``value`` (possibly a CLI string) and check it; raise BadOption if unusable."""
        try:
            if self.type is bool and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                parsed: Any = lowered in {"true", "1", "yes"}
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                parsed = self.type(value)
        except (TypeError, ValueError):
            raise BadOption(f"Option '{self.name}' must be {self.type.__name__}, got {value!r}.") from None
        if self.choices is not None and parsed not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise BadOption(f"Option '{self.name}' must be one of {allowed}, got {parsed!r}.")
        if self.minimum is not None and parsed < self.minimum:
            raise BadOption(f"Option '{self.name}' must be at least {self.minimum}, got {parsed!r}.")
        if self.maximum is not None and parsed > self.maximum:
            raise BadOption(f"Option '{self.name}' must be at most {self.maximum}, got {parsed!r}.")
        return parsed

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for ``app.py envs --json`` and the UI)."""
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
            "choices": list(self.choices) if self.choices is not None else None,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }


def resolve_options(specs: tuple[OptionSpec, ...], given: dict[str, Any], env_name: str) -> dict[str, Any]:
    """Fill defaults, convert and check ``given`` against ``specs``; raise BadOption on a problem."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        allowed = ", ".join(by_name) or "none"
        raise BadOption(f"Unknown option '{unknown[0]}' for {env_name} (options: {allowed}).")
    return {name: spec.parse(given[name]) if name in given else spec.default for name, spec in by_name.items()}


@dataclass(frozen=True)
class ActionCheck:
    """Result of :meth:`StudioEnv.validate_action`: a canonical action or the reason it is refused."""

    action: str | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.reason is None


class StudioEnv(gym.Env):
    """Base class of studio environments: text in, text out, snapshots, an oracle.

    Subclasses implement ``_reset``, ``_step``, ``_render_frame``, ``_get_state``,
    ``_set_state``, ``valid_actions`` (or ``validate_action`` for infinite action sets) and,
    for built-ins, ``expert_action``. The base class keeps what every environment has in its
    snapshots: ``seed_used`` (the seed of the last reset), ``done`` and ``instruction``.

    Registering one is a call to :func:`studio.envs.registry.register_env` (see there).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}
    #: Registry name, set by subclasses.
    name: ClassVar[str] = ""
    #: Options the environment accepts.
    option_specs: ClassVar[tuple[OptionSpec, ...]] = ()
    #: One line describing the action space (``app.py envs``).
    action_summary: ClassVar[str] = ""
    #: Whether ``valid_actions()`` changes from state to state (prompts then list it every turn).
    actions_depend_on_state: ClassVar[bool] = False
    #: The step limit when none is given: enough for the expert on every seed.
    default_max_steps: ClassVar[int] = 100
    #: How the environment decides success, in words (stated on an episode's last step).
    success_rule: str = "success: the environment says the goal was reached when the episode terminates"
    #: A survival task (keep a pole up): reaching the step limit, the environment's or the studio's,
    #: without terminating is success, and terminating is failure.
    success_when_truncated: bool = False
    #: Whether the task has a notion of success at all: without one (Pendulum: swing up and hold, for
    #: ever) an episode's success is unknown (None, shown "n/a") and comparisons read its return.
    has_success: bool = True
    #: How a fork of a snapshot comes back (:mod:`studio.envs.fork_probe`): ``exact`` (restored as it
    #: was), ``replay`` (the actions since the reset replayed from the seed) or ``none`` (refused).
    fork_mode: ForkMode = "exact"
    #: How forks are made, or why they cannot be, in words (shown with the fork mode).
    fork_note: str = "forks restore the snapshot"

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options: dict[str, Any] = resolve_options(self.option_specs, options, self.name)
        self.render_mode = "rgb_array"
        self.observation_space = text_space()
        self.action_space = text_space(max_length=1000)
        self.instruction: str = ""
        self.last_observation: str = ""
        self.seed_used: int | None = None
        """The seed of the last reset (None before one)."""
        self.done: bool = False
        """The episode in this environment has ended (terminated or truncated)."""

    # -- Gymnasium API -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Generate the task for ``seed`` (deterministic) and return the first observation."""
        super().reset(seed=seed)
        self.seed_used, self.done = seed if seed is not None else 0, False
        observation, info = self._reset(self.seed_used, options or {})
        self.last_observation = observation
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply a text action; a refused action leaves the state unchanged."""
        check = self.validate_action(action)
        if not check.valid:
            assert check.reason is not None
            observation = invalid_observation(check.reason)
            self.last_observation = observation
            return observation, 0.0, False, False, {"invalid_action": check.reason}
        assert check.action is not None
        observation, reward, terminated, truncated, info = self._step(check.action)
        self.last_observation = observation
        subgoals = self.subgoals()
        if subgoals is not None:
            info = {**info, "subgoals": subgoals}
        return observation, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The current state as an RGB uint8 array of shape (H, W, 3)."""
        return self._render_frame()

    # -- language-agent extensions -------------------------------------------------
    def valid_actions(self) -> list[str] | None:
        """Actions allowed now, in a stable order; None when the set is not finite."""
        raise NotImplementedError

    def validate_action(self, action: str) -> ActionCheck:
        """Canonical form of ``action`` if allowed now, else the reason it is not."""
        if not isinstance(action, str) or not action.strip():
            return ActionCheck(None, "The action is empty.")
        allowed = self.valid_actions()
        if allowed is None:  # pragma: no cover - infinite-action envs override this
            raise NotImplementedError("environments without a finite action set override validate_action")
        wanted = normalize_action(action)
        for candidate in allowed:
            if normalize_action(candidate) == wanted:
                return ActionCheck(candidate)
        return ActionCheck(None, f"'{_shorten(action)}' is not one of the valid actions now.")

    def sample_action(self, rng: np.random.Generator) -> str:
        """A random allowed action (the random policy's choice)."""
        allowed = self.valid_actions()
        if not allowed:  # pragma: no cover - infinite-action envs override this
            raise NotImplementedError("environments without a finite action set override sample_action")
        return allowed[int(rng.integers(len(allowed)))]

    def action_help(self) -> str | None:
        """How to write an action, for a prompt, when they are not a finite list (``click(bid)``,
        ...); None (the default) when :meth:`valid_actions` lists them or the observation says."""
        return None

    def score_choices(self) -> list[str] | None:
        """Actions to rank in score mode when :meth:`valid_actions` is None (a web page: a click on each
        interactive element); None (the default): score mode writes its action instead."""
        return None

    def action_at(self, x: float, y: float) -> str | None:
        """The action a person's click at pixel (x, y) of the frame takes, for environments whose frame
        is a screen (a web page); None (the default) when a click on the frame means nothing."""
        return None

    def typed_action(self, text: str) -> str | None:
        """The action a person's typed ``text`` takes when it is not itself an action (fill the focused
        field of a page); None (the default) when typing is only ever an action."""
        return None

    def expert_action(self) -> str:
        """The oracle's next action from the current state; built-in environments implement it."""
        raise NotImplementedError(f"{self.name} has no expert policy")

    def agent_xy(self, state: dict[str, Any]) -> tuple[float, float] | None:
        """Where the agent is in the rendered frame (pixels) in snapshot ``state``, for path plots.

        None (the default) when the environment has no position to draw.
        """
        return None

    def subgoals(self) -> dict[str, bool] | None:
        """The task's milestones and whether each is reached now, in order (e.g. key picked up, door
        opened, goal reached), for AgentBoard-style progress rates; None (the default) when the
        environment defines none. Stated in each step's ``info["subgoals"]``."""
        return None

    def probe_targets(self) -> dict[str, float | int | str]:
        """What is true of the current state, for probes of what the agent represents
        (``agent-studio probe``): numbers are regressed, strings classified. Empty (the default)
        when the environment declares nothing; read after restoring a step's snapshot."""
        return {}

    def text_cells(self, observation: str) -> list[tuple[int, int, int]]:
        """Which characters of a text observation draw which map cell: (char index, row, column).

        Empty (the default) when the observation has no map; attention projection onto the
        frame needs it, with :meth:`cell_box`.
        """
        return []

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of map cell (row, column) in the frame; environments whose
        :meth:`text_cells` is not empty implement it."""
        raise NotImplementedError(f"{self.name} draws no map cells")

    def twin(self) -> StudioEnv:
        """A new environment made like this one (same name, same options), not yet reset: through the
        registry (families such as ``gym:`` make theirs from the name), else from this class."""
        from studio.envs.registry import REGISTRY, make_env

        info = REGISTRY.find(self.name)
        if info is not None and (info.family or info.factory is type(self)):
            return make_env(self.name, self.options)
        return type(self)(**self.options)

    @classmethod
    def provides_expert(cls) -> bool:
        """Whether :meth:`expert_action` is implemented."""
        return cls.expert_action is not StudioEnv.expert_action

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything that can change after reset: the environment's
        own fields (:meth:`_get_state`) plus ``seed``, ``done`` and ``instruction``."""
        return {"seed": self.seed_used, **self._get_state(), "done": self.done, "instruction": self.instruction}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by :meth:`get_state` on an environment made with the same options."""
        if not isinstance(state, dict) or not {"seed", "done", "instruction"} <= set(state):
            raise BadOption(
                f"This snapshot of {self.name} cannot be restored: it has no seed, done flag or instruction."
            )
        seed, done, instruction = state["seed"], state["done"], state["instruction"]
        if (
            not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool)))
            or not isinstance(done, bool)
            or not isinstance(instruction, str)
        ):
            raise BadOption(
                f"This snapshot of {self.name} cannot be restored: its seed, done flag or instruction has the wrong type."
            )
        self._set_state(state)  # before the seed changes: an environment may regenerate its world when it does
        self.seed_used, self.done, self.instruction = seed, done, instruction

    def rewind(self, seed: int | None, state: Any | None) -> None:
        """Reset with ``seed`` (Gymnasium wants a reset before anything else), then restore ``state``
        if given (checked: see :meth:`restore`)."""
        self.reset(seed=seed)
        if state is not None:
            self.restore(state)

    def restore(self, state: Any) -> None:
        """:meth:`set_state` for a snapshot that may come from someone else's file.

        It must have the fields of this environment's own snapshots, and the state it gives
        must be one the environment can act in and draw; otherwise the environment is left as
        it was and the refusal is one line (:class:`BadOption`).
        """
        if self.fork_mode == "none":
            raise BadOption(f"{self.name} cannot be forked here: {self.fork_note}.")
        own = self.get_state()
        try:
            if not isinstance(state, dict) or set(state) != set(own):
                raise ValueError("its fields are not this environment's")
            for name, value in state.items():
                if _kind(value) != _kind(own[name]) and None not in (value, own[name]):
                    raise ValueError(f"its {name!r} has the wrong type")
            self.set_state(copy.deepcopy(state))
            self.valid_actions()
            self.render()
        except BadOption:
            self.set_state(own)
            raise
        except Exception as exc:  # whatever an environment raises on a state it cannot hold: a refusal
            self.set_state(own)
            raise BadOption(
                f"This snapshot of {self.name} cannot be restored: {str(exc).rstrip('.') or type(exc).__name__}."
            ) from None

    # -- subclass hooks ---------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        """The environment's own snapshot fields (JSON-serialisable); not seed, done or instruction."""
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore the fields :meth:`_get_state` wrote (``state`` also holds seed, done and instruction)."""
        raise NotImplementedError

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        raise NotImplementedError

    def _render_frame(self) -> np.ndarray:
        raise NotImplementedError


def map_cells(
    observation: str, rows: int, characters: int, symbols: frozenset[str] | set[str], per_cell: int = 1
) -> list[tuple[int, int, int]]:
    """For :meth:`StudioEnv.text_cells`: the first run of ``rows`` lines of exactly ``characters``
    map ``symbols`` in a text observation, as (char index, row, column), ``per_cell`` characters a cell."""
    lines, start = [], 0
    for line in observation.split("\n"):
        lines.append((start, line))
        start += len(line) + 1
    for first in range(len(lines) - rows + 1):
        block = lines[first : first + rows]
        if all(len(line) == characters and set(line) <= symbols for _, line in block):
            return [
                (offset + column, row, column // per_cell)
                for row, (offset, line) in enumerate(block)
                for column in range(characters)
            ]
    return []


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EnvCheckError(AssertionError):
    """Raised by :func:`check_env` when an environment breaks the contract."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EnvCheckError(message)


def _outcome(env: StudioEnv, action: str) -> tuple[Any, ...]:
    observation, reward, terminated, truncated, info = env.step(action)
    return observation, reward, terminated, truncated, json.dumps(info, sort_keys=True, default=str)


def check_env(env: StudioEnv, seed: int = 0, steps: int = 30) -> None:
    """Check that ``env`` keeps the studio environment contract; raise EnvCheckError if not.

    Checks: seeded reset is deterministic; observations and the instruction are text;
    ``valid_actions`` is a list of distinct non-empty strings (or None); ``render`` returns
    an RGB uint8 frame; a refused action changes nothing and says why; snapshots are
    JSON-serialisable and restoring one then repeating an action gives the same
    observation, reward and flags, at every state of a random walk (unless the environment's
    ``fork_mode`` is ``none``: then restoring is refused in one line).
    """
    rng = np.random.default_rng(seed)
    first, info = env.reset(seed=seed)
    _require(isinstance(first, str) and first != "", "reset must return a non-empty text observation")
    _require(isinstance(info, dict), "reset must return an info dict")
    _require(isinstance(env.instruction, str) and env.instruction != "", "reset must set a non-empty instruction")
    instruction = env.instruction
    again, _ = env.reset(seed=seed)
    _require(again == first and env.instruction == instruction, "reset with the same seed must give the same task")

    frame = env.render()
    _require(
        isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3,
        "render must return an RGB uint8 array of shape (H, W, 3)",
    )

    before = json.dumps(env.get_state(), sort_keys=True)
    observation, reward, terminated, truncated, info = env.step("this is not an action @@@")
    _require(
        "invalid_action" in info and isinstance(info["invalid_action"], str),
        "a refused action must set info['invalid_action']",
    )
    _require(
        reward == 0.0 and not terminated and not truncated,
        "a refused action must give no reward and not end the episode",
    )
    _require(
        observation.startswith("Invalid action"), "a refused action must answer with an 'Invalid action' observation"
    )
    _require(json.dumps(env.get_state(), sort_keys=True) == before, "a refused action must not change the state")

    for _ in range(steps):
        allowed = env.valid_actions()
        if allowed is not None:
            _require(isinstance(allowed, list) and allowed, "valid_actions must be a non-empty list or None")
            _require(all(isinstance(a, str) and a.strip() for a in allowed), "valid actions must be non-empty strings")
            _require(len(set(map(normalize_action, allowed))) == len(allowed), "valid actions must be distinct")
        state = env.get_state()
        try:
            encoded = json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise EnvCheckError(f"get_state must be JSON-serialisable: {exc}") from exc
        action = env.sample_action(rng)
        _require(env.validate_action(action).valid, f"sample_action returned a refused action: {action!r}")
        first_outcome = _outcome(env, action)
        _require(isinstance(first_outcome[0], str), "step must return a text observation")
        if env.fork_mode == "none":  # an environment that cannot be forked says so instead
            try:
                env.restore(json.loads(encoded))
            except BadOption:
                pass
            else:
                raise EnvCheckError("an environment whose fork mode is 'none' must refuse to restore a snapshot")
        else:
            env.set_state(json.loads(encoded))
            second_outcome = _outcome(env, action)
            _require(
                first_outcome == second_outcome,
                f"restoring a snapshot and repeating {action!r} gave a different outcome",
            )
        if first_outcome[2] or first_outcome[3]:
            env.reset(seed=int(rng.integers(1_000_000)))
