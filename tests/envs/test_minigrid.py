"""MiniGrid and BabyAI through the gym: family: text, named actions, forks, the bot, safe snapshots."""

from __future__ import annotations

import base64
import copy
import io
import os
import pickle

import numpy as np
import pytest

from studio.envs import check_env, env_at, make_env
from studio.envs.minigrid_env import ACTIONS, FACING, BabyAIEnv, MiniGridEnv
from studio.errors import BadOption

GO_TO_RED_BALL = "gym:BabyAI-GoToRedBall-v0"
DOOR_KEY = "gym:MiniGrid-DoorKey-5x5-v0"


def test_namespaced_ids_make_the_family_adapter() -> None:
    assert type(make_env(GO_TO_RED_BALL)) is BabyAIEnv
    assert type(make_env(DOOR_KEY)) is MiniGridEnv
    with pytest.raises(BadOption, match="'view' must be one of full, sentences"):
        make_env(DOOR_KEY, {"view": "pixels"})


def test_the_mission_is_the_instruction_and_the_map_follows_the_agent() -> None:
    env = make_env(GO_TO_RED_BALL)
    observation, _ = env.reset(seed=0)
    grid = env.grid_env
    assert env.instruction.startswith(f"Mission: {grid.mission}.") and "## wall" in env.instruction
    assert env.valid_actions() == list(ACTIONS)
    lines = observation.splitlines()
    rows = lines[1 : 1 + grid.height]
    assert all(len(row) == 2 * grid.width for row in rows) and rows[0] == "##" * grid.width
    x, y = (int(v) for v in grid.agent_pos)
    assert rows[y][2 * x : 2 * x + 2] == FACING[grid.agent_dir]
    assert "bR" in observation  # the red ball, by kind and colour
    assert lines[-1].startswith("You face ") and lines[-1].endswith("You carry nothing.")
    direction = grid.agent_dir
    observation, *_ = env.step("turn left")
    assert grid.agent_dir == (direction - 1) % 4
    assert observation.splitlines()[1 + y][2 * x : 2 * x + 2] == FACING[grid.agent_dir]


def test_sentences_say_what_the_agent_sees() -> None:
    env = make_env(DOOR_KEY, {"view": "sentences"})
    observation, _ = env.reset(seed=1)
    assert "Each map cell" not in env.instruction and "##" not in observation
    assert "You see a yellow key 1 step forward." in observation
    assert "You see a locked yellow door 1 step left." in observation
    assert observation.splitlines()[-1] == "You face south; in front of you: a yellow key. You carry nothing."


@pytest.mark.parametrize("name", [GO_TO_RED_BALL, DOOR_KEY, "gym:BabyAI-BossLevel-v0"])
def test_minigrid_environments_keep_the_studio_contract(name: str) -> None:
    check_env(make_env(name), seed=3, steps=40)


def _play(env, actions: list[str]) -> list[tuple]:
    return [env.step(action)[:4] for action in actions] + [(env.render().sum(),)]


def test_a_fork_starts_from_the_exact_state_and_has_the_same_future() -> None:
    env = make_env(DOOR_KEY)
    env.reset(seed=1)
    env.step("pick up")  # the key ahead
    assert env.grid_env.carrying is not None and env.grid_env.carrying.type == "key"
    snapshot, seen = copy.deepcopy(env.get_state()), env._text("")
    future = ["turn left", "toggle", "go forward", "go forward", "turn left", "go forward", "drop"]
    expected = _play(env, future)
    assert any("/Y" in outcome[0] for outcome in expected[:-1])  # the door was opened on the way
    fork = env_at(DOOR_KEY, {}, 1, snapshot)  # a fresh environment, from the episode's snapshot
    assert fork.grid_env.carrying.type == "key" and fork._text("") == seen
    assert _play(fork, future) == expected


