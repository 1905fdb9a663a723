"""The episode runner: reset, step, run, stop, fork, sinks, invalid actions and limits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from studio.agents.base import Decision
from studio.agents.parsing import parse_react
from studio.agents.scripted import ExpertPolicy, HumanPolicy, RandomPolicy, WaitingForHuman
from studio.envs.registry import builtin_names
from studio.errors import EpisodeOver, StudioError
from studio.episodes.runner import EpisodeRunner, JsonlSink, ListSink, RunnerConfig
from studio.trace import read_episodes_jsonl


class ScriptedTextPolicy:
    """Replays fixed ReAct texts, as a model would produce them (parsed by the core parser)."""

    name = "scripted-text"

    def __init__(self, texts: list[str], delay: float = 0.0) -> None:
        self.texts, self.delay, self.calls = list(texts), delay, 0

    def describe(self) -> dict:
        return {}

    def reset(self, env, seed) -> None:
        self.calls = 0

    def act(self, episode, observation, should_stop=lambda: False) -> Decision:
        time.sleep(self.delay)
        text = self.texts[self.calls % len(self.texts)]
        self.calls += 1
        parsed = parse_react(text)
        return Decision(action=parsed.action, raw=text, thought=parsed.thought, parse_error=parsed.error)


def test_expert_episode_records_every_step() -> None:
    sink = ListSink()
    runner = EpisodeRunner("gridworld", ExpertPolicy(), sinks=[sink])
    runner.reset(seed=1)
    episode = runner.run()
    assert episode.success and episode.end_reason == "goal reached" and episode.ended_at
    assert [s.index for s in episode.steps] == list(range(episode.length))
    assert all(s.actor == "expert" and s.valid and s.state is not None for s in episode.steps)
    assert all(s.frame is not None and s.frame.dtype == np.uint8 for s in episode.steps)
    for before, after in zip(episode.steps, episode.steps[1:]):
        assert after.observation == before.next_observation
    assert [e.kind for e in sink.events] == ["started"] + ["step"] * episode.length + ["ended"]
    assert episode.total_return == 1.0


def test_malformed_and_invalid_actions_are_recorded_and_the_episode_goes_on() -> None:
    policy = ScriptedTextPolicy(
        ["I think I will wander.", "Thought: up\nAction: fly north", "Thought: ok\nAction: go north"]
    )
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=3))
    runner.reset(seed=0)
    episode = runner.run()
    unparsed, refused, fine = episode.steps
    assert not unparsed.valid and unparsed.action is None and "no 'Action:' line" in unparsed.invalid_reason
    assert unparsed.next_observation.startswith("Invalid action:") and unparsed.raw == "I think I will wander."
    assert (
        not refused.valid and refused.action == "fly north" and "not one of the valid actions" in refused.invalid_reason
    )
    assert refused.thought == "up"
    assert fine.valid and fine.action == "go north"
    assert episode.end_reason == "step limit" and fine.truncated and episode.success is False


def test_too_many_invalid_actions_truncate_the_episode() -> None:
    runner = EpisodeRunner(
        "household", ScriptedTextPolicy(["Action: dance"]), config=RunnerConfig(max_invalid_actions=4)
    )
    runner.reset(seed=0)
    episode = runner.run()
    assert episode.length == 4 and episode.end_reason == "too many invalid actions" and episode.steps[-1].truncated


def test_stepping_a_finished_episode_is_a_user_error() -> None:
    runner = EpisodeRunner("wikihop", ExpertPolicy())
    runner.reset(seed=0)
    runner.run()
    with pytest.raises(EpisodeOver, match="over"):
        runner.step()


def test_human_takes_over_and_hands_back() -> None:
    runner = EpisodeRunner("gridworld", ExpertPolicy())
    runner.reset(seed=2)
    runner.step()
    human = runner.step(action="GO  WEST")
    assert human.actor == "human" and human.action == "go west"
    runner.set_policy(HumanPolicy())
    with pytest.raises(WaitingForHuman):
        runner.step()
    runner.policy.submit("go east")
    assert runner.step().action == "go east"
    runner.set_policy(ExpertPolicy())
    episode = runner.run()
    assert episode.success and [s.actor for s in episode.steps[:4]] == ["expert", "human", "human", "expert"]


def test_stop_interrupts_a_running_episode() -> None:
    runner = EpisodeRunner(
        "gridworld",
        ScriptedTextPolicy(["Action: go north"], delay=0.05),
        config=RunnerConfig(max_steps=1000, max_invalid_actions=1000),
    )
    runner.reset(seed=0)
    worker = threading.Thread(target=runner.run)
    worker.start()
    time.sleep(0.3)
    runner.stop()
    worker.join(timeout=5)
    assert not worker.is_alive()
    taken = runner.episode.length
    assert 1 <= taken < 50 and not runner.episode.done
    runner.step()  # the episode can go on after a stop
    assert runner.episode.length == taken + 1


def test_run_with_a_step_budget() -> None:
    runner = EpisodeRunner("household", ExpertPolicy())
    runner.reset(seed=0)
    assert runner.run(max_steps=2).length == 2
    assert runner.run(max_steps=1).length == 3


def test_fork_restores_the_state_and_shares_the_prefix() -> None:
    sink = ListSink()
    runner = EpisodeRunner("gridworld", ExpertPolicy(), sinks=[sink])
    runner.reset(seed=4)
    parent = runner.run()
    fork = runner.fork(parent, at=2)
    assert fork.id != parent.id and fork.parent_id == parent.id and fork.forked_at == 2
    assert [s.to_dict() for s in fork.steps] == [s.to_dict() for s in parent.steps[:2]]
    assert runner.observation == parent.steps[2].observation
    step = runner.step(action="go south" if parent.steps[2].action != "go south" else "go north")
    assert step.index == 2 and step.observation == parent.steps[2].observation
    assert len(parent.steps) > 3  # the parent is untouched
    fork = runner.run()
    assert fork.success
    assert [e.kind for e in sink.events].count("started") == 2


def test_fork_an_episode_read_back_from_jsonl(tmp_path) -> None:
    path = tmp_path / "episodes.jsonl"
    writer = EpisodeRunner(
        "gym:FrozenLake-v1", RandomPolicy(seed=3), env_options={"is_slippery": True}, sinks=[JsonlSink(path)]
    )
    for seed in range(3):
        writer.reset(seed=seed)
        writer.run()
    episodes = read_episodes_jsonl(str(path))
    assert [e.seed for e in episodes] == [0, 1, 2]
    longest = max(episodes, key=lambda e: e.length)
    at = longest.length - 1
    runner = EpisodeRunner("wikihop", HumanPolicy())  # a runner on another env switches over
    runner.fork(longest, at=at)
    replayed = runner.step(action=longest.steps[at].action)
    original = longest.steps[at]
    assert (replayed.next_observation, replayed.reward, replayed.terminated) == (
        original.next_observation,
        original.reward,
        original.terminated,
    )


def test_fork_out_of_range_is_a_user_error() -> None:
    runner = EpisodeRunner("gridworld", ExpertPolicy())
    runner.reset(seed=0)
    episode = runner.run()
    with pytest.raises(StudioError, match="Cannot fork at step"):
        runner.fork(episode, at=episode.length)


def test_bad_seed_is_a_user_error() -> None:
    runner = EpisodeRunner("gridworld", ExpertPolicy())
    for seed in (-3, 2**31, 2**63, "7", True):
        with pytest.raises(StudioError, match="whole number from 0 to 2147483647"):
            runner.reset(seed=seed)


def test_expert_on_an_env_without_oracle_is_a_user_error() -> None:
    runner = EpisodeRunner("gym:FrozenLake-v1", ExpertPolicy())
    with pytest.raises(StudioError, match="has no expert"):
        runner.reset(seed=0)


@pytest.mark.parametrize("env", [*builtin_names(), "gym:FrozenLake-v1", "gym:Taxi-v4"])
def test_random_policy_runs_every_environment_reproducibly(env: str) -> None:
    runs = []
    for _ in range(2):
        runner = EpisodeRunner(env, RandomPolicy(seed=9), config=RunnerConfig(max_steps=40, record_frames=False))
        runner.reset(seed=5)
        episode = runner.run()
        assert episode.done and 1 <= episode.length <= 40
        runs.append([(s.action, s.next_observation) for s in episode.steps])
    assert runs[0] == runs[1]


def test_a_fork_of_steps_with_candidates_is_stored(tmp_path) -> None:
    from agent_studio.storage import open_store
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.models.scripted import ScriptedBackend
    from tests.support.store_helpers import OUTPUTS, run_react

    with open_store(tmp_path / "forks.db") as store:
        parent = run_react(store, seed=0, steps=3, candidates=3)
        runner = EpisodeRunner(
            "gridworld", ReActPolicy(ScriptedBackend(OUTPUTS), ReActConfig(candidates=3)), sinks=[store.episodes.sink()]
        )
        fork = runner.fork(parent, 2)
        runner.step()
        stored = store.episodes.get(fork.id)
        assert [s.raw for s in stored.steps[:2]] == [s.raw for s in parent.steps[:2]]
        parent_ids = {c.id for s in parent.steps for c in s.candidates}
        assert len(stored.steps[0].candidates) == 2 and not parent_ids & {
            c.id for s in stored.steps for c in s.candidates
        }


def test_stop_during_generation_records_no_step_and_leaves_the_environment_alone() -> None:
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.errors import Interrupted
    from studio.models.scripted import ScriptedBackend

    class StoppedMidway(ScriptedBackend):
        """The user presses Stop while the model writes: the decode loop ends early, "interrupted"."""

        stop_next = True

        def generate(
            self,
            messages,
            n=1,
            sampling=None,
            stop=None,
            images=None,
            session=None,
            should_stop=None,
            assistant_prefix="",
            on_token=None,
        ):
            if self.stop_next:
                runner.stop()
            result = super().generate(
                messages, n, sampling, stop, images, session, should_stop, assistant_prefix, on_token
            )
            if should_stop is not None and should_stop():
                for generation in result.generations:
                    generation.text, generation.tokens, generation.finish_reason = (
                        generation.text[:4],
                        generation.tokens[:4],
                        "interrupted",
                    )
            return result

    backend = StoppedMidway(["Thought: east.\nAction: go east"])
    sink = ListSink()
    runner = EpisodeRunner("gridworld", ReActPolicy(backend, ReActConfig()), sinks=[sink])
    runner.reset(seed=0)
    before = runner.env.get_state()
    for attempt in (runner.step, lambda: list(runner.steps(3))):
        with pytest.raises(Interrupted, match="not stepped"):
            attempt()
        assert runner.episode.length == 0 and runner.env.get_state() == before
        assert [e.kind for e in sink.events] == ["started"]
    runner.stop()  # a Stop pressed while nothing runs does not cut the next step short
    backend.stop_next = False
    assert runner.step().action == "go east" and runner.episode.length == 1


def test_a_step_that_cannot_be_stored_stops_the_episode_without_a_gap(tmp_path, monkeypatch) -> None:
    """The database refuses a write mid-run (here: locked by another process past the busy timeout)."""
    import sqlite3

    from agent_studio.storage import db as storage_db
    from agent_studio.storage import open_store
    from studio.agents.scripted import make_policy
    from studio.errors import EpisodeOver, NotStored

    monkeypatch.setattr(storage_db, "BUSY_TIMEOUT_S", 1)
    path = tmp_path / "studio.db"
    store = open_store(path)
    runner = EpisodeRunner(
        "gridworld", make_policy("expert"), sinks=[store.episodes.sink()], config=RunnerConfig(record_frames=False)
    )
    episode = runner.reset(seed=1)
    runner.step()
    runner.step()
    before = runner.env.get_state()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(NotStored, match="stopped at step 2.*locked") as error:
        runner.step()
    assert "\n" not in str(error.value)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert episode.length == 2 and runner.env.get_state() == before  # taken back: what is shown is what is stored
    assert episode.done and episode.end_reason.startswith("stopped: step 2 could not be stored")
    with pytest.raises(EpisodeOver):
        runner.step()  # never steps on past the gap
    runner.reset(seed=2)  # the next event writes the note the locked database could not take
    stored = store.episodes.get(episode.id)
    assert [s.index for s in stored.steps] == [0, 1]
    assert stored.end_reason == episode.end_reason and stored.success is None and not stored.complete


@pytest.mark.parametrize("env", [*builtin_names(), "gym:FrozenLake-v1"])
def test_a_fork_from_a_malformed_snapshot_is_one_line(env: str) -> None:
    """A snapshot from someone else's file: wrong fields, wrong types, or a state the environment cannot hold."""
    import copy

    from studio.agents.scripted import make_policy
    from studio.errors import BadOption

    runner = EpisodeRunner(env, make_policy("random"), config=RunnerConfig(record_frames=False))
    runner.reset(seed=0)
    runner.step()
    runner.step()
    episode = copy.deepcopy(runner.episode)
    good = episode.steps[1].state
    first = next(iter(good))
    for bad in ({"x": 1}, {**good, "seed": "seven"}, {key: "zz" for key in good}, {**good, first: {"nested": [1]}}):
        episode.steps[1].state = bad
        with pytest.raises(BadOption, match="cannot be restored") as error:
            runner.fork(episode, 1)
        assert "\n" not in str(error.value)
    episode.steps[1].state = good
    assert runner.fork(episode, 1).length == 1  # the good one still forks


