"""Monte Carlo step values: exact on cases with a known answer, reproducible, and honest about errors."""

from __future__ import annotations

import json
import math

import pytest

from studio.agents.scripted import make_policy
from studio.envs import make_env
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Candidate
from studio.scaling.values import StepValue, estimate_step_values, mean_and_stderr, rollout_policy_factory


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
        episode, 2, lambda i, _b: make_policy("expert"), rollout_policy="expert", rollouts=3, horizon=None
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
        episode, 2, lambda i, _b: make_policy("expert"), rollout_policy="expert", rollouts=1, horizon=horizon
    )
    assert [v.q for v in short] == [1.0 if taken_left <= horizon else 0.0, 1.0 if away_left <= horizon else 0.0]
    assert short[0].settings == f"expert-m1-h{horizon}"


def test_random_rollouts_are_reproducible_from_their_seeds_and_differ_between_rollouts() -> None:
    episode = expert_episode()
    run = lambda seed: estimate_step_values(  # noqa: E731
        episode,
        1,
        lambda i, _b: make_policy("random", seed=seed + i),
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
        episode, 1, lambda i, _b: make_policy("expert"), rollout_policy="expert", rollouts=1, outputs=["candidate 1"]
    )
    assert values[0].valid is False and values[0].q == 1.0  # the expert still reaches the goal afterwards


def test_errors_are_one_line() -> None:
    episode = expert_episode()
    policy = lambda i, _b: make_policy("expert")  # noqa: E731
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


def stored_episode_with_candidates(store):
    """An expert gridworld episode whose step 2 also has a candidate walking away, stored."""
    episode = expert_episode(steps=4)
    step = episode.steps[2]
    away = next(a for a in ("go north", "go south", "go west", "go east") if a != step.action)
    with_candidate(episode, 2, away)
    with_candidate(episode, 2, step.action)  # the same action as taken: never paired against it
    store.episodes.save(episode)
    return episode, away


def test_values_are_stored_replaced_and_read_back(store) -> None:
    episode, _away = stored_episode_with_candidates(store)
    expert = lambda i, _b: make_policy("expert")  # noqa: E731
    values = estimate_step_values(episode, 2, expert, rollout_policy="expert", rollouts=2, horizon=3)
    assert store.preferences.save_values(values) == 3
    assert store.preferences.save_values(values) == 3  # the same settings again: replaced, not added
    back = store.preferences.step_values(episode.id)
    assert [v.to_dict() for v in back] == [v.to_dict() for v in values]
    other = estimate_step_values(episode, 2, expert, rollout_policy="expert", rollouts=1, horizon=None)
    store.preferences.save_values(other)
    assert len(store.preferences.step_values(episode.id, 2)) == 6
    assert [v.output for v in store.preferences.step_values(episode.id, 2, settings="expert-m1-end")] == [
        "taken",
        "candidate 1",
        "candidate 2",
    ]
    with pytest.raises(StudioError, match="No stored step 9"):
        store.preferences.save_values([StepValue(**{**values[0].to_dict(), "step_index": 9})])


def test_the_latest_estimate_of_a_step_is_the_one_saved_last(store) -> None:
    """What the Values view shows for a selected step that holds estimates under several settings."""
    episode, _away = stored_episode_with_candidates(store)
    expert = lambda i, _b: make_policy("expert")  # noqa: E731
    first = estimate_step_values(episode, 2, expert, rollout_policy="expert", rollouts=2, horizon=3)
    second = estimate_step_values(episode, 2, expert, rollout_policy="expert", rollouts=1, horizon=None)
    assert store.preferences.latest_step_values(episode.id, 2) == []
    store.preferences.save_values(first)
    store.preferences.save_values(second)
    assert {v.settings for v in store.preferences.latest_step_values(episode.id, 2)} == {"expert-m1-end"}
    store.preferences.save_values(first)  # estimated again: now the latest
    latest = store.preferences.latest_step_values(episode.id, 2)
    assert [v.to_dict() for v in latest] == [v.to_dict() for v in first]
    assert store.preferences.latest_step_values(episode.id, 1) == []  # another step: none


