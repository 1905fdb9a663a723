"""Best-of-K at test time: verifiers pick among a step's K outputs, and the oracle raises success."""

from __future__ import annotations

import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.errors import StudioError
from studio.models.scripted import ScriptedBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Candidate, Episode, TokenInfo
from studio.settings import settings_from
from studio.scaling.verifiers import MonteCarlo, VerifiedPolicy
from tests.storage.test_judge import RuleJudge

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
    assert step.action == "go east" and step.extra["verifier"]["scores"] == [2.0, 1.0, 2.0]  # taken first
    assert step.candidates[0].action == "go west" and step.extra["verifier"]["policy_pick"] == "candidate 1"


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


def first_step(verifier: str, outputs: list[str], seed: int = 0, **options) -> tuple[EpisodeRunner, object]:  # noqa: ANN003
    policy = ReActPolicy(ScriptedBackend(outputs), ReActConfig(candidates=len(outputs)))
    runner = EpisodeRunner("gridworld", VerifiedPolicy(policy, verifier, **options), config=RunnerConfig(max_steps=40))
    runner.reset(seed=seed)
    return runner, runner.step()


def test_mc_with_expert_rollouts_is_the_oracle() -> None:
    """One expert rollout after each action, discounted 0.95: the same numbers as the oracle's."""
    _runner, oracle = first_step("oracle", EVERY_ACTION)
    _runner, mc = first_step("mc", EVERY_ACTION, mc=MonteCarlo(rollout_policy="expert", rollouts=1))
    assert mc.extra["verifier"]["scores"] == pytest.approx(oracle.extra["verifier"]["scores"], abs=1e-12)
    assert mc.action == oracle.action
    described = _runner.episode.policy_config
    assert described["verifier"] == "mc" and described["mc"]["rollout_policy"] == "expert"


def test_mc_with_random_rollouts_raises_success() -> None:
    """Random rollouts (4 per action, 6 steps) tell the way to the goal on a small open grid."""
    seeds, small = range(4), {"size": 5, "difficulty": "easy"}
    rates = {}
    for name in ("first", "mc"):
        wins = 0
        for seed in seeds:
            policy = ReActPolicy(ScriptedBackend(EVERY_ACTION), ReActConfig(candidates=6))
            verifier = VerifiedPolicy(policy, name, mc=MonteCarlo(rollout_policy="random", rollouts=4, horizon=6))
            runner = EpisodeRunner("gridworld", verifier, env_options=small, config=RunnerConfig(max_steps=20))
            runner.reset(seed=seed)
            wins += bool(runner.run().success)
        rates[name] = wins / len(seeds)
    assert rates["mc"] > rates["first"]  # measured here: first 0.0, mc(random) 1.0


def test_mc_rollouts_of_the_policy_itself_act_with_its_model() -> None:
    """``policy`` rollouts: the acting model writes them (here a script that always goes east)."""
    outputs = ["Thought: a\nAction: go west", "Thought: b\nAction: go east"]
    backend = ScriptedBackend(outputs)
    policy = ReActPolicy(backend, ReActConfig(candidates=2))
    verifier = VerifiedPolicy(policy, "mc", mc=MonteCarlo(rollout_policy="policy", rollouts=2, horizon=2))
    runner = EpisodeRunner("gridworld", verifier, config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    calls = backend.calls
    step = runner.step()
    assert backend.calls > calls + 1  # the rollouts asked the same model
    assert len(step.extra["verifier"]["scores"]) == 2


def test_the_judge_verifier_takes_what_the_judge_prefers() -> None:
    judge = RuleJudge()  # prefers the output that goes east
    outputs = ["Thought: a\nAction: go west", "Thought: b\nAction: go east", "Thought: c\nAction: go north"]
    _runner, step = first_step("judge", outputs, judge=judge)
    assert step.action == "go east"
    scores = step.extra["verifier"]["scores"]
    # east wins 0.8 against each; west: 0.2 against east, 0.5 against north (the judge sees no east in either)
    assert scores == pytest.approx([0.8, 0.35, 0.35])  # in the step's order: east taken, then west and north
    assert judge.calls == 6  # three pairs, both orders
    assert _runner.episode.policy_config["judge"] == "rule-judge"


def test_one_action_among_the_outputs_runs_no_judge_and_no_rollouts() -> None:
    judge = RuleJudge()
    _runner, step = first_step("judge", ["Thought: a\nAction: go east", "Thought: b\nAction: go east"], judge=judge)
    assert judge.calls == 0 and step.action == "go east"


def test_verifier_settings_are_checked_in_one_line() -> None:
    policy = ReActPolicy(ScriptedBackend(EVERY_ACTION))
    with pytest.raises(StudioError, match="judge verifier needs a model"):
        VerifiedPolicy(policy, "judge")
    with pytest.raises(StudioError, match="Unknown mc rollout policy 'human'"):
        VerifiedPolicy(policy, "mc", mc=MonteCarlo(rollout_policy="human"))
    with pytest.raises(StudioError, match="MC rollouts per action"):
        settings_from({"mc_rollouts": 0})
    assert settings_from({"verifier": "mc", "mc_horizon": 0}).mc_horizon is None


def test_stop_during_the_mc_rollouts_drops_the_step() -> None:
    policy = ReActPolicy(ScriptedBackend(EVERY_ACTION), ReActConfig(candidates=6))
    verifier = VerifiedPolicy(policy, "mc", mc=MonteCarlo(rollout_policy="random", rollouts=4, horizon=6))
    runner = EpisodeRunner("gridworld", verifier, config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 5  # Stop pressed while the rollouts run

    decision = verifier.act(runner.episode, runner.current_observation(), should_stop)
    assert decision.interrupted and runner.episode.length == 0


def test_the_candidates_view_shows_the_verifiers_scores_escaped() -> None:
    from studio.viz.html import candidates_html

    outputs = ["Thought: a\nAction: go west", "Thought: b\nAction: go east", "Thought: c\nAction: go east"]
    _runner, step = first_step("vote", outputs)
    page = candidates_html(step)
    assert "by the <b>vote</b> verifier (the policy's own pick was candidate 1)" in page
    assert page.index("vote 2") < page.index("vote 1")  # taken (east, 2 votes) first
    step.extra["verifier"] = {"name": "<img src=x>", "scores": ["<script>", 1, 2]}  # an imported file's record
    assert "<script>" not in candidates_html(step) and "verifier" not in candidates_html(step)
    step.extra["verifier"] = {"name": "<img src=x>", "scores": [1, 2, None]}
    assert "&lt;img src=x&gt;" in candidates_html(step) and "<img" not in candidates_html(step)


def test_the_studio_session_judges_with_model_b() -> None:
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession
    from studio.settings import EpisodeSettings

    outputs = ["Thought: a\nAction: go west", "Thought: b\nAction: go east"]
    session = StudioSession(ModelRegistry(), model_a=ScriptedBackend(outputs))
    settings = EpisodeSettings(env="gridworld", seed=0, policy="react-a", candidates=2, verifier="judge")
    with pytest.raises(StudioError, match="asks model B"):
        session.reset(settings)
    session.models["B"] = RuleJudge()
    session.reset(settings)
    step = session.step()
    assert step.action == "go east" and step.extra["verifier"]["name"] == "judge"
    assert session.episode.policy_config["judge"] == "rule-judge"
