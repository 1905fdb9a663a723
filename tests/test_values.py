"""Monte Carlo step values: exact on cases with a known answer, reproducible, and honest about errors."""

from __future__ import annotations

import math

import pytest

from studio.agents.scripted import make_policy
from studio.envs import make_env
from studio.errors import StudioError
from studio.runner import EpisodeRunner
from studio.trace import Candidate
from studio.values import estimate_step_values, mean_and_stderr


def expert_episode(seed: int = 0, steps: int = 3):
    runner = EpisodeRunner("gridworld", make_policy("expert"))
    runner.reset(seed=seed)
    for _ in range(steps):
        runner.step()
    return runner.episode


def plan_length(episode, step_index: int, action: str) -> tuple[float, int]:
    """Independently: take ``action`` in the step's state, then the planner's shortest path length."""
    env = make_env("gridworld", episode.env_options)
    env.rewind(episode.seed, episode.steps[step_index].state)
    _obs, reward, terminated, _trunc, _info = env.step(action)
    if terminated:
        return reward, 0
    return reward, len(env._plan())


def with_candidate(episode, step_index: int, action: str):
    step = episode.steps[step_index]
    step.candidates.append(Candidate(raw=action, thought=None, action=action, valid=True))
    return episode


def test_expert_rollouts_give_the_exact_value_of_each_output() -> None:
    episode = expert_episode()
    step = episode.steps[2]
    away = next(a for a in ("go north", "go south", "go west", "go east") if a != step.action)
    with_candidate(episode, 2, away)
    values = estimate_step_values(
        episode, 2, lambda i: make_policy("expert"), rollout_policy="expert", rollouts=3, horizon=None
    )
    assert [v.output for v in values] == ["taken", "candidate 1"]
    for value, action in zip(values, (step.action, away)):
        reward, remaining = plan_length(episode, 2, action)
        # The expert follows the shortest path and the goal pays 1: every rollout succeeds, Q = 1.
        assert value.q == 1.0 and value.stderr == 0.0 and value.hard and value.soft == 1.0
        assert value.lengths == [remaining] * 3 and value.returns == [1.0] * 3
    # With a horizon the value says whether the goal is within reach of each output.
    taken_left = plan_length(episode, 2, step.action)[1]
    away_left = plan_length(episode, 2, away)[1]
    assert away_left != taken_left
    horizon = min(taken_left, away_left)
    short = estimate_step_values(
        episode, 2, lambda i: make_policy("expert"), rollout_policy="expert", rollouts=1, horizon=horizon
    )
    assert [v.q for v in short] == [1.0 if taken_left <= horizon else 0.0, 1.0 if away_left <= horizon else 0.0]
    assert short[0].settings == f"expert-m1-h{horizon}"


def test_random_rollouts_are_reproducible_from_their_seeds_and_differ_between_rollouts() -> None:
    episode = expert_episode()
    run = lambda seed: estimate_step_values(  # noqa: E731
        episode,
        1,
        lambda i: make_policy("random", seed=seed + i),
        rollout_policy="random",
        rollouts=6,
        horizon=8,
        seed=seed,
    )[0]
    first, again, other = run(10), run(10), run(11)
    assert first.returns == again.returns and first.lengths == again.lengths and first.seeds == list(range(10, 16))
    assert first.seeds != other.seeds
    mean, stderr = mean_and_stderr(first.returns)
    assert first.q == mean and math.isclose(first.stderr, stderr)
    assert first.soft == sum(first.successes) / 6 and first.hard == any(first.successes)


def test_mean_and_stderr_against_known_values() -> None:
    assert mean_and_stderr([1.0, 0.0, 1.0, 0.0]) == (0.5, pytest.approx(math.sqrt((4 * 0.25 / 3) / 4)))
    assert mean_and_stderr([2.0]) == (2.0, 0.0)


def test_an_invalid_output_keeps_the_state_and_is_marked() -> None:
    episode = with_candidate(expert_episode(), 1, "fly away")
    episode.steps[1].candidates[0].valid = False
    values = estimate_step_values(
        episode, 1, lambda i: make_policy("expert"), rollout_policy="expert", rollouts=1, outputs=["candidate 1"]
    )
    assert values[0].valid is False and values[0].q == 1.0  # the expert still reaches the goal afterwards


def test_errors_are_one_line() -> None:
    episode = expert_episode()
    policy = lambda i: make_policy("expert")  # noqa: E731
    for call, message in [
        (lambda: estimate_step_values(episode, 9, policy, rollout_policy="expert"), "has no step 9"),
        (lambda: estimate_step_values(episode, 0, policy, rollout_policy="expert", rollouts=0), "Rollouts must be"),
        (lambda: estimate_step_values(episode, 0, policy, rollout_policy="expert", horizon=-1), "horizon"),
        (
            lambda: estimate_step_values(episode, 0, policy, rollout_policy="expert", outputs=["candidate 4"]),
            "no output",
        ),
        (
            lambda: estimate_step_values(episode, 0, policy, rollout_policy="expert", should_stop=lambda: True),
            "Stopped after 0 of 4 rollouts",
        ),
    ]:
        with pytest.raises(StudioError, match=message):
            call()