def test_environment_info_is_kept_as_standard_json() -> None:
    """NaN and infinities (which PostgreSQL's JSON refuses) and objects become text; the rest stays."""
    import math

    from studio.episodes.runner import _json_safe

    assert _json_safe({"a": math.nan, "b": [1, math.inf], "c": 1.5, 3: object}) == {
        "a": "nan",
        "b": "[1, inf]",
        "c": 1.5,
        "3": repr(object),
    }


def test_a_sink_that_fails_after_the_step_was_stored_keeps_the_step() -> None:
    """Only a sink that could not keep the step (NotStored) stops the episode; another one's error comes after."""
    from studio.agents.scripted import make_policy
    from studio.errors import StudioError

    class Grumpy:
        def handle(self, event) -> None:
            if event.kind == "step":
                raise StudioError("Step stored, but its pairs could not be queued.")

    kept = ListSink()
    runner = EpisodeRunner(
        "gridworld", make_policy("expert"), sinks=[kept, Grumpy()], config=RunnerConfig(record_frames=False)
    )
    runner.reset(seed=0)
    with pytest.raises(StudioError, match="pairs could not be queued"):
        runner.step()
    assert runner.episode.length == 1 and not runner.episode.done  # the step stands
    assert [e.kind for e in kept.events] == ["started", "step"]
