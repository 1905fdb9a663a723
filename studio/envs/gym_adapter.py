"""Run any installed Gymnasium environment with a Discrete action space as a studio environment.

``gym:<id>`` (e.g. ``gym:FrozenLake-v1``) makes the environment with ``render_mode="rgb_array"``
and adds what a language agent needs: named actions (a table for common environments,
``get_action_meanings()`` where the environment has it, else ``action 0``...), a text
observation (from the environment's ``ansi`` render when it has one, else a formatter),
and snapshots.

Snapshots hold the environment attributes that differ from a freshly made instance,
pickled; :mod:`studio.envs.snapshots` reads them back with a whitelist of plain and numpy types
only, because a snapshot may come from an episode file the user did not write.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import inspect
import json
import math
import os
import pickle
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# pygame (used by the toy-text renderers) must not look for a display or a sound card, and
# must not take over SIGINT/SIGTERM: SDL installs its own handlers when it starts, after which
# `docker stop` or systemd could no longer stop the server.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ["SDL_NO_SIGNAL_HANDLERS"] = "1"
# MuJoCo draws offscreen through EGL (Mesa's software renderer on a machine without a GPU).
os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from studio.envs.base import ActionCheck, StudioEnv  # noqa: E402
from studio.envs.fork_probe import ForkMode, ForkProbe, probe_fork_mode  # noqa: E402
from studio.envs.registry import register_env  # noqa: E402
from studio.envs.snapshots import checked_counters, dump_value, load_value, picklable  # noqa: E402
from studio.errors import BadOption, StudioError, UnknownEnvironment  # noqa: E402


@dataclass(frozen=True)
class SuccessRule:
    """How a Gymnasium environment's outcome is read as success (declared on the episode's last step).

    Whatever the rule, an environment that reports success itself (``info["is_success"]`` or
    ``info["success"]``) is believed.
    """

    name: str
    description: str
    survival: bool = False
    """Success is lasting to the step limit (the environment's or the studio's) without terminating."""
    known: bool = True
    """False for tasks without a notion of success (Pendulum: hold it up, for ever): success is None
    ("n/a") and comparisons read the return."""

    def decide(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool | None:
        """Whether the step ends the task successfully, in this order: a crash (``info["crashed"]``,
        highway-env) is a failure; an environment's own ``is_success``/``success`` flag is believed,
        as a bool or a number (Fetch and Meta-World report 0.0 or 1.0: success is 0.5 or more); then
        the rule; None for a task without a notion of success."""
        if _flag(info.get("crashed")) is True:
            return False
        for key in ("is_success", "success"):
            reported = _flag(info.get(key))
            if reported is not None:
                return reported
        if not self.known:
            return None
        if self.survival:
            return bool(truncated and not terminated)
        if self.name == "termination":
            return bool(terminated)
        return bool(terminated and reward > 0)


def _flag(value: Any) -> bool | None:
    """An info entry read as a yes/no: a bool, or a finite number (0.5 or more is yes); None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value)):
        return float(value) >= 0.5
    if isinstance(value, np.ndarray) and value.size == 1:
        return _flag(value.reshape(()).item())
    return None


#: Terminating with a positive reward is reaching the goal (FrozenLake, Taxi, Blackjack's win, MiniGrid).
POSITIVE_REWARD = SuccessRule("positive reward", "success: the episode terminated with a positive reward")
#: Termination is the goal; the rewards are costs (MountainCar reaching the flag, Acrobot, CliffWalking).
TERMINATION = SuccessRule("termination", "success: the episode terminated (reaching the goal ends it)")
#: Staying alive is the task (CartPole, MuJoCo's stay-healthy tasks, driving without a crash): lasting to the
#: step limit is success, terminating is failure.
SURVIVAL = SuccessRule(
    "survival", "success: lasting to the step limit without terminating (terminating is failing)", survival=True
)
#: No notion of success (Pendulum, Reacher, HalfCheetah, Atari games): the return is the measure.
NO_SUCCESS = SuccessRule("none", "no notion of success: the task has no goal to reach, so compare returns", known=False)


#: Bins per dimension of a continuous action, as RT-2 and OpenVLA discretise theirs.
DEFAULT_BINS = 256
MAX_BINS = 1024


