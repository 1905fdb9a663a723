"""Continuous (Box) actions as bin indices: the discretiser, the environments, the per-dimension distributions."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import RandomPolicy
from studio.envs import check_env, env_at, make_env
from studio.envs.gym_adapter import BinDiscretiser
from studio.errors import BadOption
from studio.models.base import SamplingParams
from studio.models.hf import TransformersBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Step
from studio.viz.plots import action_bins, action_distribution_figure
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


@pytest.mark.parametrize("bins", [2, 7, 256])
def test_bins_round_trip_between_index_and_value(bins: int) -> None:
    d = BinDiscretiser(low=(-2.0, 0.0), high=(2.0, 10.0), bins=bins)
    for index in range(bins):
        values = d.values([index, bins - 1 - index])
        assert d.indices(values) == [index, bins - 1 - index]
        assert np.all(values > np.asarray(d.low)) and np.all(values < np.asarray(d.high))
    rng = np.random.default_rng(0)
    for value in rng.uniform([-2, 0], [2, 10], size=(50, 2)):  # a value is within half a bin of its bin's centre
        assert np.all(np.abs(d.values(d.indices(value)) - value) <= (np.asarray(d.high) - d.low) / bins / 2 + 1e-12)
    assert d.indices([-99.0, 99.0]) == [0, bins - 1]  # out of range: clipped to the end bins
    assert d.parse(d.format([1, 0])) == [1, 0] and d.parse("1, 0") == [1, 0]
    assert isinstance(d.parse("1"), str) and isinstance(d.parse(f"0 {bins}"), str) and isinstance(d.parse("a b"), str)


def test_pendulum_takes_bins_and_says_what_they_mean() -> None:
    env = make_env("gym:Pendulum-v1", {"bins": 21})
    env.reset(seed=0)
    assert env.valid_actions() is None and "a bin from 00 (the lowest value) to 20" in env.instruction
    assert "torque from -2 to 2" in env.instruction
    observation, *_ = env.step("20")
    assert observation.startswith("You chose 20 (torque = 1.9).") and env.env.unwrapped.last_u == pytest.approx(
        2 - 4 / 42
    )
    refused, reward, *_ = env.step("7 3")
    assert refused.startswith("Invalid action") and "1 whole number from 0 to 20" in refused and reward == 0.0
    check_env(env)
    check_env(make_env("gym:MountainCarContinuous-v0", {"bins": 9}))
    assert make_env("gym:Pendulum-v1").options == {"bins": 256}


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("gym:Pendulum-v1", {"bins": 1}, "from 2 to 1024"),
        ("gym:Pendulum-v1", {"bins": "many"}, "whole number"),
        ("gym:FrozenLake-v1", {"bins": 8}, "for continuous"),
    ],
)
def test_bad_bins_are_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(BadOption, match=message):
        make_env(name, options)


def test_the_random_policy_acts_in_bins() -> None:
    runner = EpisodeRunner("gym:Pendulum-v1", RandomPolicy(seed=1), {"bins": 16}, config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    episode = runner.run()
    assert episode.length == 5 and all(step.valid for step in episode.steps)
    # Pendulum has no goal to reach: lasting to the limit is not a success, and not a failure either.
    assert episode.success is None and episode.complete and episode.end_reason == "step limit"
    assert episode.steps[-1].info["success_rule"].startswith("no notion of success")


def _bins_step(tiny: TransformersBackend, name: str, options: dict, temperature: float = 0.0) -> tuple[Step, int]:
    sampling = SamplingParams(temperature=temperature, max_new_tokens=6, seed=3)
    policy = ReActPolicy(tiny, ReActConfig(action_mode="score", sampling=sampling, few_shot=False))
    runner = EpisodeRunner(name, policy, options, config=RunnerConfig(max_steps=3))
    runner.reset(seed=0)
    return runner.step(), runner.env.discretiser.dimensions


@pytest.mark.parametrize(("name", "options"), [("gym:Pendulum-v1", {"bins": 16}), ("gym:Reacher-v5", {"bins": 12})])
def test_score_mode_gives_a_distribution_over_bins_per_dimension(tiny, name: str, options: dict) -> None:
    step, dimensions = _bins_step(tiny, name, options)
    record = step.extra["action_bins"]
    assert len(record["probabilities"]) == dimensions == len(record["chosen"])
    for probabilities, chosen in zip(record["probabilities"], record["chosen"]):
        assert len(probabilities) == options["bins"] and sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert chosen == int(np.argmax(probabilities))  # greedy: the likeliest bin of each dimension
    assert step.valid and step.action == " ".join(f"{c:02d}" for c in record["chosen"])
    assert "".join(token.text for token in step.tokens) == step.raw and step.raw.endswith("Action: " + step.action)
    figure = action_distribution_figure(step)
    assert len(figure.data) == dimensions and all(len(trace.x) == options["bins"] for trace in figure.data)
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert titles == (["torque"] if name == "gym:Pendulum-v1" else ["dimension 1", "dimension 2"])


def test_the_first_dimensions_distribution_is_the_models_own(tiny) -> None:
    """An independent scoring pass of each bin after the same turn gives the stored probabilities."""
    step, _ = _bins_step(tiny, "gym:Pendulum-v1", {"bins": 8})
    prefix = step.raw[: -len(" " + step.action)]
    continuations = [f" {b:01d}" for b in range(8)]
    scored = tiny.score(step.prompt, continuations, assistant_prefix=prefix)
    totals = np.asarray(scored.totals)
    expected = np.exp(totals - totals.max()) / np.exp(totals - totals.max()).sum()
    assert np.allclose(step.extra["action_bins"]["probabilities"][0], expected, atol=1e-4)


def test_sampled_bins_follow_the_step_seed(tiny) -> None:
    first, _ = _bins_step(tiny, "gym:Reacher-v5", {"bins": 12}, temperature=1.0)
    again, _ = _bins_step(tiny, "gym:Reacher-v5", {"bins": 12}, temperature=1.0)
    assert first.action == again.action


def test_a_bins_record_from_a_file_that_does_not_fit_is_ignored() -> None:
    good = {"bins": 2, "low": [0.0], "high": [1.0], "chosen": [1], "probabilities": [[0.25, 0.75]]}
    assert action_bins(Step(index=0, observation="", action="1", extra={"action_bins": good})) is not None
    hostile = Step(index=0, observation="", action="1", extra={"action_bins": {**good, "names": ["<img src=x>"]}})
    assert action_distribution_figure(hostile).layout.annotations[0].text == "&lt;img src=x&gt;"
    for bad in (
        {**good, "chosen": [2]},
        {**good, "probabilities": [[0.5]]},
        {**good, "low": ["<b>"]},
        {**good, "bins": 10**9},
        {**good, "probabilities": "x"},
    ):
        step = Step(index=0, observation="", action="1", extra={"action_bins": bad})
        assert action_bins(step) is None and action_distribution_figure(step) is None


def test_mujoco_reacher_forks_from_its_physics_and_draws_frames() -> None:
    env = make_env("gym:Reacher-v5", {"bins": 32})
    env.reset(seed=1)
    env.step("05 20")
    snapshot = copy.deepcopy(env.get_state())
    assert set(snapshot["physics"]) == {"qpos", "qvel", "act", "time"}
    future = ["31 00", "10 10", "16 16"]
    expected = [env.step(action)[:4] for action in future]
    fork = env_at("gym:Reacher-v5", {"bins": 32}, 1, snapshot)
    assert [fork.step(action)[:4] for action in future] == expected
    frame = fork.render()
    assert frame.shape == (480, 480, 3) and frame.std() > 10  # a drawn scene, not the blank "no frame" card
    tampered = copy.deepcopy(snapshot)
    tampered["physics"]["qpos"] = tampered["physics"]["qpos"][:-1]
    with pytest.raises(BadOption, match="qpos is not"):
        fork.restore(tampered)
    check_env(make_env("gym:Reacher-v5", {"bins": 8}), steps=8)
