"""Forks are exact or say how they are not: every environment states its fork mode, gym ids are probed,
Atari games fork exactly (by replaying from the seed), and an environment that cannot be restored or
replayed refuses forks in one line instead of giving a different episode. Also: what success means for
environments without a goal, crashes, and third-party families made on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from studio.agents.scripted import RandomPolicy
from studio.evaluation.compare import comparison
from studio.envs.base import check_env
from studio.envs.fork_probe import probe_fork_mode
from studio.envs.gym_adapter import NO_SUCCESS, POSITIVE_REWARD, SURVIVAL, GymAdapter
from studio.envs.registry import builtin_names, make_env
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig

ROOT = Path(__file__).resolve().parents[2]


class _Hidden:
    """State the studio's generic snapshot cannot see: it is not picklable (a lock inside)."""

    def __init__(self, position: int) -> None:
        import threading

        self.position, self.lock = position, threading.Lock()


class HiddenWalk(gym.Env):
    """Deterministic under its seed, but its position lives in an object no snapshot can copy."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, noisy: bool = False) -> None:
        self.action_space, self.observation_space = spaces.Discrete(2), spaces.Discrete(100)
        self.render_mode, self.noisy = render_mode, noisy
        self.hidden = _Hidden(0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.hidden = _Hidden(int(self.np_random.integers(10)))
        return self.hidden.position, {}

    def step(self, action):
        # Unseeded, and wide enough that a replay matches by chance with odds of 1e-10, not 1e-3 (a CI flake).
        jitter = int(np.random.default_rng().integers(100)) if self.noisy else 0
        self.hidden.position += (1 if action == 1 else -1) + jitter
        return self.hidden.position % 100, 0.0, False, False, {}

    def render(self):
        frame = np.zeros((8, 100, 3), dtype=np.uint8)
        frame[:, self.hidden.position % 100] = 255
        return frame


gym.register("StudioTest/HiddenWalk-v0", entry_point=HiddenWalk, max_episode_steps=50)
gym.register("StudioTest/NoisyWalk-v0", entry_point=HiddenWalk, kwargs={"noisy": True}, max_episode_steps=50)


def test_every_builtin_environment_states_its_fork_mode() -> None:
    for name in builtin_names():
        assert make_env(name).fork_mode == "exact"
    listed = subprocess.run([sys.executable, "app.py", "envs", "--json"], cwd=ROOT, capture_output=True, text=True)
    forks = {json.loads(line)["name"]: json.loads(line)["fork"] for line in listed.stdout.splitlines()}
    assert forks["gridworld"] == "exact" and forks["gym:<id>"] == "probed when first made"
    assert forks["twx:<id>"] == "replay"


def test_a_gym_env_whose_snapshot_misses_its_state_forks_by_replay_and_equals_the_original() -> None:
    env = make_env("gym:StudioTest/HiddenWalk-v0")
    assert env.fork_mode == "replay" and "replay" in env.fork_note
    check_env(env)
    original = _random_run("gym:StudioTest/HiddenWalk-v0", steps=12)
    _assert_fork_equals(original, at=4)


def test_a_gym_env_that_neither_restores_nor_replays_refuses_forks_in_one_line() -> None:
    env = make_env("gym:StudioTest/NoisyWalk-v0")
    assert env.fork_mode == "none" and "another episode" in env.fork_note
    check_env(env)  # the contract holds: restoring is refused rather than silently different
    episode = _random_run("gym:StudioTest/NoisyWalk-v0", steps=5)
    runner = EpisodeRunner("gym:StudioTest/NoisyWalk-v0", RandomPolicy(seed=0))
    with pytest.raises(StudioError, match="cannot be forked here: a restored snapshot was not exact") as refused:
        runner.fork(episode, 2)
    assert "\n" not in str(refused.value)


def test_the_probe_finds_the_exact_environments_exact() -> None:
    for name in ("gym:FrozenLake-v1", "gym:CartPole-v1", "gym:MiniGrid-DoorKey-5x5-v0"):
        env = make_env(name)
        assert env.fork_mode == "exact", (name, env.fork_note)

        def make(mode, name=name):
            twin = make_env(name)
            twin._fork = type(env._fork)(mode, "test")
            return twin

        assert probe_fork_mode(make).mode == "exact"


def _random_run(name: str, steps: int, **options) -> object:
    runner = EpisodeRunner(
        name, RandomPolicy(seed=3), options, config=RunnerConfig(max_steps=steps, record_frames=True)
    )
    runner.reset(seed=7)
    return runner.run()


def _assert_fork_equals(original, at: int) -> None:
    """Fork ``original`` at step ``at`` and take its own actions again: every later frame, observation,
    reward and end flag is the original's."""
    runner = EpisodeRunner(original.env, RandomPolicy(seed=99), config=RunnerConfig(record_frames=True))
    runner.fork(original, at)
    for step in original.steps[at:]:
        again = runner.step(action=step.action)
        assert again.observation == step.observation and np.array_equal(again.frame, step.frame)
        assert (again.reward, again.terminated, again.truncated, again.next_observation) == (
            step.reward,
            step.terminated,
            step.truncated,
            step.next_observation,
        )


