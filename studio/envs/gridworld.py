"""Gridworld: walk to the goal; on medium and hard a locked door, opened with a key, is in the way.

The layout is generated from the seed and always solvable. The text observation is an
ASCII map plus position and inventory; the frame is drawn with OpenCV. The expert is a
breadth-first planner over (position, key, door) states, re-planned from whatever state
the environment is in, so it also works after a fork.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import cv2
import numpy as np

from studio.envs.base import OptionSpec, StudioEnv, map_cells
from studio.envs.registry import register_env

MOVES: dict[str, tuple[int, int]] = {
    "go north": (-1, 0),
    "go south": (1, 0),
    "go east": (0, 1),
    "go west": (0, -1),
}
PICK_UP = "pick up key"
OPEN_DOOR = "open door"

WALL, FLOOR = "#", "."
LEGEND = "@ you, G goal, K key, D locked door, / open door, # wall, . floor"

#: RGB colours of the frame.
COLOURS = {
    "floor": (236, 236, 232),
    "wall": (64, 66, 80),
    "grid": (205, 205, 200),
    "goal": (76, 175, 96),
    "key": (232, 186, 36),
    "door_locked": (139, 84, 38),
    "door_open": (214, 178, 132),
    "agent": (214, 55, 62),
}
CELL_PX = 40
WALL_DENSITY = {"easy": 0.08, "medium": 0.12, "hard": 0.22}

Cell = tuple[int, int]


class GridWorld(StudioEnv):
    """Navigation with walls, a key, a locked door and a goal."""

    name = "gridworld"
    action_summary = "finite: go north, go south, go east, go west, pick up key, open door (easy: moves only)"
    option_specs = (
        OptionSpec("size", int, 7, "Side of the square grid, walls included.", minimum=5, maximum=15),
        OptionSpec(
            "difficulty",
            str,
            "medium",
            "easy: walls only; medium: a key and a locked door; hard: the same with more walls.",
            choices=("easy", "medium", "hard"),
        ),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.size: int = self.options["size"]
        self.difficulty: str = self.options["difficulty"]
        self.has_door = self.difficulty != "easy"
        self._actions = list(MOVES) + ([PICK_UP, OPEN_DOOR] if self.has_door else [])
        self.walls: list[str] = []
        self.goal: Cell = (0, 0)
        self.agent: Cell = (0, 0)
        self.key: Cell | None = None
        self.door: Cell | None = None
        self.door_open = False
        self.has_key = False
        self.done = False
        self.seed_used = 0

    # -- generation -----------------------------------------------------------------
    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.seed_used = seed
        self._generate(np.random.default_rng(seed))
        door_text = (
            " The door D is locked: pick up the key K, then open the door from a cell next to it."
            if self.has_door
            else ""
        )
        self.instruction = (
            f"You are @ in a {self.size}x{self.size} grid. Reach the goal G.{door_text} "
            f"Moves: go north (up), go south (down), go east (right), go west (left). Legend: {LEGEND}."
        )
        return self._observation("You look around."), {"success": False}

    def _generate(self, rng: np.random.Generator) -> None:
        density = WALL_DENSITY[self.difficulty]
        for _attempt in range(200):
            self._layout(rng, density)
            if self._plan() is not None:
                return
        self._layout(rng, 0.0)  # no random walls: always solvable

    def _layout(self, rng: np.random.Generator, density: float) -> None:
        n = self.size
        grid = [[WALL if r in (0, n - 1) or c in (0, n - 1) else FLOOR for c in range(n)] for r in range(n)]
        interior = list(range(1, n - 1))
        self.door, self.key, self.door_open, self.has_key, self.done = None, None, False, False, False
        if self.has_door:
            divider = int(rng.integers(2, n - 2))
            for r in interior:
                grid[r][divider] = WALL
            self.door = (int(rng.choice(interior)), divider)
            grid[self.door[0]][divider] = FLOOR  # passable once opened
            left = [(r, c) for r in interior for c in range(1, divider)]
            right = [(r, c) for r in interior for c in range(divider + 1, n - 1)]
            picks = rng.choice(len(left), size=2, replace=False)
            self.agent, self.key = left[picks[0]], left[picks[1]]
            self.goal = right[int(rng.integers(len(right)))]
        else:
            cells = [(r, c) for r in interior for c in interior]
            picks = rng.choice(len(cells), size=2, replace=False)
            self.agent, self.goal = cells[picks[0]], cells[picks[1]]
        keep = {self.agent, self.goal, self.key, self.door}
        if self.door is not None:  # keep both sides of the door walkable
            keep |= {(self.door[0], self.door[1] - 1), (self.door[0], self.door[1] + 1)}
        for r in interior:
            for c in interior:
                if grid[r][c] == FLOOR and (r, c) not in keep and rng.random() < density:
                    grid[r][c] = WALL
        self.walls = ["".join(row) for row in grid]

    # -- dynamics -------------------------------------------------------------------
    def valid_actions(self) -> list[str]:
        return list(self._actions)

    def _passable(self, cell: Cell, door_open: bool) -> bool:
        r, c = cell
        if not (0 <= r < self.size and 0 <= c < self.size) or self.walls[r][c] == WALL:
            return False
        return cell != self.door or door_open

    def _next_door(self, cell: Cell) -> bool:
        return self.door is not None and abs(cell[0] - self.door[0]) + abs(cell[1] - self.door[1]) == 1

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.done:
            return self._observation("The episode is over."), 0.0, True, False, {"success": True}
        if action in MOVES:
            dr, dc = MOVES[action]
            target = (self.agent[0] + dr, self.agent[1] + dc)
            if self._passable(target, self.door_open):
                self.agent = target
                message = f"You move {action[3:]}."
            elif target == self.door:
                message = "The door is locked."
            else:
                message = "You bump into a wall."
        elif action == PICK_UP:
            if self.key is not None and self.agent == self.key:
                self.key, self.has_key = None, True
                message = "You pick up the key."
            else:
                message = "There is no key here."
        else:  # OPEN_DOOR
            if not self._next_door(self.agent):
                message = "There is no door next to you."
            elif self.door_open:
                message = "The door is already open."
            elif not self.has_key:
                message = "The door is locked and you have no key."
            else:
                self.door_open = True
                message = "You unlock the door with the key. It is open."
        if self.agent == self.goal:
            self.done = True
            return self._observation("You reach the goal!"), 1.0, True, False, {"success": True}
        return self._observation(message), 0.0, False, False, {"success": False}

    def _observation(self, message: str) -> str:
        rows = [list(row) for row in self.walls]
        gr, gc = self.goal
        rows[gr][gc] = "G"
        if self.key is not None:
            rows[self.key[0]][self.key[1]] = "K"
        if self.door is not None:
            rows[self.door[0]][self.door[1]] = "/" if self.door_open else "D"
        rows[self.agent[0]][self.agent[1]] = "@"
        inventory = "key" if self.has_key else "empty"
        door = ""
        if self.door is not None:
            door = " The door is open." if self.door_open else " The door is locked."
        return (
            f"{message}\n"
            + "\n".join("".join(r) for r in rows)
            + f"\nYou are at row {self.agent[0]}, column {self.agent[1]}. Inventory: {inventory}.{door}"
        )

    # -- expert -----------------------------------------------------------------------
    def _plan(self) -> list[str] | None:
        """Shortest action sequence to the goal from the current state, or None if unreachable."""
        start = (self.agent, self.key is None, self.door_open)
        parents: dict[tuple[Cell, bool, bool], tuple[tuple[Cell, bool, bool], str] | None] = {start: None}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            position, key_taken, door_open = state
            if position == self.goal:
                plan: list[str] = []
                while parents[state] is not None:
                    state, action = parents[state]  # type: ignore[misc]
                    plan.append(action)
                return plan[::-1]
            successors: list[tuple[tuple[Cell, bool, bool], str]] = []
            for action, (dr, dc) in MOVES.items():
                target = (position[0] + dr, position[1] + dc)
                if self._passable(target, door_open):
                    successors.append(((target, key_taken, door_open), action))
            if self.has_door and not key_taken and position == self.key:
                successors.append(((position, True, door_open), PICK_UP))
            if self.has_door and key_taken and not door_open and self._next_door(position):
                successors.append(((position, key_taken, True), OPEN_DOOR))
            for successor, action in successors:
                if successor not in parents:
                    parents[successor] = (state, action)
                    queue.append(successor)
        return None

    def expert_action(self) -> str:
        plan = self._plan()
        return plan[0] if plan else "go north"

    def probe_targets(self) -> dict[str, float | int | str]:
        """Where the agent and the goal are, how far apart (steps of the shortest plan, -1 when none),
        whether the key is held, and the expert's next action."""
        plan = self._plan()
        return {
            "agent_row": self.agent[0],
            "agent_col": self.agent[1],
            "goal_row": self.goal[0],
            "goal_col": self.goal[1],
            "distance": len(plan) if plan is not None else -1,
            "key_held": int(self.has_key),
            "expert_action": plan[0] if plan else "none",
        }

    # -- snapshots ----------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "walls": list(self.walls),
            "goal": list(self.goal),
            "agent": list(self.agent),
            "key": list(self.key) if self.key is not None else None,
            "door": list(self.door) if self.door is not None else None,
            "door_open": self.door_open,
            "has_key": self.has_key,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.walls = list(state["walls"])
        self.goal = tuple(state["goal"])  # type: ignore[assignment]
        self.agent = tuple(state["agent"])  # type: ignore[assignment]
        self.key = tuple(state["key"]) if state["key"] is not None else None  # type: ignore[assignment]
        self.door = tuple(state["door"]) if state["door"] is not None else None  # type: ignore[assignment]
        self.door_open = state["door_open"]
        self.has_key = state["has_key"]
        self.last_observation = self._observation("You look around.")

    # -- frame -------------------------------------------------------------------------
    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of a grid cell in the frame (used to project attention)."""
        return column * CELL_PX, row * CELL_PX, (column + 1) * CELL_PX, (row + 1) * CELL_PX

    def text_cells(self, observation: str) -> list[tuple[int, int, int]]:
        """The grid is the first run of ``size`` lines of exactly ``size`` map symbols."""
        return map_cells(observation, self.size, self.size, set("#.@GKD/"))

    def subgoals(self) -> dict[str, bool] | None:
        """Medium and hard: key picked up, door opened, goal reached (None on easy: one goal only)."""
        if not self.has_door:
            return None
        return {
            "key picked up": self.has_key or self.door_open,
            "door opened": self.door_open,
            "goal reached": self.agent == self.goal,
        }

    def agent_xy(self, state: dict[str, Any]) -> tuple[float, float] | None:
        x0, y0, x1, y1 = self.cell_box(*state["agent"])
        return (x0 + x1) / 2, (y0 + y1) / 2

    def _render_frame(self) -> np.ndarray:
        n = self.size
        frame = np.full((n * CELL_PX, n * CELL_PX, 3), COLOURS["floor"], dtype=np.uint8)
        for r in range(n):
            for c in range(n):
                x0, y0, x1, y1 = self.cell_box(r, c)
                if self.walls[r][c] == WALL and (r, c) != self.door:
                    cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), COLOURS["wall"], thickness=-1)
                cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), COLOURS["grid"], thickness=1)
        self._fill(frame, self.goal, COLOURS["goal"], inset=3)
        if self.door is not None:
            self._fill(frame, self.door, COLOURS["door_open" if self.door_open else "door_locked"], inset=1)
            if not self.door_open:  # a keyhole
                x0, y0, x1, y1 = self.cell_box(*self.door)
                cv2.circle(frame, ((x0 + x1) // 2, (y0 + y1) // 2), CELL_PX // 8, COLOURS["key"], -1, cv2.LINE_AA)
        if self.key is not None:
            x0, y0, x1, y1 = self.cell_box(*self.key)
            cy = (y0 + y1) // 2
            cv2.circle(frame, (x0 + CELL_PX // 3, cy), CELL_PX // 6, COLOURS["key"], 3, cv2.LINE_AA)
            cv2.line(frame, (x0 + CELL_PX // 2, cy), (x1 - 6, cy), COLOURS["key"], 3, cv2.LINE_AA)
            cv2.line(frame, (x1 - 10, cy), (x1 - 10, cy + 7), COLOURS["key"], 3, cv2.LINE_AA)
        x0, y0, x1, y1 = self.cell_box(*self.agent)
        cv2.circle(frame, ((x0 + x1) // 2, (y0 + y1) // 2), CELL_PX // 3, COLOURS["agent"], -1, cv2.LINE_AA)
        if self.has_key:  # a small key badge on the agent
            cv2.circle(frame, (x1 - 9, y0 + 9), 5, COLOURS["key"], -1, cv2.LINE_AA)
        return frame

    def _fill(self, frame: np.ndarray, cell: Cell, colour: tuple[int, int, int], inset: int) -> None:
        x0, y0, x1, y1 = self.cell_box(*cell)
        cv2.rectangle(frame, (x0 + inset, y0 + inset), (x1 - 1 - inset, y1 - 1 - inset), colour, thickness=-1)


register_env(
    "gridworld", GridWorld, summary="Walk to the goal through walls; a key opens a locked door.", default_max_steps=100
)