def test_pairs_from_values_only_above_the_gap_and_labels_flow_into_exports(store, tmp_path) -> None:
    from agent_studio.storage.export import export

    episode, away = stored_episode_with_candidates(store)
    taken_left = plan_length(episode, 2, episode.steps[2].action)[1]
    away_left = plan_length(episode, 2, away)[1]
    horizon = min(taken_left, away_left)  # the goal is within reach of exactly one of the two actions
    values = estimate_step_values(
        episode, 2, lambda i, _b: make_policy("expert"), rollout_policy="expert", rollouts=2, horizon=horizon
    )
    store.preferences.save_values(values)
    assert store.preferences.pairs_from_values(min_gap=1.5).created == 0  # the gap is 1: below 1.5
    assert store.preferences.pairs_from_values(min_rollouts=3).created == 0  # too few rollouts
    made = store.preferences.pairs_from_values(min_gap=1.0, min_rollouts=2)
    assert made.created == 1
    (pair,) = store.preferences.pairs(source="mc")
    best = "taken" if taken_left <= horizon else "candidate 1"
    assert pair.kind == "step" and pair.step_index == 2
    assert (pair.left.candidate_id is None) == (best == "taken")
    (verdict,) = store.preferences.annotations(pair.id)  # the values' own judgement, to be verified
    assert verdict.annotator == f"mc:expert-m2-h{horizon}" and verdict.choice == "left"  # stored best-first
    again = store.preferences.pairs_from_values(min_gap=1.0)
    assert (again.created, again.already_there, again.judged) == (0, 1, 1)
    assert len(store.preferences.annotations(pair.id)) == 1  # judged again: replaced, not added

    # MC labels: the taken output's success fraction against the threshold, as annotator mc:SETTINGS.
    assert store.preferences.labels_from_values(threshold=0.5) == 1
    (label,) = store.preferences.step_labels(episode.id)
    assert label.annotator == f"mc:expert-m2-h{horizon}" and label.label == ("good" if best == "taken" else "bad")
    export(store, "kto", tmp_path / "kto.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "kto.jsonl").read_text().splitlines()]
    assert [row["label"] for row in rows if row["source"] == f"step:{episode.id}:2"] == [best == "taken"]
    with pytest.raises(StudioError, match="threshold"):
        store.preferences.labels_from_values(threshold=1.5)

    # People verify: the Overview's own lines say how often MC agrees with them.
    store.preferences.annotate(pair.id, "ana", "left", as_shown=False)  # agrees with mc (stored best-first)
    store.preferences.label_step(episode.id, 2, "ana", "bad" if best == "taken" else "good")  # disagrees
    machines = store.preferences.stats()["machines_vs_people"]
    assert machines["mc pairs"] == {"items": 1, "comparisons": 1, "percent_agreement": 1.0, "cohen_kappa": 1.0}
    assert machines["mc step labels"]["percent_agreement"] == 0.0 and machines["judge pairs"]["comparisons"] == 0
    from agent_studio.components.annotate_panel import overview_html

    page = overview_html(store)
    assert "mc pairs vs people</th><td>100.0% on 1 pair (1 comparison)" in page and "mc step labels vs people" in page
    assert "judge pairs vs people" not in page  # no judge verdicts: no line


def test_the_values_command_estimates_stores_and_labels(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    db = str(tmp_path / "v.db")
    cli = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "app.py", *args], cwd=root, capture_output=True, text=True, timeout=120
    )
    ran = cli("run", "--env", "gridworld", "--policy", "expert", "--db", db, "--json")
    episode_id = json.loads(ran.stdout)["episode_id"]
    result = cli("values", "--db", db, "--episode", episode_id, "--step", "1", "--rollouts", "2", "--mc-labels", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("step 1 taken") and "Q=+1.000 ± 0.000  success 2/2" in result.stdout
    assert "labelled 1 steps as mc:expert-m2-end" in result.stderr
    from agent_studio.storage import open_store

    with open_store(db) as store:
        assert [v.q for v in store.preferences.step_values(episode_id)] == [1.0]
        assert store.preferences.step_labels(episode_id)[0].label == "good"
    missing = cli("values", "--db", db, "--episode", episode_id, "--step", "99")
    assert missing.returncode == 2 and missing.stderr.startswith("error: Episode") and missing.stderr.count("\n") == 1


def test_a_discount_prefers_the_shorter_way_to_the_goal() -> None:
    episode = expert_episode()
    step = episode.steps[2]
    away = next(a for a in ("go north", "go south", "go west", "go east") if a != step.action)
    with_candidate(episode, 2, away)
    values = estimate_step_values(
        episode, 2, lambda i, _b: make_policy("expert"), rollout_policy="expert", rollouts=1, discount=0.9
    )
    for value, action in zip(values, (step.action, away)):
        reward, remaining = plan_length(episode, 2, action)
        # The goal's reward of 1 comes `remaining` steps after the action: Q = 0.9 ** remaining.
        assert value.q == pytest.approx(reward if remaining == 0 else 0.9**remaining)
    assert values[0].settings == "expert-m1-end-g0.9"
    with pytest.raises(StudioError, match="discount"):
        estimate_step_values(episode, 2, lambda i, _b: make_policy("expert"), rollout_policy="expert", discount=0)


def test_the_sessions_values_take_hostile_widget_values_in_one_line() -> None:
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession
    from studio.settings import EpisodeSettings

    session = StudioSession(ModelRegistry())
    session.reset(EpisodeSettings(env="gridworld", seed=0, policy="expert"))
    session.step()
    for args, message in [
        ((0, "expert", 1e300), "Rollouts"),
        ((0, "expert", float("nan")), "Rollouts"),
        ((0, "expert", 2, -1), "horizon"),
        ((0, "expert", 2, 0, None, float("nan")), "discount"),
        ((0, "expert", 2, 0, None, 0), "discount"),
        ((0, "<script>", 2), "Unknown rollout policy"),
        ((0, "model B", 2), "not loaded"),
        ((7, "expert", 2), "Select a step"),
    ]:
        with pytest.raises(StudioError, match=message) as caught:
            session.estimate_values(*args)
        assert "\n" not in str(caught.value)
    assert session.estimate_values(0, "expert", 2)[0].q == 1.0


def test_stop_ends_a_value_estimate_and_keeps_nothing() -> None:
    """The Values view's Stop: no rollout starts after it, the estimate ends in one line, and the
    next estimate runs again (the flag is the session's, cleared at each start)."""
    from studio.models.registry import ModelRegistry
    from studio.session import StudioSession
    from studio.settings import EpisodeSettings

    session = StudioSession(ModelRegistry())
    session.reset(EpisodeSettings(env="gridworld", seed=0, policy="expert"))
    session.step()
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            session.stop_values()  # what the Stop button calls, from another thread in the app

    with pytest.raises(StudioError, match=r"Stopped after 2 of \d+ rollouts: no values were kept\."):
        session.estimate_values(0, "random", 8, 0, progress)
    assert seen == [1, 2]
    assert len(session.estimate_values(0, "random", 2)) >= 1


def test_stop_inside_a_long_rollout_ends_it_between_steps() -> None:
    runner = EpisodeRunner("gridworld", make_policy("expert"))
    runner.reset(seed=0)
    episode = runner.run()
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 3  # the job's own check, then two steps of the rollout

    with pytest.raises(StudioError, match="Stopped after 0 of 1 rollouts"):
        estimate_step_values(episode, 0, lambda i, _b: make_policy("random", seed=i), rollout_policy="random",
                             rollouts=1, should_stop=should_stop)  # fmt: skip
    assert len(asked) == 4


def test_rollouts_end_at_the_episodes_own_step_limit() -> None:
    """A random walk with a 5-step limit: after step 3's own action the expert has one step left (step 4),
    not the environment's 100, so the goal is out of reach and Q is 0 (the rollouts used the
    environment's limit from the episode's start, whatever the episode's own)."""
    runner = EpisodeRunner("gridworld", make_policy("random"), config=RunnerConfig(max_steps=5))
    runner.reset(seed=0)
    walk = runner.run()
    assert walk.max_steps == 5 and walk.length == 5 and not walk.success
    expert = lambda index, _backend: make_policy("expert")  # noqa: E731
    (value,) = estimate_step_values(walk, 3, expert, rollout_policy="expert", rollouts=1)
    independent = plan_length(walk, 3, walk.steps[3].action)
    assert independent[1] >= 2  # the goal is more than the one step that is left away
    assert (value.q, value.hard, value.lengths) == (0.0, False, [1]) and value.settings == "expert-m1-end"
    # Asked for the environment's own limit instead, the same rollout reaches the goal.
    (unlimited,) = estimate_step_values(walk, 3, expert, rollout_policy="expert", rollouts=1, max_steps=100)
    assert unlimited.hard and unlimited.lengths == [independent[1]] and unlimited.settings == "expert-m1-end-s100"


def test_the_values_command_checks_every_argument_before_it_computes(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from agent_studio.storage import open_store

    root = Path(__file__).resolve().parents[2]
    db = str(tmp_path / "v.db")
    cli = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "app.py", *args], cwd=root, capture_output=True, text=True, timeout=120
    )
    episode_id = json.loads(cli("run", "--env", "gridworld", "--policy", "expert", "--db", db, "--json").stdout)[
        "episode_id"
    ]
    for args, words in [
        (["--mc-labels", "2"], "--mc-labels is a fraction of rollouts from 0 to 1, got 2."),
        (["--rollouts", "0"], "--rollouts must be from 1 to 1000"),
        (["--horizon", "-1"], "--horizon must be 0 or more"),
        (["--discount", "0"], "--discount must be in (0, 1]"),
        (["--step", "-3"], "has no step -3"),
    ]:
        refused = cli("values", "--db", db, "--episode", episode_id, *args)
        assert refused.returncode == 2 and words in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    with open_store(db) as store:
        assert store.preferences.step_values(episode_id) == [] and store.preferences.step_labels(episode_id) == []
    limited = cli("values", "--db", db, "--episode", episode_id, "--step", "0", "--rollouts", "1", "--max-steps", "3")
    assert limited.returncode == 0 and "Q=+0.000" in limited.stdout  # three steps cannot reach this goal


