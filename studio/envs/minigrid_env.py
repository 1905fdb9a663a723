"""MiniGrid and BabyAI as studio environments (``gym:MiniGrid-Empty-5x5-v0``, ``gym:BabyAI-GoToRedBall-v0``).

Needs the ``minigrid`` package (the ``[envs]`` extra); the ``gym:`` family imports it when such an
id is first made. What a language agent gets:

- the mission as the instruction, with the map's legend;
- a text observation: the whole grid as a map of two-character cells (``full``, the default; the
  attention view projects onto its cells) or BabyAI-Text-style sentences about what the agent
  sees (``sentences``), chosen with the ``view`` option; both end with what is in front of the
  agent and what it carries;
- named actions: turn left, turn right, go forward, pick up, drop, toggle, done;
- frames from MiniGrid's own renderer (the agent's field of view highlighted);
- snapshots of MiniGrid's own state objects (grid, agent, carried object, BabyAI's instruction
  verifiers), pickled, and unpickled with a whitelist of MiniGrid's data classes, so a fork starts
  from the exact state without replaying;
- for BabyAI levels, the expert is BabyAI's own bot (``BabyAIBot``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import pickle
from typing import Any


from studio.envs.base import map_cells
from studio.envs.gym_adapter import GymAdapter
from studio.envs.snapshots import EnvPickler, MiniGridUnpickler, checked_counters, snapshot_bytes
from studio.errors import BadOption, StudioError

#: MiniGrid's actions (``minigrid.core.actions.Actions`` order), named as a person would say them.
ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
#: A cell of the map is two characters: a kind, then a colour (or the kind twice).
KIND_CODES = {"key": "k", "ball": "b", "box": "x"}
COLOUR_CODES = {"red": "R", "green": "G", "blue": "B", "purple": "P", "yellow": "Y", "grey": "E"}
DOOR_CODES = {0: "/", 1: "D", 2: "L"}  # open, closed, locked
PLAIN_CELLS = {"wall": "##", "floor": "..", "goal": "GG", "lava": "~~"}
FACING = (">>", "vv", "<<", "^^")  # agent_dir 0..3: east, south, west, north
FACING_WORDS = ("east", "south", "west", "north")
MAP_SYMBOLS = frozenset("#.~G>v<^/DLkbx" + "".join(COLOUR_CODES.values()))
LEGEND = (
    "Each map cell is two characters: ## wall, .. floor, >> vv << ^^ you (facing east, south, west, north), "
    "GG goal, ~~ lava; an object is its kind then its colour: k key, b ball, x box, / open door, D closed door, "
    "L locked door; R red, G green, B blue, P purple, Y yellow, E grey. East is right, north is up."
)
VIEWS = ("full", "sentences")
#: Attributes of a MiniGrid environment that are its set-up or its renderer, never its state.
_NOT_STATE = frozenset(
    {
        "action_space",
        "observation_space",
        "spec",
        "metadata",
        "render_mode",
        "reward_range",
        "actions",
        "window",
        "clock",
        "surface",
        "screen_size",
        "render_size",
        "tile_size",
        "highlight",
        "agent_pov",
        "_np_random_seed",
    }
)


class MiniGridEnv(GymAdapter):
    """A MiniGrid environment seen as a map with a legend (or sentences), with named actions."""

    action_summary = "finite: " + ", ".join(ACTIONS)

    def __init__(self, gym_id: str, view: str = "full", **options: Any) -> None:
        if view not in VIEWS:
            raise BadOption(f"Option 'view' must be one of {', '.join(VIEWS)}, got {str(view)[:40]!r}.")
        super().__init__(gym_id, **options)
        self.view = view
        self.options = {"view": view, **options}

    def _attribute_pickles(self) -> dict[str, bytes | None]:
        return {}  # snapshots pickle MiniGrid's state as a whole (see _exact_state), not attribute by attribute

    # -- naming and text ------------------------------------------------------------------
    def _action_names(self) -> list[str]:
        return list(ACTIONS)

    @property
    def grid_env(self) -> Any:
        return self.env.unwrapped

    def _cell_text(self, cell: Any) -> str:
        if cell is None:
            return ".."
        if cell.type in PLAIN_CELLS:
            return PLAIN_CELLS[cell.type]
        colour = COLOUR_CODES.get(cell.color, "?")
        if cell.type == "door":
            return DOOR_CODES[2 if cell.is_locked else 0 if cell.is_open else 1] + colour
        return KIND_CODES.get(cell.type, "?") + colour

    def map_lines(self) -> list[str]:
        """The whole grid, one line per row, two characters per cell (the agent drawn over its cell)."""
        env = self.grid_env
        ax, ay = (int(v) for v in env.agent_pos)
        return [
            "".join(
                FACING[env.agent_dir] if (x, y) == (ax, ay) else self._cell_text(env.grid.get(x, y))
                for x in range(env.width)
            )
            for y in range(env.height)
        ]

    @staticmethod
    def _what(obj: Any) -> str:
        """An object (or an empty cell) in words: ``a locked yellow door``, ``the goal``, ``nothing``."""
        if obj is None:
            return "nothing"
        if obj.type in ("goal", "lava"):
            return f"the {obj.type}"
        if obj.type == "door":
            state = "locked" if obj.is_locked else "open" if obj.is_open else "closed"
            return f"a {state} {obj.color} door"
        return "a wall" if obj.type == "wall" else f"a {obj.color} {obj.type}"

    def sentences(self) -> list[str]:
        """What the agent sees, BabyAI-Text style: each visible object and the nearest walls ahead and
        to the sides, as steps forward and left/right of the agent."""
        env = self.grid_env
        grid, visible = env.gen_obs_grid()
        size, half = grid.width, grid.width // 2
        seen: list[tuple[int, str]] = []
        walls: dict[str, int] = {}
        for j in range(size):
            for i in range(size):
                cell = grid.get(i, j)
                forward, right = size - 1 - j, i - half
                if cell is None or not visible[i, j] or (forward, right) == (0, 0):
                    continue
                if cell.type == "wall":
                    side = "forward" if right == 0 else ("left" if right < 0 else "right") if forward == 0 else None
                    if side is not None:
                        distance = forward if side == "forward" else abs(right)
                        walls[side] = min(walls.get(side, distance), distance)
                    continue
                parts = []
                if forward:
                    parts.append(f"{forward} step{'s' * (forward > 1)} forward")
                if right:
                    parts.append(f"{abs(right)} step{'s' * (abs(right) > 1)} {'right' if right > 0 else 'left'}")
                seen.append((forward + abs(right), f"{self._what(cell)} {' and '.join(parts)}"))
        lines = [text for _distance, text in sorted(seen)]
        lines += [f"a wall {d} step{'s' * (d > 1)} {side}" for side, d in sorted(walls.items())]
        return ["You see " + line + "." for line in lines] or ["You see nothing but floor."]

    def _status(self) -> str:
        env = self.grid_env
        front = env.grid.get(*(int(v) for v in env.front_pos)) if self._in_grid(env.front_pos) else None
        return (
            f"You face {FACING_WORDS[env.agent_dir]}; in front of you: {self._what(front)}. "
            f"You carry {self._what(env.carrying)}."
        )

    def _in_grid(self, position: Any) -> bool:
        x, y = (int(v) for v in position)
        return 0 <= x < self.grid_env.width and 0 <= y < self.grid_env.height

    def _text(self, message: str) -> str:
        body = self.map_lines() if self.view == "full" else self.sentences()
        return "\n".join([message, *body, self._status()]).strip()

    # -- Gymnasium API ----------------------------------------------------------------------
    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        with contextlib.redirect_stdout(io.StringIO()):  # BabyAI's level generator prints its retries
            observation, info = super()._reset(seed, options)
        mission = str(self.grid_env.mission)
        legend = f" {LEGEND}" if self.view == "full" else ""
        self.instruction = f"Mission: {mission}. Choose one action per turn from: {', '.join(ACTIONS)}.{legend}"
        return observation, info

    # -- attention onto the frame ------------------------------------------------------------
    def text_cells(self, observation: str) -> list[tuple[int, int, int]]:
        """The map is the run of ``height`` lines of ``2 * width`` map symbols; each cell's two characters."""
        if self.view != "full":
            return []
        env = self.grid_env
        return map_cells(observation, env.height, 2 * env.width, MAP_SYMBOLS, per_cell=2)

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        tile = int(self.grid_env.tile_size)
        return column * tile, row * tile, (column + 1) * tile, (row + 1) * tile

    def agent_xy(self, state: dict[str, Any]) -> tuple[float, float] | None:
        position = state.get("agent") if isinstance(state, dict) else None
        if not (isinstance(position, list) and len(position) == 2 and all(isinstance(v, int) for v in position)):
            return None
        tile = int(self.grid_env.tile_size)
        return (position[0] + 0.5) * tile, (position[1] + 0.5) * tile

    def probe_targets(self) -> dict[str, float | int | str]:
        """The agent's column, row and direction (0 east, 1 south, 2 west, 3 north)."""
        x, y = (int(v) for v in self.grid_env.agent_pos)
        return {"agent_x": x, "agent_y": y, "agent_dir": int(self.grid_env.agent_dir)}

    # -- snapshots ----------------------------------------------------------------------------
    def _state_attributes(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self.grid_env).items() if name not in _NOT_STATE}

    def _exact_state(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        EnvPickler(buffer, self.grid_env).dump(self._state_attributes())
        return {
            "minigrid": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "elapsed_steps": self._counters(),
            "agent": [int(v) for v in self.grid_env.agent_pos],  # for path plots, read without unpickling
        }

    def _restore_exact(self, state: dict[str, Any]) -> None:
        try:
            counters = checked_counters(state["elapsed_steps"])
            restored = MiniGridUnpickler(snapshot_bytes(state["minigrid"]), self.grid_env).load()
            self._check_restored(restored)
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, EOFError, AttributeError, IndexError) as exc:
            raise BadOption(
                f"This snapshot of {self.name} cannot be restored: {str(exc).rstrip('.') or type(exc).__name__}."
            ) from None
        for name, value in restored.items():
            setattr(self.grid_env, name, value)
        self._set_counters(counters)
        self.raw_observation = self.grid_env.gen_obs()
        self._restored()

    def _check_restored(self, restored: Any) -> None:
        """A snapshot must hold this environment's own kind of state: the same attributes, a grid of
        this size made of world objects, the agent inside it."""
        from minigrid.core.grid import Grid
        from minigrid.core.world_object import WorldObj

        env = self.grid_env
        if not isinstance(restored, dict) or set(restored) != set(self._state_attributes()):
            raise ValueError("its fields are not this environment's")
        for name in restored:
            self._check_attribute(name)
        grid = restored.get("grid")
        if not isinstance(grid, Grid) or (grid.width, grid.height) != (env.width, env.height):
            raise ValueError("its grid is not this environment's size")
        cells = grid.grid
        if not isinstance(cells, list) or len(cells) != env.width * env.height:
            raise ValueError("its grid has the wrong number of cells")
        for cell in [*cells, restored.get("carrying")]:
            if cell is not None and (
                not isinstance(cell, WorldObj) or cell.type not in ACCEPTED_TYPES or cell.color not in COLOUR_CODES
            ):
                raise ValueError("its grid holds something that is not a MiniGrid object")
        x, y = (int(v) for v in restored.get("agent_pos", (-1, -1)))
        if not (0 <= x < env.width and 0 <= y < env.height) or restored.get("agent_dir") not in range(4):
            raise ValueError("its agent is outside the grid")

    def _restored(self) -> None:
        """After a snapshot was restored (subclasses drop what they planned)."""