def test_forks_of_an_atari_game_equal_the_original_frames_for_ten_steps() -> None:
    env = make_env("gym:ALE/Pong-v5")
    assert env.fork_mode == "replay"  # ALE's emulator state is not in the generic snapshot: replayed, exactly
    original = _random_run("gym:ALE/Pong-v5", steps=15)
    assert original.length == 15 and "Frame " in original.steps[3].observation
    assert "[[" not in original.steps[3].observation  # the screen is the frame, not numpy's printout of it
    _assert_fork_equals(original, at=5)  # steps 5-14: ten steps, frame by frame


def test_success_is_unknown_where_the_task_has_no_goal_and_crashes_fail() -> None:
    pendulum = _random_run("gym:Pendulum-v1", steps=6, bins=8)
    assert pendulum.success is None and pendulum.complete and pendulum.end_reason == "step limit"
    cartpole = EpisodeRunner("gym:CartPole-v1", RandomPolicy(seed=0), config=RunnerConfig(max_steps=3))
    cartpole.reset(seed=0)
    assert cartpole.run().success is True  # staying up is CartPole's goal: survival still succeeds
    table = comparison([pendulum])["results"][0]
    assert table["success_rate"] is None and table["mean_return"] == pytest.approx(pendulum.total_return)
    # An environment's own flag is read as a bool or a number (Fetch and Meta-World report 0.0 / 1.0).
    assert POSITIVE_REWARD.decide(0.0, False, True, {"is_success": 1.0}) is True
    assert POSITIVE_REWARD.decide(1.0, True, False, {"is_success": np.float32(0.0)}) is False
    assert (
        NO_SUCCESS.decide(1.0, True, False, {"success": 1.0}) is True
        and NO_SUCCESS.decide(1.0, True, False, {}) is None
    )
    # A crash is a failure, whatever the reward (highway-env's collision reward can be positive).
    assert SURVIVAL.decide(0.7, True, False, {"crashed": True}) is False
    assert POSITIVE_REWARD.decide(0.7, True, False, {"crashed": True, "is_success": True}) is False


def test_a_highway_crash_is_a_failure_and_its_ids_need_no_import() -> None:
    crashed = _random_run("gym:highway-fast-v0", steps=40)
    assert crashed.steps[-1].info["crashed"] is True and crashed.steps[-1].terminated
    assert crashed.success is False and crashed.end_reason == "terminated"
    made = subprocess.run(
        [sys.executable, "app.py", "envs", "gym:highway-fast-v0", "--json"], cwd=ROOT, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["fork"] in ("exact", "replay")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("gym:Nowhere/Thing-v0", "No installed package registers the Gymnasium namespace 'Nowhere'"),
        ("gym:MiniGrid-WFC-MazeSimple-v0", "gym:MiniGrid-WFC-MazeSimple-v0 failed to reset: "),
        ("gym:Meta-World/MT1", "needs the metaworld package: pip install metaworld"),
    ],
)
def test_third_party_failures_are_one_line(tmp_path, name: str, words: str) -> None:
    result = subprocess.run(
        [sys.executable, "app.py", "run", "--env", name, "--policy", "random", "--db", str(tmp_path / "s.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and words in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in result.stderr


def test_an_environment_that_raises_mid_episode_is_one_line() -> None:
    env = make_env("gym:StudioTest/HiddenWalk-v0")
    assert isinstance(env, GymAdapter)
    env.reset(seed=0)

    def broken(action):
        raise RuntimeError("the simulator fell over\nwith details")

    env.env.unwrapped.step = broken
    env.env.step = broken
    with pytest.raises(StudioError) as failed:
        env.step("action 1")
    assert str(failed.value) == (
        "gym:StudioTest/HiddenWalk-v0 failed to take the action 'action 1': RuntimeError: the simulator fell over"
    )
