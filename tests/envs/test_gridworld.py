"""Gridworld rules, text map and frame."""

from __future__ import annotations

import numpy as np

from studio.envs.gridworld import CELL_PX, COLOURS, GridWorld


def medium_world() -> GridWorld:
    env = GridWorld(size=7, difficulty="medium")
    env.reset(seed=3)
    return env


def walk_to(env: GridWorld, predicate) -> None:
    for _ in range(100):
        if predicate():
            return
        env.step(env.expert_action())
    raise AssertionError("the expert never reached the state")


def test_map_shows_agent_key_door_goal_and_position() -> None:
    env = medium_world()
    lines = env.last_observation.splitlines()
    grid = lines[1 : 1 + env.size]
    text = "\n".join(grid)
    assert text.count("@") == 1 and text.count("K") == 1 and text.count("D") == 1 and text.count("G") == 1
    row = next(i for i, line in enumerate(grid) if "@" in line)
    assert f"row {row}, column {grid[row].index('@')}" in lines[-1]
    assert "Inventory: empty" in lines[-1] and "locked" in lines[-1]


def test_locked_door_blocks_until_opened_with_the_key() -> None:
    env = medium_world()
    door = env.door
    assert door is not None
    walk_to(env, lambda: env.has_key)
    assert "Inventory: key" in env.last_observation and "K" not in "\n".join(env.last_observation.splitlines()[1:-1])
    walk_to(env, lambda: env.door_open)
    assert "/" in env.last_observation
    observation, reward, terminated, _truncated, info = env.step(env.expert_action())
    while not terminated:
        observation, reward, terminated, _truncated, info = env.step(env.expert_action())
    assert reward == 1.0 and info["success"] and "goal" in observation


def test_cannot_open_without_key_or_walk_through_locked_door() -> None:
    env = medium_world()
    r, c = env.door
    env.set_state({**env.get_state(), "agent": [r, c - 1], "key": list(env.key), "has_key": False})
    assert env.step("open door")[0].startswith("The door is locked and you have no key")
    observation, *_ = env.step("go east")
    assert observation.startswith("The door is locked") and env.agent == (r, c - 1)


def test_walls_stop_movement() -> None:
    env = GridWorld(size=5, difficulty="easy")
    env.reset(seed=0)
    env.set_state({**env.get_state(), "agent": [1, 1], "goal": [3, 3]})
    observation, *_ = env.step("go north")
    assert observation.startswith("You bump into a wall") and env.agent == (1, 1)


def test_frame_draws_agent_and_goal_in_their_cells() -> None:
    env = medium_world()
    frame = env.render()
    assert frame.shape == (env.size * CELL_PX, env.size * CELL_PX, 3)
    x0, y0, x1, y1 = env.cell_box(*env.agent)
    assert tuple(frame[(y0 + y1) // 2, (x0 + x1) // 2]) == COLOURS["agent"]
    x0, y0, x1, y1 = env.cell_box(*env.goal)
    assert tuple(frame[(y0 + y1) // 2, (x0 + x1) // 2]) == COLOURS["goal"]
    wall = next(
        (r, c) for r in range(env.size) for c in range(env.size) if env.walls[r][c] == "#" and (r, c) != env.door
    )
    x0, y0, x1, y1 = env.cell_box(*wall)
    assert tuple(frame[(y0 + y1) // 2, (x0 + x1) // 2]) == COLOURS["wall"]


def test_easy_has_no_door_and_only_moves() -> None:
    env = GridWorld(difficulty="easy")
    env.reset(seed=0)
    assert env.door is None and env.key is None
    assert env.valid_actions() == ["go north", "go south", "go east", "go west"]


def test_size_option_changes_the_grid() -> None:
    env = GridWorld(size=11)
    observation, _ = env.reset(seed=0)
    assert all(len(line) == 11 for line in observation.splitlines()[1:12])
    assert np.asarray(env.render()).shape[:2] == (11 * CELL_PX, 11 * CELL_PX)
