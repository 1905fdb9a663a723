"""TextWorldExpress text games as studio environments: ``twx:coin``, ``twx:cookingworld``, ``twx:twc``, ...

Needs the ``textworld-express`` package (the ``[envs]`` extra) and Java (it runs its games in a JVM;
``apt-get install default-jre-headless``). What a language agent gets: the game's task description as
the instruction, its observation text, and the valid actions of every state.

The expert follows the game's gold path from the reset (and refuses once an episode has left it).

Snapshots are the actions taken since the reset: the library keeps its games inside the JVM and
offers no way to copy one (its own ``serialize`` is the same action list), so a fork replays them
from the seed. Its games are deterministic and a step takes a few milliseconds, so a fork 50 steps
deep costs about a tenth of a second.

Each environment holds one game in a JVM; JVMs are kept in a small per-process pool and reused when
an environment is closed or dropped, because starting one takes a third of a second.
"""

from __future__ import annotations

import textwrap
import threading
import weakref
from typing import Any

import cv2
import numpy as np

from studio.envs.base import OptionSpec, StudioEnv
from studio.envs.registry import register_env
from studio.errors import BadOption, StudioError, UnknownEnvironment

GAMES = ("coin", "cookingworld", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")
FOLDS = ("train", "dev", "test")
MAX_SNAPSHOT_ACTIONS = 10_000
INSTALL = "pip install 'agent-studio[envs]' (or pip install textworld-express)"


class _JvmPool:
    """Started TextWorldExpress JVMs that no environment uses now (a cache of processes, not of
    anyone's state: a game is reset before it is handed out again)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            from textworld_express import TextWorldExpressEnv
        except ImportError:
            raise UnknownEnvironment(f"twx: environments need the textworld-express package: {INSTALL}.") from None
        try:
            return TextWorldExpressEnv(envStepLimit=10_000)  # the studio's runner applies the step limit
        except Exception as exc:  # no java on PATH (OSError), a JVM that does not start
            raise UnknownEnvironment(
                f"twx: environments run in Java, which did not start here ({type(exc).__name__}): "
                "install it with apt-get install default-jre-headless."
            ) from None

    def release(self, game: Any) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(game)
                return
        game.close()


#: The process's idle JVMs.
JVMS = _JvmPool()


class TextWorldExpress(StudioEnv):
    """A TextWorldExpress game: text observations and the valid actions of every state."""

    action_summary = "finite, per state: the game's valid actions (take coin, open door to east, ...)"
    actions_depend_on_state = True
    default_max_steps = 100
    fork_mode = "replay"
    fork_note = "the game lives in a JVM that cannot copy it: forks replay the actions from the seed"
    option_specs = (
        OptionSpec("params", str, "", "The game's parameters, e.g. numLocations=5,includeDoors=1 (empty: defaults)."),
        OptionSpec("fold", str, "train", "Which seeds' games: train, dev or test.", choices=FOLDS),
    )

    def __init__(self, game: str, **options: Any) -> None:
        if game not in GAMES:
            raise UnknownEnvironment(f"Unknown TextWorldExpress game '{game[:40]}'. Known: {', '.join(GAMES)}.")
        self.name = f"twx:{game}"  # type: ignore[misc]  # per-instance name
        super().__init__(**options)
        if len(self.options["params"]) > 500 or not all(c.isalnum() or c in "=,_-. " for c in self.options["params"]):
            raise BadOption(
                "Option 'params' is name=value pairs separated by commas, e.g. numLocations=5,includeDoors=1."
            )
        self.game = game
        self._game = JVMS.acquire()
        # Back to the pool when this environment is closed or goes away, whichever comes first (once).
        self._release = weakref.finalize(self, JVMS.release, self._game)
        self.actions_taken: list[str] = []
        self._valid: list[str] = []
        self._gold: list[str] = []

    def _load(self, seed: int) -> tuple[str, dict[str, Any]]:
        try:
            observation, info = self._game.reset(
                seed=seed,
                gameFold=self.options["fold"],
                gameName=self.game,
                gameParams=self.options["params"],
                generateGoldPath=True,
            )
            self._gold = [str(a) for a in self._game.getGoldActionSequence()]
        except Exception as exc:  # the JVM refuses a parameter or a seed outside the fold
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadOption(f"twx:{self.game} cannot start this game: {message[:200]}") from None
        self.actions_taken = []
        self._remember(info)
        return observation, info

    def _remember(self, info: dict[str, Any]) -> None:
        self._valid = sorted(str(a) for a in info.get("validActions", []))  # a stable order for prompts and tests

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        observation, info = self._load(seed)
        self.instruction = str(info.get("taskDescription", "")).strip() or f"Play {self.game}."
        return observation.strip(), {"success": False}

    def valid_actions(self) -> list[str]:
        return list(self._valid)

    def expert_action(self) -> str:
        """The game's gold path: the expert follows it from the reset. Off it (after another action, or in
        a fork that left it) there is no plan, and it says so."""
        taken = len(self.actions_taken)
        if self.actions_taken != self._gold[:taken] or taken >= len(self._gold):
            raise StudioError(
                f"{self.name}'s expert only follows the game's gold path from the start, and this episode left it."
            )
        return self._gold[taken]

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return "The game is over.", 0.0, True, False, {"success": False}
        observation, reward, done, info = self._game.step(action)
        self.actions_taken.append(action)
        self._remember(info)
        success, failure = bool(info.get("tasksuccess")), bool(info.get("taskfailure"))
        self.done = bool(done or success or failure)
        details = {"success": success, "task_failure": failure, "score": float(info.get("score", 0.0))}
        return observation.strip(), float(reward), self.done, False, details

    def _render_frame(self) -> np.ndarray:
        """A text game draws no picture: a card with the game's name and the last observation."""
        frame = np.full((240, 320, 3), 250, dtype=np.uint8)
        cv2.putText(frame, self.name, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (30, 64, 175), 1, cv2.LINE_AA)
        for row, line in enumerate(textwrap.wrap(self.last_observation, 48)[:11]):
            cv2.putText(frame, line, (10, 50 + 17 * row), cv2.FONT_HERSHEY_PLAIN, 0.9, (40, 40, 40), 1, cv2.LINE_AA)
        return frame

    def _get_state(self) -> dict[str, Any]:
        return {"actions": list(self.actions_taken)}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Replay the snapshot's actions from its seed (the library cannot copy a game)."""
        actions, seed = state.get("actions"), state.get("seed")
        if not isinstance(actions, list) or len(actions) > MAX_SNAPSHOT_ACTIONS:
            raise BadOption(f"This snapshot of {self.name} cannot be restored: its actions are not a list.")
        if not all(isinstance(a, str) and 0 < len(a) <= 500 for a in actions):
            raise BadOption(f"This snapshot of {self.name} cannot be restored: an action is not a short text.")
        observation, _info = self._load(seed if isinstance(seed, int) else 0)
        self.done = False
        for action in actions:
            if not self.validate_action(action).valid:
                raise BadOption(
                    f"This snapshot of {self.name} cannot be restored: '{action[:40]}' was not a valid action."
                )
            observation, *_ = self._step(action)
        self.last_observation = observation

    def close(self) -> None:
        """Hand the JVM back to the pool now (it is also handed back when the environment is dropped)."""
        self._release()


register_env(
    "twx:",
    TextWorldExpress,
    summary="TextWorldExpress text games (the [envs] extra and Java), e.g. twx:coin, twx:cookingworld, twx:twc.",
    default_max_steps=100,
    examples=("twx:coin", "twx:cookingworld", "twx:twc"),
    member="a TextWorldExpress game",
)
