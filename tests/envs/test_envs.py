"""The environment contract, for every environment: check_env, snapshots, determinism, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studio.envs import check_env, make_env
from studio.envs.base import EnvCheckError, StudioEnv
from studio.envs.registry import builtin_names

ENVIRONMENTS = [
    ("gridworld", {}),
    ("gridworld", {"size": 5, "difficulty": "easy"}),
    ("gridworld", {"size": 15, "difficulty": "hard"}),
    ("household", {}),
    ("household", {"rooms": 3, "task": "clean"}),
    ("household", {"rooms": 1, "task": "pick"}),
    ("wikihop", {}),
    ("wikihop", {"hops": 3}),
    ("gym:FrozenLake-v1", {}),
    ("gym:FrozenLake-v1", {"is_slippery": False, "map_name": "8x8"}),
    ("gym:CliffWalking-v1", {}),
    ("gym:Taxi-v4", {}),
    ("gym:CartPole-v1", {}),
]
IDS = [f"{name}-{json.dumps(options, sort_keys=True)}" for name, options in ENVIRONMENTS]


@pytest.mark.parametrize(("name", "options"), ENVIRONMENTS, ids=IDS)
def test_every_environment_passes_check_env(name: str, options: dict) -> None:
    env = make_env(name, options)
    for seed in (0, 1, 2):
        check_env(env, seed=seed, steps=40)


@pytest.mark.parametrize(("name", "options"), ENVIRONMENTS, ids=IDS)
def test_restoring_a_snapshot_and_repeating_an_action_gives_the_same_outcome(name: str, options: dict) -> None:
    """Over many random states: snapshot, act, restore (in a fresh env too), act again."""
    env, twin = make_env(name, options), make_env(name, options)
    rng = np.random.default_rng(123)
    checked = 0
    for seed in range(8):
        env.reset(seed=seed)
        twin.reset(seed=seed + 1000)  # deliberately on another task: set_state must bring everything back
        for _ in range(25):
            snapshot = json.loads(json.dumps(env.get_state()))
            action = env.sample_action(rng)
            first = env.step(action)
            twin.set_state(snapshot)
            second = twin.step(action)
            assert first[:4] == second[:4], f"{name} seed {seed}: {action!r}"
            checked += 1
            if first[2] or first[3]:
                break
    assert checked >= 40


@pytest.mark.parametrize(("name", "options"), ENVIRONMENTS, ids=IDS)
def test_same_seed_same_task_and_frames(name: str, options: dict) -> None:
    a, b = make_env(name, options), make_env(name, options)
    assert a.reset(seed=5) == b.reset(seed=5)
    assert a.instruction == b.instruction
    assert np.array_equal(a.render(), b.render())


@pytest.mark.parametrize("name", builtin_names())
def test_seeds_generate_different_tasks(name: str) -> None:
    env = make_env(name)
    tasks = set()
    for seed in range(10):
        observation, _ = env.reset(seed=seed)
        tasks.add((env.instruction, observation))
    assert len(tasks) >= 8


@pytest.mark.parametrize(("name", "options"), ENVIRONMENTS, ids=IDS)
def test_refused_action_says_why_and_changes_nothing(name: str, options: dict) -> None:
    env = make_env(name, options)
    env.reset(seed=3)
    before = json.dumps(env.get_state(), sort_keys=True)
    for bad in ["", "   ", "<script>alert(1)</script>", "fly to the moon"]:
        observation, reward, terminated, truncated, info = env.step(bad)
        assert observation.startswith("Invalid action:")
        assert info["invalid_action"] and (reward, terminated, truncated) == (0.0, False, False)
        assert not env.validate_action(bad).valid
    assert json.dumps(env.get_state(), sort_keys=True) == before


@pytest.mark.parametrize("name", ["gridworld", "household", "gym:FrozenLake-v1"])
def test_actions_are_matched_case_and_space_insensitively(name: str) -> None:
    env = make_env(name)
    env.reset(seed=0)
    action = env.valid_actions()[0]
    check = env.validate_action("  " + action.upper().replace(" ", "   ") + " ")
    assert check.valid and check.action == action


class BrokenSnapshots(StudioEnv):
    """A counter whose snapshot forgets the count: check_env must catch it."""

    name = "broken"

    def _reset(self, seed, options):
        self.count = 0
        self.instruction = "count"
        return "0", {}

    def valid_actions(self):
        return ["inc"]

    def _step(self, action):
        self.count += 1
        return str(self.count), 0.0, False, False, {}

    def _render_frame(self):
        return np.zeros((4, 4, 3), dtype=np.uint8)

    def get_state(self):
        return {}

    def set_state(self, state):
        pass


def test_check_env_catches_a_broken_snapshot() -> None:
    with pytest.raises(EnvCheckError, match="restoring a snapshot"):
        check_env(BrokenSnapshots())