@dataclass(frozen=True)
class BinDiscretiser:
    """Continuous (Box) actions as bin indices, one per dimension, as VLAs emit them.

    Each dimension's range [low, high] is cut into ``bins`` equal bins; bin i stands for its
    centre, low + (i + 0.5) * (high - low) / bins. The action text is the indices written with a
    fixed number of digits (``"017 240"``), so no bin's text is the start of another's and a
    model's probabilities over the bins of a dimension are a distribution.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    bins: int = DEFAULT_BINS

    @classmethod
    def for_space(cls, space: spaces.Box, bins: int, gym_id: str) -> BinDiscretiser:
        low, high = np.asarray(space.low, dtype=np.float64).ravel(), np.asarray(space.high, dtype=np.float64).ravel()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise UnknownEnvironment(f"gym:{gym_id} has an unbounded continuous action; it cannot be cut into bins.")
        return cls(tuple(float(v) for v in low), tuple(float(v) for v in high), bins)

    @property
    def dimensions(self) -> int:
        return len(self.low)

    @property
    def digits(self) -> int:
        return len(str(self.bins - 1))

    def values(self, indices: list[int]) -> np.ndarray:
        """The action: each bin's centre."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        return low + (np.asarray(indices, dtype=np.float64) + 0.5) * (high - low) / self.bins

    def indices(self, values: Any) -> list[int]:
        """The bins that hold ``values`` (clipped into the range)."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        scaled = np.floor((np.asarray(values, dtype=np.float64).ravel() - low) / (high - low) * self.bins)
        return [int(v) for v in np.clip(scaled, 0, self.bins - 1)]

    def format(self, indices: list[int]) -> str:
        """The action text: the indices, fixed width, separated by spaces."""
        return " ".join(f"{int(i):0{self.digits}d}" for i in indices)

    def parse(self, text: str) -> list[int] | str:
        """The bin indices an action text names, or why it names none."""
        parts = text.replace(",", " ").split()
        if len(parts) != self.dimensions or not all(p.isdigit() and len(p) <= 6 for p in parts):
            return (
                f"an action is {self.dimensions} whole number{'s' * (self.dimensions > 1)} from 0 to {self.bins - 1}."
            )
        indices = [int(p) for p in parts]
        if any(i >= self.bins for i in indices):
            return f"every bin is from 0 to {self.bins - 1}."
        return indices


@dataclass(frozen=True)
class GymHooks:
    """What the studio knows about one Gymnasium environment (by its id's name, without version)."""

    task: str | None = None
    """A one-sentence task."""
    action_names: tuple[str, ...] | None = None
    """Names of the Discrete actions, in order."""
    fields: tuple[str, ...] | None = None
    """Names of the entries of a vector observation."""
    action_fields: tuple[str, ...] | None = None
    """Names of the dimensions of a continuous action."""
    describe: Callable[[Any, Any], str] | None = None
    """The state in words, from (the unwrapped environment, the raw observation): what a colour or a
    tuple says that text would lose."""
    success: SuccessRule = POSITIVE_REWARD


_FROZEN_LAKE = GymHooks(
    task="Walk from the start S to the goal G across the frozen lake without falling into a hole H; the ice may be slippery.",
    action_names=("left", "down", "right", "up"),
)
#: Taxi's four stands, in the order its state encodes them.
TAXI_STANDS = ("R", "G", "Y", "B")


def _describe_taxi(env: Any, observation: Any) -> str:
    row, column, passenger, destination = env.decode(int(observation))
    where = "in the taxi" if passenger == 4 else f"waiting at {TAXI_STANDS[passenger]}"
    return (
        f"The taxi is at row {row}, column {column}. The passenger is {where}; "
        f"the destination is {TAXI_STANDS[destination]}."
    )


def _describe_blackjack(env: Any, observation: Any) -> str:
    total, dealer, usable_ace = (int(v) for v in observation)
    dealer_card = "an ace" if dealer == 1 else str(dealer)
    ace = "a usable ace" if usable_ace else "no usable ace"
    return f"Your sum is {total}, the dealer shows {dealer_card}, and you have {ace}."


#: Hooks of well-known environments, by the id's name (no namespace, no version).
HOOKS: dict[str, GymHooks] = {
    "FrozenLake": _FROZEN_LAKE,
    "FrozenLake8x8": _FROZEN_LAKE,
    "CliffWalking": GymHooks(
        task="Walk from the bottom-left corner to the bottom-right goal without stepping off the cliff C.",
        action_names=("up", "right", "down", "left"),
        success=TERMINATION,
    ),
    "Taxi": GymHooks(
        task="Drive the taxi to the passenger, pick them up, drive to the destination and drop them off.",
        action_names=("south", "north", "east", "west", "pickup", "dropoff"),
        describe=_describe_taxi,
    ),
    "Blackjack": GymHooks(
        task="Beat the dealer: get a hand closer to 21 than the dealer's without going over.",
        action_names=("stick", "hit"),
        describe=_describe_blackjack,
    ),
    "CartPole": GymHooks(
        task="Keep the pole balanced upright on the cart for as long as possible.",
        action_names=("push left", "push right"),
        fields=("cart position", "cart velocity", "pole angle", "pole angular velocity"),
        success=SURVIVAL,
    ),
    "MountainCar": GymHooks(
        task="Drive the car up to the flag on the right hill, building momentum by rocking back and forth.",
        action_names=("accelerate left", "no acceleration", "accelerate right"),
        fields=("position", "velocity"),
        success=TERMINATION,
    ),
    "MountainCarContinuous": GymHooks(
        task="Drive the car up to the flag on the right hill, building momentum by rocking back and forth.",
        fields=("position", "velocity"),
        action_fields=("force",),
        success=TERMINATION,
    ),
    "Acrobot": GymHooks(
        task="Swing the end of the two-link arm above the line.",
        action_names=("torque -1", "torque 0", "torque +1"),
        fields=("cos theta1", "sin theta1", "cos theta2", "sin theta2", "angular velocity 1", "angular velocity 2"),
        success=TERMINATION,
    ),
    "Pendulum": GymHooks(
        task="Swing the pendulum up and keep it upright with as little torque as possible.",
        fields=("cos theta", "sin theta", "angular velocity"),
        action_fields=("torque",),
        success=NO_SUCCESS,  # it never ends by itself: lasting to the limit says nothing
    ),
}
for _name in ("InvertedPendulum", "InvertedDoublePendulum", "Hopper", "Walker2d", "Ant", "Humanoid"):
    HOOKS.setdefault(_name, GymHooks(success=SURVIVAL))  # MuJoCo's "stay healthy" tasks
for _name in ("Reacher", "Pusher", "Swimmer", "HalfCheetah", "HumanoidStandup"):
    HOOKS.setdefault(_name, GymHooks(success=NO_SUCCESS))  # MuJoCo tasks that never end: rewards only
#: highway-env's driving tasks: drive without crashing until the time is up (a crash ends them: failure).
_HIGHWAY = GymHooks(task="Drive along without crashing until the time is up.", success=SURVIVAL)
for _name in (
    "highway",
    "highway-fast",
    "merge",
    "roundabout",
    "intersection",
    "racetrack",
    "exit",
    "two-way",
    "u-turn",
):
    HOOKS.setdefault(_name, _HIGHWAY)


def _describe_ale(env: Any, observation: Any) -> str:
    """An Atari game's state in words: the screen itself is in the frame (ALE's RAM means nothing to a reader)."""
    ale = env.ale
    lives = f"Lives left: {ale.lives()}. " if ale.lives() > 0 else ""  # games without lives (Pong) say 0
    return f"{lives}Frame {ale.getEpisodeFrameNumber()} of the episode."


#: Atari games (ale-py, ``gym:ALE/Pong-v5``): play for points; their score is the return.
ALE_HOOKS = GymHooks(describe=_describe_ale, success=NO_SUCCESS)


def register_gym_hooks(name: str, hooks: GymHooks, replace: bool = False) -> None:
    """Teach the adapter about a Gymnasium environment (``name``: its id without namespace or version).

    ``hooks.success`` says how an episode's outcome is read, after two rules that always come first
    (:meth:`SuccessRule.decide`): a crash (``info["crashed"]``) fails, and an environment's own
    ``is_success``/``success`` (a bool, or a number: 0.5 or more) is believed. Then, per family:

    - :data:`POSITIVE_REWARD` (the default): terminating with a positive reward (FrozenLake, Taxi,
      Blackjack's win, MiniGrid);
    - :data:`TERMINATION`: terminating at all (MountainCar, Acrobot, CliffWalking: the rewards are costs);
    - :data:`SURVIVAL`: lasting to the step limit without terminating (CartPole, MuJoCo's stay-healthy
      tasks, highway-env's driving);
    - :data:`NO_SUCCESS`: no notion of success (Pendulum, Reacher, HalfCheetah, Atari): success is
      unknown ("n/a") and comparisons read the return.

    A family of ids (every ``ALE/`` game) takes its hooks from its :class:`GymFamily` instead."""
    if name in HOOKS and not replace:
        raise ValueError(f"Gym hooks for {name!r} exist already (pass replace=True to replace them).")
    HOOKS[name] = hooks


@dataclass(frozen=True)
class GymFamily:
    """Gymnasium environments that one package registers when it is imported (highway-env, ale-py,
    MiniGrid, ...), some with an adapter of their own (MiniGrid, BabyAI)."""

    prefixes: tuple[str, ...]
    """Id prefixes of the family (``MiniGrid-``, ``ALE/``, ``highway-``)."""
    package: str
    """The module whose import registers the ids (imported when such an id is first made)."""
    install: str
    """How to install it, for the message when it is missing."""
    adapter: str = ""
    """``module:Class`` of the family's :class:`StudioEnv` (made with the id and the options);
    empty: the generic :class:`GymAdapter`."""
    hooks: GymHooks | None = None
    """What the studio knows about every id of the family (their ``HOOKS`` entries by name win)."""

    def matches(self, gym_id: str) -> bool:
        return gym_id.startswith(self.prefixes)

    def register(self) -> None:
        """Add this family to the table (what an ``agent_studio.envs`` entry point naming a family does)."""
        register_gym_family(self)


_MINIGRID_INSTALL = "pip install 'agent-studio[envs]' (or pip install minigrid)"
#: Families of ids whose package registers them on import, imported on first use. A fixed table (extended
#: by :func:`register_gym_family` or an ``agent_studio.envs`` entry point): a web client never names a module.
FAMILIES: list[GymFamily] = [
    GymFamily(("BabyAI-",), "minigrid", _MINIGRID_INSTALL, adapter="studio.envs.minigrid_env:BabyAIEnv"),
    GymFamily(("MiniGrid-",), "minigrid", _MINIGRID_INSTALL, adapter="studio.envs.minigrid_env:MiniGridEnv"),
    GymFamily(("ALE/",), "ale_py", "pip install 'agent-studio[envs]' (or pip install ale-py)", hooks=ALE_HOOKS),
    GymFamily(
        (
            "highway-",
            "merge-",
            "roundabout-",
            "parking-",
            "intersection-",
            "racetrack-",
            "exit-",
            "two-way-",
            "u-turn-",
            "lane-keeping-",
        ),  # fmt: skip
        "highway_env",
        "pip install highway-env",
    ),
    GymFamily(
        ("Fetch", "HandReach", "HandManipulate", "PointMaze_", "AntMaze_", "AdroitHand", "FrankaKitchen"),
        "gymnasium_robotics",
        "pip install gymnasium-robotics",
    ),
    GymFamily(("Meta-World/",), "metaworld", "pip install metaworld"),
    GymFamily(("NetHack", "MiniHack"), "nle", "pip install nle"),
]
#: Gymnasium's id grammar (namespace/name-vN); ``module:id`` (which imports any module) is refused.
GYM_ID = re.compile(r"(?:[A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+(?:-v\d+)?")


def register_gym_family(family: GymFamily) -> None:
    """Teach ``gym:`` another package's ids: made through it, its package is imported first (once),
    and a missing package is one line naming ``family.install``. Later families win over earlier ones
    for the ids both match."""
    if not isinstance(family, GymFamily) or not family.prefixes or not family.package.replace(".", "_").isidentifier():
        raise ValueError("A gym family needs id prefixes and an importable package name.")
    FAMILIES.insert(0, family)


def family_of(gym_id: str) -> GymFamily | None:
    """The family whose package provides ``gym_id``, if any."""
    return next((family for family in FAMILIES if family.matches(gym_id)), None)


def _known_namespaces() -> str:
    return ", ".join(f"{p} ({f.install})" for f in FAMILIES for p in f.prefixes if p.endswith("/"))


def make_gym(gym_id: str, **options: Any) -> StudioEnv:
    """The studio environment for Gymnasium id ``gym_id`` (the ``gym:`` family's factory)."""
    if len(gym_id) > 200 or not GYM_ID.fullmatch(gym_id):
        raise UnknownEnvironment(
            f"'{gym_id[:80]}' is not a Gymnasium id (namespace/Name-vN, e.g. FrozenLake-v1 or MiniGrid-Empty-5x5-v0)."
        )
    family = family_of(gym_id)
    if family is not None:
        try:
            importlib.import_module(family.package)
        except ImportError:
            raise UnknownEnvironment(f"gym:{gym_id} needs the {family.package} package: {family.install}.") from None
        except Exception as exc:  # a package that breaks on import (a mismatched dependency): one line
            raise UnknownEnvironment(
                f"gym:{gym_id} needs the {family.package} package, which failed to import: {_first_line(exc)[:160]}"
            ) from None
        if family.adapter:
            module, _, name = family.adapter.partition(":")
            return getattr(importlib.import_module(module), name)(gym_id, **options)
    elif "/" in gym_id and gym_id.split("/")[0] not in _registered_namespaces():
        raise UnknownEnvironment(
            f"No installed package registers the Gymnasium namespace '{gym_id.split('/')[0][:40]}'. "
            f"Known: {_known_namespaces()}; another package's ids need it installed and named by an "
            "agent_studio.envs entry point (a GymFamily)."
        )
    return GymAdapter(gym_id, **options)


def _registered_namespaces() -> set[str]:
    return {spec.namespace for spec in gym.registry.values() if spec.namespace}


_HIGHLIGHT = re.compile(r"\x1b\[4\dm(.)\x1b\[0m")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Attributes that describe how the environment is set up, never its state.
_NEVER_RESTORED = frozenset({"render_mode", "spec", "metadata", "np_random", "action_space", "observation_space"})


class GymAdapter(StudioEnv):
    """A Gymnasium environment with a Discrete action space (named actions) or a Box one (bins), seen through text."""

    action_summary = "finite: the environment's named Discrete actions; Box: a bin index per dimension"
    option_specs = ()

    def __init__(self, gym_id: str, **options: Any) -> None:
        self.name = f"gym:{gym_id}"  # type: ignore[misc]  # per-instance name
        super().__init__()
        self.gym_id = gym_id
        bins = options.pop("bins", None)  # the studio's option (continuous actions), not the environment's
        try:
            self.env = gym.make(gym_id, render_mode="rgb_array", **options)
        except gym.error.Error as exc:
            raise UnknownEnvironment(f"Gymnasium could not make '{gym_id}': {_first_line(exc)}") from None
        except ImportError as exc:
            raise UnknownEnvironment(
                f"gym:{gym_id} needs a package that is not installed: {_first_line(exc)}"
            ) from None
        except (
            Exception
        ) as exc:  # an environment's constructor rejects its options in its own way (KeyError, ValueError, ...)
            raise BadOption(
                f"gym:{gym_id} does not accept these options ({type(exc).__name__}: {_first_line(exc)[:160]})."
            ) from None
        self.discretiser: BinDiscretiser | None = None
        if isinstance(self.env.action_space, spaces.Box):
            self.discretiser = BinDiscretiser.for_space(self.env.action_space, _bins(bins), gym_id)
            options = {**options, "bins": self.discretiser.bins}
        elif not isinstance(self.env.action_space, spaces.Discrete):
            raise UnknownEnvironment(
                f"gym:{gym_id} has a {type(self.env.action_space).__name__} action space; only Discrete and Box action spaces are supported."
            )
        elif bins is not None:
            raise BadOption(f"Option 'bins' is for continuous (Box) actions; gym:{gym_id}'s are Discrete.")
        self.options = dict(options)
        self.short_name = gym_id.split("/")[-1].split("-v")[0]
        family = family_of(gym_id)
        self.hooks = HOOKS.get(self.short_name) or (family.hooks if family and family.hooks else GymHooks())
        self.success_rule = self.hooks.success.description
        self.success_when_truncated = self.hooks.success.survival
        self.has_success = self.hooks.success.known
        self.action_names = self._action_names()
        self._baseline = self._attribute_pickles()
        self.raw_observation: Any = None
        self.done = False
        self.seed_used: int | None = None
        self._fork: ForkProbe | None = None  # found by probing, the first time it is asked for
        self._actions: list[str] = []  # since the reset: what a replaying fork replays

    # -- naming -------------------------------------------------------------------------
    def _action_names(self) -> list[str]:
        if self.discretiser is not None:
            return []
        count = int(self.env.action_space.n)
        names = list(self.hooks.action_names) if self.hooks.action_names else None
        if names is None and hasattr(self.env.unwrapped, "get_action_meanings"):
            names = [str(m).lower().replace("_", " ") for m in self.env.unwrapped.get_action_meanings()]
        if names is None or len(names) != count or len(set(names)) != count:
            names = [f"action {i}" for i in range(count)]
        return names

    def _text(self, message: str) -> str:
        """Text observation: the ansi render (agent highlight shown as @) or a formatted vector."""
        unwrapped = self.env.unwrapped
        body = None
        if "ansi" in self.env.metadata.get("render_modes", []):
            previous = unwrapped.render_mode
            unwrapped.render_mode = "ansi"  # the toy-text envs pick their renderer from this attribute
            try:
                ansi = unwrapped.render()
            finally:
                unwrapped.render_mode = previous
            if isinstance(ansi, str):
                marked, highlights = _HIGHLIGHT.subn("@", ansi)
                body = _ANSI.sub("", marked).strip("\n") + ("\n(@ marks your position)" if highlights else "")
        words = self.hooks.describe(unwrapped, self.raw_observation) if self.hooks.describe else None
        if body is None:  # no map: the words (a bare tuple says nothing), else the formatted vector
            body = words or self._format(self.raw_observation)
        elif words:  # what the map's colours said, which text loses
            body += "\n" + words
        return f"{message}\n{body}".strip()

    def _format(self, observation: Any) -> str:
        if isinstance(observation, np.ndarray) and observation.ndim >= 2 and observation.size > 64:
            # An image (Atari's screen): numbers say nothing to a language model; the frame shows it.
            return f"The screen is shown in the frame ({observation.shape[1]}x{observation.shape[0]} pixels)."
        fields = self.hooks.fields
        values = np.asarray(observation).ravel() if isinstance(observation, np.ndarray) else None
        if values is not None and fields and len(fields) == len(values):
            return "Observation: " + ", ".join(f"{f} = {v:.4f}" for f, v in zip(fields, values))
        if values is not None and values.dtype.kind == "f":
            return "Observation: [" + ", ".join(f"{v:.4f}" for v in values) + "]"
        return f"Observation: {observation}"

    # -- Gymnasium API ------------------------------------------------------------------
    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.seed_used = seed
        self.raw_observation, info = self.env.reset(seed=seed, options=options or None)
        self.done = False
        task = self.hooks.task or self._default_task()
        self.instruction = f"{task} {self._action_help()}"
        return self._text("You look around."), {"success": False, **_jsonable(info)}

    def _default_task(self) -> str:
        if self.gym_id.startswith("ALE/"):
            return f"Play the Atari 2600 game {self.short_name} and score as many points as you can."
        return f"Act well in the Gymnasium environment {self.gym_id}."

    # -- the public API: the actions since the reset, and one line for whatever the environment raises
    @contextlib.contextmanager
    def _third_party(self, doing: str) -> Iterator[None]:
        """Whatever the third-party environment raises while ``doing`` becomes one line, never a traceback."""
        try:
            yield
        except StudioError:
            raise
        except Exception as exc:
            raise EnvironmentFailed(f"{self.name} failed {doing}: {_failure(exc)}") from None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        with self._third_party("to reset"):
            observation, info = super().reset(seed=seed, options=options)
        self._actions = []
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        check = self.validate_action(action)
        with self._third_party(f"to take the action {action[:40]!r}"):
            outcome = super().step(action)
        if check.valid and check.action is not None:
            self._actions.append(check.action)
        return outcome

    def render(self) -> np.ndarray:  # type: ignore[override]
        with self._third_party("to draw its frame"):
            return super().render()

    # -- forks ----------------------------------------------------------------------------------
    @property
    def fork_mode(self) -> ForkMode:  # type: ignore[override]
        """``exact``, ``replay`` or ``none``: found by :func:`probed_fork` the first time it is asked."""
        return self._fork_probe().mode

    @property
    def fork_note(self) -> str:  # type: ignore[override]
        return self._fork_probe().note

    def _fork_probe(self) -> ForkProbe:
        if self._fork is None:
            self._fork = probed_fork(self)
        return self._fork

    def _replay(self, state: dict[str, Any]) -> None:
        """Restore a replaying snapshot: reset on its seed, then take its actions again, each checked."""
        actions, seed = state.get("actions"), state.get("seed")
        if not isinstance(actions, list) or len(actions) > MAX_REPLAY_ACTIONS:
            raise BadOption(f"This snapshot of {self.name} cannot be restored: its actions are not a list.")
        if not all(isinstance(a, str) and 0 < len(a) <= 1_000 for a in actions):
            raise BadOption(f"This snapshot of {self.name} cannot be restored: an action is not a short text.")
        self.reset(seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0)
        for action in actions:
            check = self.validate_action(action)
            if self.done or not check.valid:
                why = "they go on after the episode ended" if self.done else f"'{action[:40]}' is not a valid action"
                raise BadOption(f"This snapshot of {self.name} cannot be restored: {why}.")
            self.step(action)

    @property
    def action_dimension_names(self) -> list[str] | None:
        """Names of a continuous action's dimensions, where the studio knows them (``torque``)."""
        names = self.hooks.action_fields
        if self.discretiser is None or not names or len(names) != self.discretiser.dimensions:
            return None
        return list(names)

    def _dimension_labels(self) -> list[str]:
        """Each action dimension's name, or ``dimension i`` where the studio knows none."""
        assert self.discretiser is not None
        return self.action_dimension_names or [f"dimension {i + 1}" for i in range(self.discretiser.dimensions)]

    def _action_help(self) -> str:
        if self.discretiser is None:
            return f"Choose one action per turn from: {', '.join(self.action_names)}."
        d = self.discretiser
        ranges = ", ".join(
            f"{name} from {d.low[i]:g} to {d.high[i]:g}" for i, name in enumerate(self._dimension_labels())
        )
        count = "one number" if d.dimensions == 1 else f"{d.dimensions} numbers separated by spaces, one per dimension"
        return (
            f"Each action is {count}: a bin from {0:0{d.digits}d} (the lowest value) to {d.bins - 1} (the highest), "
            f"written with {d.digits} digits ({ranges})."
        )

    def valid_actions(self) -> list[str] | None:
        return None if self.discretiser is not None else list(self.action_names)

    def validate_action(self, action: str) -> ActionCheck:
        if self.discretiser is None:
            return super().validate_action(action)
        if not isinstance(action, str) or not action.strip():
            return ActionCheck(None, "The action is empty.")
        indices = self.discretiser.parse(action)
        if isinstance(indices, str):
            return ActionCheck(None, f"'{action.strip()[:40]}' is not an action: {indices}")
        return ActionCheck(self.discretiser.format(indices))

    def sample_action(self, rng: np.random.Generator) -> str:
        if self.discretiser is None:
            return super().sample_action(rng)
        return self.discretiser.format(
            [int(i) for i in rng.integers(self.discretiser.bins, size=self.discretiser.dimensions)]
        )

    def _meaning(self, action: str) -> str:
        """What a bin action means, in the environment's units (nothing for named actions)."""
        if self.discretiser is None:
            return ""
        values = self._gym_action(action)
        parts = [f"{name} = {float(v):.3g}" for name, v in zip(self._dimension_labels(), values)]
        return f" ({', '.join(parts)})"

    def _gym_action(self, action: str) -> Any:
        if self.discretiser is None:
            return self.action_names.index(action)
        indices = self.discretiser.parse(action)
        assert not isinstance(indices, str)  # validated by step()
        return self.discretiser.values(indices).astype(self.env.action_space.dtype)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The episode is over.", 0.0, True, False, {"success": False}
        self.raw_observation, reward, terminated, truncated, info = self.env.step(self._gym_action(action))
        self.done = bool(terminated or truncated)
        outcome = {**_jsonable(info), "success": self.hooks.success.decide(reward, terminated, truncated, info)}
        if self.done:
            outcome["success_rule"] = self.success_rule  # how this episode's success was read, on its last step
        return (
            self._text(f"You chose {action}{self._meaning(action)}."),
            float(reward),
            bool(terminated),
            bool(truncated),
            outcome,
        )

    def _render_frame(self) -> np.ndarray:
        try:
            frame = self.env.render()
        except Exception:  # a renderer that cannot start here (no EGL for MuJoCo): the episode goes on without frames
            frame = None
        if isinstance(frame, np.ndarray) and frame.ndim == 3:
            return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        blank = np.full((240, 320, 3), 245, dtype=np.uint8)  # the env draws nothing: say so
        cv2.putText(blank, "no frame", (110, 125), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (90, 90, 90), 1, cv2.LINE_AA)
        return blank

    # -- snapshots ------------------------------------------------------------------------
    def _attribute_pickles(self) -> dict[str, bytes | None]:
        # Spaces and the spec describe the environment, they are not its state.
        # A MuJoCo simulation's state is its physics (see _physics), not its model, data and renderer handles.
        handles = _MUJOCO_HANDLES if self._mujoco() is not None else ()
        return {
            name: picklable(value)
            for name, value in vars(self.env.unwrapped).items()
            if not isinstance(value, (spaces.Space, gym.envs.registration.EnvSpec)) and name not in handles
        }

    def _mujoco(self) -> Any:
        """The unwrapped environment when it is a MuJoCo simulation (Gymnasium's ``MujocoEnv``), else None."""
        unwrapped = self.env.unwrapped
        data = getattr(unwrapped, "data", None)
        return (
            unwrapped if hasattr(unwrapped, "set_state") and hasattr(data, "qpos") and hasattr(data, "qvel") else None
        )

    def _physics(self) -> dict[str, Any]:
        sim = self._mujoco()
        if sim is None:
            return {}
        data = sim.data
        return {
            "physics": {
                "qpos": data.qpos.tolist(),
                "qvel": data.qvel.tolist(),
                "act": data.act.tolist(),
                "time": float(data.time),
            }
        }

    def _set_physics(self, state: dict[str, Any]) -> Any:
        """The checked physics of a MuJoCo snapshot (lengths of this model, finite numbers), to set after the attributes."""
        sim = self._mujoco()
        if sim is None:
            return None
        physics = state["physics"]
        if not isinstance(physics, dict) or set(physics) != {"qpos", "qvel", "act", "time"}:
            raise ValueError("its physics are not a MuJoCo state")
        arrays = {}
        for name, size in (("qpos", sim.model.nq), ("qvel", sim.model.nv), ("act", sim.model.na)):
            values = physics[name]
            if not isinstance(values, list) or len(values) != size or not all(_finite(v) for v in values):
                raise ValueError(f"its {name} is not {size} finite numbers")
            arrays[name] = np.asarray(values, dtype=np.float64)
        if not _finite(physics["time"]):
            raise ValueError("its simulation time is not a number")
        return arrays, float(physics["time"])

    def _wrappers(self) -> list[gym.Env]:
        chain, env = [], self.env
        while isinstance(env, gym.Wrapper):
            chain.append(env)
            env = env.env
        return chain

    def _counters(self) -> list[int | None]:
        """The wrappers' step counters (TimeLimit's), which snapshots keep."""
        return [getattr(w, "_elapsed_steps", None) for w in self._wrappers()]

    def _set_counters(self, counters: list[int | None]) -> None:
        for wrapper, counter in zip(self._wrappers(), counters):
            if counter is not None:
                wrapper._elapsed_steps = counter
            if hasattr(wrapper, "_has_reset"):
                wrapper._has_reset = True

    def _get_state(self) -> dict[str, Any]:
        if self.fork_mode == "replay":
            return {"actions": list(self._actions)}
        return self._exact_state()

    def _set_state(self, state: dict[str, Any]) -> None:
        if self.fork_mode == "replay":
            self._replay(state)
        else:
            self._restore_exact(state)

    def _exact_state(self) -> dict[str, Any]:
        """The snapshot of an environment that forks exactly: the attributes that changed since it was
        made, the wrappers' counters, the raw observation and a MuJoCo simulation's physics."""
        current = self._attribute_pickles()
        changed = {
            name: base64.b64encode(data).decode("ascii")
            for name, data in current.items()
            if data is not None and data != self._baseline.get(name)
        }
        return {
            "attributes": changed,
            "elapsed_steps": self._counters(),
            "raw_observation": dump_value(self.raw_observation),
            **self._physics(),
        }

    def _restore_exact(self, state: dict[str, Any]) -> None:
        """Restore a snapshot (perhaps from someone else's file): every field is checked, the pickles go
        through :class:`_SnapshotUnpickler`, and only data attributes of this environment are set."""
        unwrapped = self.env.unwrapped
        try:
            attributes, counters = state["attributes"], checked_counters(state["elapsed_steps"])
            if not isinstance(attributes, dict):
                raise ValueError("it is not a gym snapshot")
            for name in attributes:
                self._check_attribute(name)
            restored = {name: load_value(data) for name, data in attributes.items()}
            raw_observation = load_value(state["raw_observation"])
            physics = self._set_physics(state)
        except (
            pickle.UnpicklingError,
            ValueError,
            TypeError,
            KeyError,
            EOFError,
            AttributeError,
            IndexError,
            struct.error,
            MemoryError,
        ) as exc:
            raise BadOption(
                f"This snapshot of {self.name} cannot be restored: {str(exc).rstrip('.') or type(exc).__name__}."
            ) from None
        for name, data in self._baseline.items():  # attributes not in the snapshot are as when made
            if data is not None and name not in restored:
                setattr(unwrapped, name, pickle.loads(data))  # our own pickles, made in this process
        for name, value in restored.items():
            setattr(unwrapped, name, value)
        self._set_counters(counters)
        if physics is not None:
            arrays, time = physics
            unwrapped.set_state(arrays["qpos"], arrays["qvel"])  # sets the data and recomputes what follows from it
            unwrapped.data.act[:] = arrays["act"]
            unwrapped.data.time = time
        self.raw_observation = raw_observation

    def _check_attribute(self, name: Any) -> None:
        """Only plain data attributes of the environment instance: never a method, a property, a dunder."""
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__") or name in _NEVER_RESTORED:
            raise ValueError(f"it would set {str(name)[:40]!r}")
        try:
            declared = inspect.getattr_static(type(self.env.unwrapped), name)
        except AttributeError:
            return  # an instance attribute only (e.g. FrozenLake's position)
        if callable(declared) or hasattr(declared, "__get__") or hasattr(declared, "__set__"):
            raise ValueError(f"it would replace {name!r}, which is not data")

    def close(self) -> None:
        self.env.close()


#: A MuJoCo environment's handles on its simulation and renderer: never pickled, never restored.
_MUJOCO_HANDLES = frozenset({"model", "data", "mujoco_renderer", "renderer", "viewer"})


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bins(value: Any) -> int:
    """The ``bins`` option: a whole number from 2 to MAX_BINS (default DEFAULT_BINS)."""
    if value is None:
        return DEFAULT_BINS
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise BadOption(f"Option 'bins' must be a whole number from 2 to {MAX_BINS}, got {str(value)[:40]!r}.")
    bins = int(value)
    if not 2 <= bins <= MAX_BINS:
        raise BadOption(f"Option 'bins' must be a whole number from 2 to {MAX_BINS}, got {bins}.")
    return bins


#: Actions a replaying snapshot may hold (a fork at step N replays N actions).
MAX_REPLAY_ACTIONS = 100_000
#: What the probe found for each gym id and options in this process (process-wide knowledge about
#: environment kinds, like HOOKS: never per session).
_PROBED: dict[tuple[str, str], ForkProbe] = {}
_PROBE_LOCK = threading.Lock()


def probed_fork(env: GymAdapter) -> ForkProbe:
    """How forks of ``env``'s id (with its options) come back: probed once per process on fresh twins
    (:func:`studio.envs.fork_probe.probe_fork_mode`); an environment that fails while probed cannot be forked."""
    key = (env.name, json.dumps(env.options, sort_keys=True, default=str))
    with _PROBE_LOCK:
        if key not in _PROBED:

            def make(mode: ForkMode) -> GymAdapter:
                twin = env.twin()
                assert isinstance(twin, GymAdapter)
                twin._fork = ForkProbe(mode, "being probed")
                return twin

            try:
                _PROBED[key] = probe_fork_mode(make)
            except Exception as exc:  # noqa: BLE001 - whatever the environment raised: it cannot be forked
                _PROBED[key] = ForkProbe("none", f"trying a fork failed ({_failure(exc)})")
        return _PROBED[key]


class EnvironmentFailed(StudioError):
    """A third-party environment raised while it was made, reset, stepped or drawn (one line)."""


def _failure(exc: BaseException) -> str:
    """An exception from a third-party environment in one short line: its type and first line."""
    return f"{type(exc).__name__}: {_first_line(exc)[:160]}".rstrip(": ")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # gymnasium appends "was raised from the environment creator ... with kwargs (...)": noise for a user
    return _ANSI.sub("", text[0]).split(" was raised from")[0] if text else type(exc).__name__


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """Keep the JSON-friendly part of a Gymnasium info dict (numpy scalars become numbers)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[str(key)] = value
    return out


register_env(
    "gym:",
    make_gym,
    summary="Any installed Gymnasium environment, e.g. gym:FrozenLake-v1; MiniGrid and BabyAI ids with the [envs] extra.",
    default_max_steps=200,
    examples=("gym:FrozenLake-v1", "gym:Taxi-v4", "gym:CliffWalking-v1", "gym:BabyAI-GoToRedBall-v0"),
    action_summary=GymAdapter.action_summary,
    options_help="Passed to gymnasium.make(id, **options).",
    member="a Gymnasium id",
)
