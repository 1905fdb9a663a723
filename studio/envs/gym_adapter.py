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
import inspect
import io
import os
import pickle
import re
import struct
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
from studio.envs.registry import register_env  # noqa: E402
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

#: Globals a snapshot may name (what gym environments' state pickles use: numpy arrays, scalars,
#: dtypes and random generators). Anything else is refused, so no snapshot can run code.
_SAFE_GLOBALS = {
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
} | {
    ("numpy.random._" + module, name)
    for module, name in (
        ("pcg64", "PCG64"),
        ("pcg64", "PCG64DXSM"),
        ("mt19937", "MT19937"),
        ("philox", "Philox"),
        ("sfc64", "SFC64"),
        ("generator", "Generator"),
    )
}
#: Of those, what a snapshot may call (REDUCE); the classes are only arguments.
_CALLABLE = {
    "_reconstruct",
    "scalar",
    "dtype",
    "__generator_ctor",
    "__bit_generator_ctor",
    "__randomstate_ctor",
    "__pyx_unpickle_SeedSequence",
}
#: Attributes that describe how the environment is set up, never its state.
_NEVER_RESTORED = frozenset({"render_mode", "spec", "metadata", "np_random", "action_space", "observation_space"})
#: Bytes of one snapshot attribute as pickled, and of any array it may create.
MAX_PICKLE_BYTES = 1_000_000
MAX_ARRAY_BYTES = 8_000_000


class _SnapshotUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked one by one
    """Unpickles a snapshot someone else may have written, refusing before it happens anything that could
    run code, change the process (a BUILD on a module-level function rewrote numpy's defaults), or
    allocate beyond a budget (``list(range(2e7))`` from 40 bytes)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._made: set[int] = set()  # objects this snapshot created: the only ones BUILD may fill

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"snapshot refers to {module}.{name}, which is not allowed")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if getattr(func, "__name__", None) not in _CALLABLE or not isinstance(args, tuple):
            raise pickle.UnpicklingError(
                f"snapshot calls {getattr(func, '__name__', type(func).__name__)}, which is not allowed"
            )
        if func.__name__ == "_reconstruct":  # ndarray.__new__(cls, shape, dtype): numpy pickles an empty (0,) shell
            if len(args) != 3 or args[0] is not np.ndarray or _elements(args[1]) > 1:
                raise pickle.UnpicklingError("snapshot builds an array in a way numpy never pickles")
        made = func(*args)
        if isinstance(made, np.dtype) and made.itemsize > MAX_ARRAY_BYTES:
            raise pickle.UnpicklingError("snapshot declares an oversized data type")
        self._made.add(id(made))
        self.stack[-1] = made

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_build(self) -> None:
        state = self.stack[-1]
        target = self.stack[-2]
        if id(target) not in self._made:
            raise pickle.UnpicklingError("snapshot tries to change an object it did not create")
        if isinstance(target, np.ndarray):  # (version, shape, dtype, fortran, data)
            if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], np.dtype):
                raise pickle.UnpicklingError("snapshot has a malformed array")
            if _elements(state[1]) * max(state[2].itemsize, 1) > MAX_ARRAY_BYTES:
                raise pickle.UnpicklingError(f"snapshot has an array of more than {MAX_ARRAY_BYTES:,} bytes")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def _refuse(self) -> None:
        raise pickle.UnpicklingError("snapshot creates objects in a way gym snapshots never do")

    for _opcode in (
        pickle.NEWOBJ,
        pickle.NEWOBJ_EX,
        pickle.OBJ,
        pickle.INST,
        pickle.EXT1,
        pickle.EXT2,
        pickle.EXT4,
        pickle.PERSID,
        pickle.BINPERSID,
    ):
        dispatch[_opcode[0]] = _refuse
    del _opcode


def _elements(shape: Any) -> int:
    """How many elements an array of ``shape`` holds (refusing what is not a shape)."""
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError("snapshot has a malformed array shape")
    return int(np.prod(shape, dtype=np.float64)) if shape else 1


def _dump(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")


def _load(data: Any) -> Any:
    if not isinstance(data, str) or len(data) > MAX_PICKLE_BYTES * 4 // 3 + 4:
        raise pickle.UnpicklingError(f"a snapshot value is not base64 text of at most {MAX_PICKLE_BYTES:,} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise pickle.UnpicklingError("a snapshot value is not base64 text") from None
    return _SnapshotUnpickler(raw).load()


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
        return (
            self._text(f"You chose {action}."),
            float(reward),
            bool(terminated),
            bool(truncated),
            {**_jsonable(info), "success": success},
        )

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

    def _get_state(self) -> dict[str, Any]:
        current = self._attribute_pickles()
        changed = {
            name: base64.b64encode(data).decode("ascii")
            for name, data in current.items()
            if data is not None and data != self._baseline.get(name)
        }
        counters = [getattr(w, "_elapsed_steps", None) for w in self._wrappers()]
        return {
            "attributes": changed,
            "elapsed_steps": counters,
            "raw_observation": _dump(self.raw_observation),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot (perhaps from someone else's file): every field is checked, the pickles go
        through :class:`_SnapshotUnpickler`, and only data attributes of this environment are set."""
        unwrapped = self.env.unwrapped
        try:
            attributes, counters = state["attributes"], state["elapsed_steps"]
            if not isinstance(attributes, dict) or not isinstance(counters, list) or len(counters) > 64:
                raise ValueError("it is not a gym snapshot")
            if not all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in counters):
                raise ValueError("its step counters are not whole numbers")
            for name in attributes:
                self._check_attribute(name)
            restored = {name: _load(data) for name, data in attributes.items()}
            raw_observation = _load(state["raw_observation"])
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
        for wrapper, counter in zip(self._wrappers(), counters):
            if counter is not None:
                wrapper._elapsed_steps = counter
            if hasattr(wrapper, "_has_reset"):
                wrapper._has_reset = True
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
    GymAdapter,
    summary="Any installed Gymnasium environment with a Discrete action space, e.g. gym:FrozenLake-v1.",
    default_max_steps=200,
    examples=("gym:FrozenLake-v1", "gym:Taxi-v4", "gym:CliffWalking-v1"),
    options_help="Passed to gymnasium.make(id, **options).",
    member="a Gymnasium id",
)