def test_the_loops_value_stage_values_each_step_with_two_actions_once(tmp_path) -> None:
    """``loop``'s stage 2a: every step whose K outputs hold two or more actions gets its values (the same
    as estimating that step alone), stored once; run again, it values nothing more."""
    import argparse
    import json as json_module

    from agent_studio.cli.loop_stages import value_steps
    from agent_studio.storage import open_store
    from studio.evaluation.sweep import SweepSpec, run_sweep
    from studio.models.registry import ModelRegistry
    from tests.core.test_verifiers import EVERY_ACTION

    outputs = tmp_path / "every.json"
    outputs.write_text(json_module.dumps({"outputs": EVERY_ACTION}))
    spec = SweepSpec.build([f"scripted:{outputs}"], ["gridworld"], "0-1", {"max_steps": 2, "candidates": 3})
    args = argparse.Namespace(rollout_policy="expert", rollouts=2, horizon=4, seed=0, discount=0.9)
    with open_store(tmp_path / "loop.db") as store:
        record = store.sweeps.create(spec)
        run_sweep(spec, record.id, [store.episodes.sink()], ModelRegistry().load)
        ids = [e.id for e in store.sweeps.episodes_of(record.id)]
        name = value_steps(args, store, ids)
        assert name == "expert-m2-h4-g0.9"
        episodes = [store.episodes.get(i) for i in ids]
        wanted = [
            (e, s.index) for e in episodes for s in e.steps if len({o.action for o in s.outputs() if o.action}) > 1
        ]
        assert wanted
        for episode, index in wanted:
            stored = store.preferences.step_values(episode.id, index, name)
            alone = estimate_step_values(episode, index, rollout_policy_factory("expert", 0), rollout_policy="expert",
                                         rollouts=2, horizon=4, seed=0, discount=0.9)  # fmt: skip
            assert sorted((v.output, v.q) for v in stored) == sorted((v.output, v.q) for v in alone)
        assert value_steps(args, store, ids) == name  # again: everything is stored already