#: World object kinds MiniGrid draws.
ACCEPTED_TYPES = frozenset({"wall", "floor", "door", "key", "ball", "box", "goal", "lava"})


class BabyAIEnv(MiniGridEnv):
    """A BabyAI level: a MiniGrid environment whose mission is a language instruction, with BabyAI's bot as the expert."""

    def __init__(self, gym_id: str, view: str = "full", **options: Any) -> None:
        super().__init__(gym_id, view=view, **options)
        self._bot: Any = None
        self._unseen: list[int] = []  # actions taken since the bot last planned
        self._suggested: str | None = None

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        observation, info = super()._reset(seed, options)
        self._restored()
        return observation, info

    def _restored(self) -> None:
        self._bot, self._unseen, self._suggested = None, [], None

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._unseen.append(ACTIONS.index(action))
        return super()._step(action)

    def expert_action(self) -> str:
        """BabyAI's bot's next action. The bot keeps a plan and a map of what it has seen; it follows the
        episode when it is asked every step, and is made afresh (planning from the current state) when
        steps went by without it, after a reset or after a snapshot was restored."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        if self._bot is not None and not self._unseen and self._suggested is not None:
            return self._suggested  # asked twice for the same state
        try:
            if self._bot is not None and len(self._unseen) == 1:
                choice = self._bot.replan(self._unseen[0])
            else:
                self._bot = BabyAIBot(self.env)
                choice = self._bot.replan()
        except Exception as exc:  # the bot asserts on states it never plans for (a box the agent opened, ...)
            self._bot = None
            raise StudioError(f"BabyAI's bot cannot plan from this state: {exc or type(exc).__name__}") from None
        self._unseen = []
        self._suggested = ACTIONS[int(choice)]
        return self._suggested
