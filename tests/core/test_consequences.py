"""What each action would lead to: the same next observation, reward, validity and frame as stepping a fork
of the environment by hand; one line where there is nothing to fork from."""

from __future__ import annotations

import numpy as np
import pytest

from studio.agents.scripted import make_policy
from studio.envs import make_env
from studio.episodes.consequences import consequences
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.errors import StudioError


def _episode(env: str, seed: int, steps: int):
    runner = EpisodeRunner(env, make_policy("expert"), config=RunnerConfig(max_steps=steps))
    runner.reset(seed=seed)
    return runner.run()


@pytest.mark.parametrize("env, actions", [("gridworld", ["go north", "go east", "dance"]), ("household", None)])
def test_each_action_leads_where_stepping_a_fork_by_hand_leads(env: str, actions) -> None:
    episode = _episode(env, seed=3, steps=3)
    at = 1
    step = episode.steps[at]
    if actions is None:  # two valid actions of that state, and one it refuses
        by_hand = make_env(env, episode.env_options)
        by_hand.rewind(episode.seed, step.state)
        actions = [*by_hand.valid_actions()[:2], "fly away"]
    found = consequences(episode, at, actions)
    assert [c.action for c in found] == actions
    for consequence, action in zip(found, actions):
        by_hand = make_env(env, episode.env_options)
        by_hand.rewind(episode.seed, step.state)
        observation, reward, terminated, truncated, info = by_hand.step(action)
        assert consequence.observation == observation
        assert consequence.reward == reward and consequence.done == (terminated or truncated)
        assert consequence.valid == ("invalid_action" not in info)
        assert np.array_equal(consequence.frame, by_hand.render())
    assert not found[-1].valid and found[-1].invalid_reason
    assert found[0].observation != found[1].observation or not np.array_equal(found[0].frame, found[1].frame)
    assert episode.length == 3  # the episode itself is untouched


def test_nothing_to_fork_from_is_one_line() -> None:
    episode = _episode("gridworld", seed=1, steps=2)
    episode.steps[0].state = None
    with pytest.raises(StudioError, match="no environment snapshot"):
        consequences(episode, 0, ["go north"])
    with pytest.raises(StudioError, match="Give from 1 to"):
        consequences(episode, 1, [])
    with pytest.raises(StudioError, match="Cannot fork at step 7"):
        consequences(episode, 7, ["go north"])
