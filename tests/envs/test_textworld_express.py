"""TextWorldExpress games through the twx: family: text, valid actions per state, forks by replay, the gold path."""

from __future__ import annotations

import copy

import pytest

from studio.agents.scripted import ExpertPolicy
from studio.envs import check_env, env_at, make_env
from studio.errors import BadOption, StudioError, UnknownEnvironment
from studio.episodes.runner import EpisodeRunner

COIN = {"params": "numLocations=4,includeDoors=1"}


@pytest.mark.parametrize("game", ["coin", "cookingworld", "twc"])
def test_games_step_with_the_valid_actions_of_each_state(game: str) -> None:
    env = make_env(f"twx:{game}")
    observation, _ = env.reset(seed=1)
    assert env.instruction and observation and env.valid_actions() == sorted(env.valid_actions())
    assert env.actions_depend_on_state and "look around" in env.valid_actions()
    before = env.valid_actions()
    move = next(a for a in before if a.startswith(("move", "open")))
    observation, reward, terminated, truncated, info = env.step(move)
    assert isinstance(observation, str) and not truncated and set(info) >= {"success", "score"}
    refused, *_ = env.step("fly to the moon")
    assert refused.startswith("Invalid action")
    check_env(make_env(f"twx:{game}"), seed=2, steps=20)


def test_the_gold_path_solves_each_game_and_the_expert_refuses_off_it() -> None:
    for game in ("coin", "cookingworld", "twc"):
        runner = EpisodeRunner(f"twx:{game}", ExpertPolicy())
        runner.reset(seed=3)
        episode = runner.run()
        assert episode.success and episode.end_reason == "goal reached", game
    env = make_env("twx:coin", COIN)
    env.reset(seed=0)
    gold = env.expert_action()
    env.step(next(a for a in env.valid_actions() if a != gold and a != "look around"))
    with pytest.raises(StudioError, match="gold path"):
        env.expert_action()


def test_a_fork_replays_to_the_same_state_and_the_same_future() -> None:
    env = make_env("twx:coin", COIN)
    env.reset(seed=2)
    for pick in (0, -1, 1):
        env.step(env.valid_actions()[pick])
    snapshot, seen = copy.deepcopy(env.get_state()), (env.last_observation, env.valid_actions())
    assert snapshot["actions"] == env.actions_taken and len(snapshot["actions"]) == 3
    future = []
    for i in range(5):
        action = env.valid_actions()[i % len(env.valid_actions())]
        future.append((action, env.step(action)[:4]))
    fork = env_at("twx:coin", COIN, 2, snapshot)
    assert (fork.last_observation, fork.valid_actions()) == seen
    assert [fork.step(action)[:4] for action, _ in future] == [outcome for _, outcome in future]


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("twx:nope", {}, UnknownEnvironment, "Known: coin, cookingworld"),
        ("twx:coin", {"params": "a;rm -rf"}, BadOption, "name=value pairs"),
        ("twx:coin", {"fold": "all"}, BadOption, "train, dev, test"),
    ],
)
def test_user_errors_are_one_line(name: str, options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        make_env(name, options)
    assert "\n" not in str(raised.value)


def test_a_snapshot_with_a_foreign_action_is_refused_and_changes_nothing() -> None:
    env = make_env("twx:coin", COIN)
    env.reset(seed=2)
    env.step(env.valid_actions()[0])
    before = env.get_state()
    tampered = {**copy.deepcopy(before), "actions": ["open door to east", "take the moon"]}
    with pytest.raises(BadOption, match="was not a valid action"):
        env.restore(tampered)
    assert env.get_state() == before
