"""Run any installed Gymnasium environment with a Discrete action space as a studio environment.

``gym:<id>`` (e.g. ``gym:FrozenLake-v1``) makes the environment with ``render_mode="rgb_array"``
and adds what a language agent needs: named actions (a table for common environments,
``get_action_meanings()`` where the environment has it, else ``action 0``...), a text
observation (from the environment's ``ansi`` render when it has one, else a formatter),
and snapshots.

Snapshots hold the environment attributes that differ from a freshly made instance,
pickled; they are unpickled with a whitelist of plain and numpy types only, because a
snapshot may come from an episode file the user did not write.
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import re
from typing import Any

# pygame (used by the toy-text renderers) must not look for a display or a sound card, and
# must not take over SIGINT/SIGTERM: SDL installs its own handlers when it starts, after which
# `docker stop` or systemd could no longer stop the server.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ["SDL_NO_SIGNAL_HANDLERS"] = "1"

import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from studio.envs.base import StudioEnv  # noqa: E402
from studio.errors import BadOption, UnknownEnvironment  # noqa: E402

#: Action names of well-known environments, by the id's name part (no version).
ACTION_NAMES: dict[str, list[str]] = {
    "FrozenLake": ["left", "down", "right", "up"],
    "FrozenLake8x8": ["left", "down", "right", "up"],
    "CliffWalking": ["up", "right", "down", "left"],
    "Taxi": ["south", "north", "east", "west", "pickup", "dropoff"],
    "Blackjack": ["stick", "hit"],
    "CartPole": ["push left", "push right"],
    "MountainCar": ["accelerate left", "no acceleration", "accelerate right"],
    "Acrobot": ["torque -1", "torque 0", "torque +1"],
}
#: A one-sentence task for well-known environments.
TASKS: dict[str, str] = {
    "FrozenLake": "Walk from the start S to the goal G across the frozen lake without falling into a hole H; the ice may be slippery.",
    "FrozenLake8x8": "Walk from the start S to the goal G across the frozen lake without falling into a hole H; the ice may be slippery.",
    "CliffWalking": "Walk from the bottom-left corner to the bottom-right goal without stepping off the cliff C.",
    "Taxi": "Drive the taxi to the passenger, pick them up, drive to the destination and drop them off.",
    "Blackjack": "Beat the dealer: get a hand closer to 21 than the dealer's without going over.",
    "CartPole": "Keep the pole balanced upright on the cart for as long as possible.",
    "MountainCar": "Drive the car up to the flag on the right hill, building momentum by rocking back and forth.",
    "Acrobot": "Swing the end of the two-link arm above the line.",
}
#: Names of the observation vector entries of classic-control environments.
OBSERVATION_FIELDS: dict[str, list[str]] = {
    "CartPole": ["cart position", "cart velocity", "pole angle", "pole angular velocity"],
    "MountainCar": ["position", "velocity"],
    "Acrobot": ["cos theta1", "sin theta1", "cos theta2", "sin theta2", "angular velocity 1", "angular velocity 2"],
}

_HIGHLIGHT = re.compile(r"\x1b\[4\dm(.)\x1b\[0m")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: Classes a snapshot may contain (module, name); anything else is refused on unpickling.
_SAFE_CLASSES = {
    ("builtins", name) for name in ("int", "float", "complex", "bool", "str", "bytes", "tuple", "list", "dict", "set", "frozenset", "slice", "range")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("collections", "OrderedDict"),
} | {("numpy.random._" + module, name) for module, name in (("pcg64", "PCG64"), ("pcg64", "PCG64DXSM"), ("mt19937", "MT19937"), ("philox", "Philox"), ("sfc64", "SFC64"), ("generator", "Generator"))}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_CLASSES or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"snapshot refers to {module}.{name}, which is not allowed")


def _dump(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")


def _load(data: str) -> Any:
    return _SafeUnpickler(io.BytesIO(base64.b64decode(data))).load()


def _picklable(value: Any) -> bytes | None:
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:  # render caches (pygame surfaces, clocks) cannot be pickled; they are not state
        return None


class GymAdapter(StudioEnv):
    """A Gymnasium environment with a Discrete action space, seen through text."""

    action_summary = "finite: the environment's named Discrete actions"
    option_specs = ()

    def __init__(self, gym_id: str, **options: Any) -> None:
        self.name = f"gym:{gym_id}"  # type: ignore[misc]  # per-instance name
        super().__init__()
        self.gym_id = gym_id
        try:
            self.env = gym.make(gym_id, render_mode="rgb_array", **options)
        except gym.error.Error as exc:
            raise UnknownEnvironment(f"Gymnasium could not make '{gym_id}': {_first_line(exc)}") from None
        except TypeError as exc:
            raise BadOption(f"Bad option for gym:{gym_id}: {_first_line(exc)}") from None
        except ImportError as exc:
            raise UnknownEnvironment(f"gym:{gym_id} needs a package that is not installed: {_first_line(exc)}") from None
        if not isinstance(self.env.action_space, spaces.Discrete):
            raise UnknownEnvironment(
                f"gym:{gym_id} has a {type(self.env.action_space).__name__} action space; only Discrete action spaces are supported."
            )
        self.options = dict(options)
        self.short_name = gym_id.split("/")[-1].split("-v")[0]
        self.action_names = self._action_names()
        self._baseline = self._attribute_pickles()
        self.raw_observation: Any = None
        self.done = False
        self.seed_used: int | None = None

    # -- naming -------------------------------------------------------------------------
    def _action_names(self) -> list[str]:
        count = int(self.env.action_space.n)
        names = ACTION_NAMES.get(self.short_name)
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
        if body is None:
            body = self._format(self.raw_observation)
        return f"{message}\n{body}".strip()

    def _format(self, observation: Any) -> str:
        fields = OBSERVATION_FIELDS.get(self.short_name)
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
        task = TASKS.get(self.short_name, f"Act well in the Gymnasium environment {self.gym_id}.")
        self.instruction = f"{task} Choose one action per turn from: {', '.join(self.action_names)}."
        return self._text("You look around."), {"success": False, **_jsonable(info)}

    def valid_actions(self) -> list[str]:
        return list(self.action_names)

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The episode is over.", 0.0, True, False, {"success": False}
        self.raw_observation, reward, terminated, truncated, info = self.env.step(self.action_names.index(action))
        self.done = bool(terminated or truncated)
        success = bool(info.get("success", terminated and reward > 0))
        return self._text(f"You chose {action}."), float(reward), bool(terminated), bool(truncated), {**_jsonable(info), "success": success}

    def _render_frame(self) -> np.ndarray:
        frame = self.env.render()
        if isinstance(frame, np.ndarray) and frame.ndim == 3:
            return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        blank = np.full((240, 320, 3), 245, dtype=np.uint8)  # the env draws nothing: say so
        cv2.putText(blank, "no frame", (110, 125), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (90, 90, 90), 1, cv2.LINE_AA)
        return blank

    # -- snapshots ------------------------------------------------------------------------
    def _attribute_pickles(self) -> dict[str, bytes | None]:
        # Spaces and the spec describe the environment, they are not its state.
        return {
            name: _picklable(value)
            for name, value in vars(self.env.unwrapped).items()
            if not isinstance(value, (spaces.Space, gym.envs.registration.EnvSpec))
        }

    def _wrappers(self) -> list[gym.Env]:
        chain, env = [], self.env
        while isinstance(env, gym.Wrapper):
            chain.append(env)
            env = env.env
        return chain

    def get_state(self) -> dict[str, Any]:
        current = self._attribute_pickles()
        changed = {
            name: base64.b64encode(data).decode("ascii")
            for name, data in current.items()
            if data is not None and data != self._baseline.get(name)
        }
        counters = [getattr(w, "_elapsed_steps", None) for w in self._wrappers()]
        return {
            "seed": self.seed_used,
            "attributes": changed,
            "elapsed_steps": counters,
            "raw_observation": _dump(self.raw_observation),
            "done": self.done,
            "instruction": self.instruction,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        unwrapped = self.env.unwrapped
        try:
            restored = {name: _load(data) for name, data in state["attributes"].items()}
            raw_observation = _load(state["raw_observation"])
        except (pickle.UnpicklingError, ValueError, EOFError) as exc:
            raise BadOption(f"This snapshot of {self.name} cannot be restored: {exc}.") from None
        for name, data in self._baseline.items():  # attributes not in the snapshot are as when made
            if data is not None and name not in restored:
                setattr(unwrapped, name, pickle.loads(data))  # our own pickles, made in this process
        for name, value in restored.items():
            setattr(unwrapped, name, value)
        for wrapper, counter in zip(self._wrappers(), state["elapsed_steps"]):
            if counter is not None:
                wrapper._elapsed_steps = counter
            if hasattr(wrapper, "_has_reset"):
                wrapper._has_reset = True
        self.seed_used = state["seed"]
        self.raw_observation = raw_observation
        self.done, self.instruction = state["done"], state["instruction"]

    def close(self) -> None:
        self.env.close()


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
