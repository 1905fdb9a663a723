"""The Gymnasium adapter: named actions, text observations, frames, safe snapshots, errors."""

from __future__ import annotations

import base64
import os
import pickle

import numpy as np
import pytest

from studio.envs import make_env
from studio.errors import BadOption, UnknownEnvironment


def test_frozenlake_has_named_actions_and_a_text_map() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": False})
    observation, _ = env.reset(seed=0)
    assert env.valid_actions() == ["left", "down", "right", "up"]
    assert "@FFF" in observation and "(@ marks your position)" in observation
    observation, reward, terminated, _truncated, _info = env.step("down")
    assert "@HFH" in observation.splitlines()  # moved one row down, onto row 2 of the map
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_frozenlake_success_on_reaching_the_goal() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": False})
    env.reset(seed=0)
    for action in ["down", "down", "right", "right", "down", "right"]:
        _obs, reward, terminated, _truncated, info = env.step(action)
    assert terminated and reward == 1.0 and info["success"]


def test_vector_observations_are_formatted_with_field_names() -> None:
    env = make_env("gym:CartPole-v1")
    observation, _ = env.reset(seed=0)
    assert "pole angle = " in observation and env.valid_actions() == ["push left", "push right"]


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("gym:NoSuchEnv-v0", {}, UnknownEnvironment, "could not make"),
        ("gym:Pendulum-v1", {}, UnknownEnvironment, "only Discrete"),
        ("gym:", {}, UnknownEnvironment, "Give a Gymnasium id"),
        ("gym:FrozenLake-v1", {"bogus": 1}, BadOption, "bogus"),
    ],
)
def test_user_errors_are_one_clear_line(name: str, options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        make_env(name, options)
    assert "\n" not in str(info.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_snapshot_from_an_untrusted_file_cannot_run_code() -> None:
    env = make_env("gym:FrozenLake-v1")
    env.reset(seed=0)
    state = env.get_state()
    state["attributes"]["s"] = base64.b64encode(pickle.dumps(_Exploit())).decode("ascii")
    with pytest.raises(BadOption, match="cannot be restored"):
        env.set_state(state)


def test_slippery_dynamics_are_reproduced_from_a_snapshot() -> None:
    env = make_env("gym:FrozenLake-v1", {"is_slippery": True})
    env.reset(seed=0)
    env.step("right")
    snapshot = env.get_state()
    outcomes = [env.step("down")[:4]]
    for _ in range(3):
        env.set_state(snapshot)
        outcomes.append(env.step("down")[:4])
    assert len(set(outcomes)) == 1