def test_the_bot_solves_babyai_levels_and_plans_again_after_a_fork() -> None:
    for name in (GO_TO_RED_BALL, "gym:BabyAI-PickupLoc-v0", "gym:BabyAI-OpenDoor-v0"):
        for seed in range(3):
            env = make_env(name)
            env.reset(seed=seed)
            info: dict = {}
            for _ in range(60):
                _obs, _reward, terminated, truncated, info = env.step(env.expert_action())
                if terminated or truncated:
                    break
            assert info.get("success") is True, (name, seed)
    env = make_env(GO_TO_RED_BALL)
    env.reset(seed=4)
    for action in ("turn left", "go forward", "turn left"):  # off the bot's path
        env.step(action)
    fork = env_at(GO_TO_RED_BALL, {}, 4, env.get_state())
    for _ in range(60):
        _obs, _reward, terminated, truncated, info = fork.step(fork.expert_action())
        if terminated or truncated:
            break
    assert info["success"] is True
    assert make_env(DOOR_KEY).provides_expert() is False


def test_map_cells_project_onto_the_frame() -> None:
    env = make_env(GO_TO_RED_BALL)
    observation, _ = env.reset(seed=0)
    grid = env.grid_env
    cells = env.text_cells(observation)
    assert len(cells) == 2 * grid.width * grid.height
    x, y = (int(v) for v in grid.agent_pos)
    agent_chars = [index for index, row, column in cells if (row, column) == (y, x)]
    assert observation[agent_chars[0] : agent_chars[-1] + 1] == FACING[grid.agent_dir]
    frame = env.render()
    x0, y0, x1, y1 = env.cell_box(y, x)
    assert (x1, y1) <= (frame.shape[1], frame.shape[0]) and x1 - x0 == frame.shape[1] // grid.width
    assert make_env(DOOR_KEY, {"view": "sentences"}).text_cells(observation) == []


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _Stranger:
    """A class from outside MiniGrid: a snapshot may not create it."""


def _tampered(mutate) -> dict:
    env = make_env(GO_TO_RED_BALL)
    env.reset(seed=0)
    state = env.get_state()
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=4)
    pickler.persistent_id = lambda obj: "env" if obj is env.grid_env else None  # type: ignore[method-assign]
    values = copy.copy(env._state_attributes())
    mutate(values, env)
    pickler.dump(values)
    state["minigrid"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return state


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda values, env: values.update(carrying=_Exploit()), "not allowed"),
        (lambda values, env: values.update(carrying=_Stranger()), "not allowed"),
        (lambda values, env: values.update(agent_pos=(99, 1)), "outside the grid"),
        (lambda values, env: values["grid"].grid.pop(), "wrong number of cells"),
        (lambda values, env: values.update(unexpected=1), "fields are not this environment's"),
    ],
)
def test_tampered_snapshots_are_refused_in_one_line(mutate, reason: str) -> None:
    state = _tampered(mutate)
    env = make_env(GO_TO_RED_BALL)
    env.reset(seed=0)
    before = env.get_state()
    with pytest.raises(BadOption, match=reason) as refused:
        env.restore(state)
    assert "\n" not in str(refused.value) and env.get_state() == before


def test_frames_are_minigrids_own_render() -> None:
    env = make_env(DOOR_KEY)
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (5 * 32, 5 * 32, 3)


def test_a_snapshot_naming_an_unloaded_minigrid_module_imports_nothing() -> None:
    """A snapshot names classes by module; looking one up must never import a module (minigrid's
    manual-control window would pull in pygame and hundreds of modules before any check)."""
    import sys

    module = "minigrid.manual_control"
    assert module not in sys.modules
    env = make_env(GO_TO_RED_BALL)
    env.reset(seed=0)
    state = env.get_state()
    # GLOBAL 'minigrid.manual_control ManualControl', then STOP: all it takes to ask for the import.
    state["minigrid"] = base64.b64encode(b"\x80\x04cminigrid.manual_control\nManualControl\n.").decode("ascii")
    with pytest.raises(BadOption, match="not allowed"):
        env.restore(state)
    assert module not in sys.modules
