"""Best-of-K at test time: verifiers pick among a step's K outputs, and the oracle raises success."""

from __future__ import annotations

import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.errors import StudioError
from studio.models.scripted import ScriptedBackend
from studio.runner import EpisodeRunner, RunnerConfig
from studio.trace import Candidate, Episode, TokenInfo
from studio.verifiers import VerifiedPolicy

#: One output per gridworld action: with K = 6 every action is among the candidates at every step.
EVERY_ACTION = [
    f"Thought: try it.\nAction: {a}" for a in ("go north", "go south", "go east", "go west", "pick up key", "open door")
]


def success_rate(verifier: str, outputs: list[str], seeds: range, k: int) -> float:
    wins = 0
    for seed in seeds:
        policy = ReActPolicy(ScriptedBackend(outputs), ReActConfig(candidates=k))
        runner = EpisodeRunner("gridworld", VerifiedPolicy(policy, verifier), config=RunnerConfig(max_steps=40))
        runner.reset(seed=seed)
        episode = runner.run()
        wins += bool(episode.success)
    return wins / len(seeds)


def test_the_oracle_verifier_raises_success_over_the_first_valid_output() -> None:
    seeds = range(5)
    first = success_rate("first", EVERY_ACTION, seeds, k=6)
    oracle = success_rate("oracle", EVERY_ACTION, seeds, k=6)
    assert oracle == 1.0 and first < oracle  # measured here: first 0.0 (it always goes north)


def test_the_choice_is_recorded_and_nothing_is_lost() -> None:
    policy = ReActPolicy(ScriptedBackend(EVERY_ACTION), ReActConfig(candidates=6))
    runner = EpisodeRunner("gridworld", VerifiedPolicy(policy, "oracle"), config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    expert = runner.env.expert_action()
    step = runner.step()
    assert step.action == expert and step.extra["verifier"]["name"] == "oracle"
    texts = sorted([step.raw, *(c.raw for c in step.candidates)])
    assert texts == sorted(EVERY_ACTION)  # the policy's own pick became a candidate
    assert runner.episode.policy_config["verifier"] == "oracle"


def test_vote_takes_the_most_chosen_action() -> None:
    outputs = ["Thought: a\nAction: go west", "Thought: b\nAction: go east", "Thought: c\nAction: go east"]
    policy = ReActPolicy(ScriptedBackend(outputs), ReActConfig(candidates=3))
    runner = EpisodeRunner("gridworld", VerifiedPolicy(policy, "vote"), config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    step = runner.step()
    assert step.action == "go east" and step.extra["verifier"]["scores"] == [1.0, 2.0, 2.0]


def test_likelihood_scores_the_mean_logprob_of_what_the_model_wrote() -> None:
    verifier = VerifiedPolicy(ReActPolicy(ScriptedBackend(EVERY_ACTION)), "likelihood")
    unsure = Candidate(raw="a", action="go west", tokens=[TokenInfo(1, "a", -2.0), TokenInfo(2, "b", -4.0)])
    sure = Candidate(
        raw="b", action="go east", tokens=[TokenInfo(1, "T", -9.0, origin="forced"), TokenInfo(3, "c", -0.5)]
    )
    assert verifier.scores([unsure, sure, Candidate(raw="c")], Episode(env="gridworld", seed=0)) == [-3.0, -0.5, None]


def test_an_unknown_verifier_is_one_line() -> None:
    with pytest.raises(StudioError, match="Unknown verifier 'best'"):
        VerifiedPolicy(ReActPolicy(ScriptedBackend(EVERY_ACTION)), "best")
