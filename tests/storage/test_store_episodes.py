"""Episodes in a real SQLite file: written step by step, read back losslessly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent_studio.storage import open_store
from studio.agents.scripted import make_policy
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, JsonlSink, RunnerConfig
from studio.trace import read_episodes_jsonl
from tests.support.store_helpers import new_store, run_react, run_scripted


def test_an_episode_reads_back_exactly_as_it_was_run(store_url: str) -> None:
    store = open_store(store_url)
    episode = run_react(store, seed=2, steps=4, candidates=3)
    stored = store.episodes.get(episode.id)
    assert stored.to_dict() == episode.to_dict()  # prompt, tokens, candidates, snapshot, frame: all of it
    assert stored.steps[0].frame is not None and np.array_equal(stored.steps[0].frame, episode.steps[0].frame)
    assert [len(s.candidates) for s in stored.steps] == [2, 2, 2, 2]
    assert stored.model["id"] == "scripted" and stored.end_reason == "step limit"


def test_each_step_is_committed_as_it_happens(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    runner = EpisodeRunner(
        "gridworld", make_policy("expert"), sinks=[store.episodes.sink()], config=RunnerConfig(record_frames=False)
    )
    episode = runner.reset(seed=1)
    db_file = tmp_path / "studio.db"
    for expected in range(1, 4):
        runner.step()
        # Another connection (as another process would) sees the step at once.
        with sqlite3.connect(db_file) as other:
            assert (
                other.execute("select count(*) from steps where episode_id = ?", (episode.id,)).fetchone()[0]
                == expected
            )
            assert other.execute("select length, ended_at from episodes where id = ?", (episode.id,)).fetchone() == (
                expected,
                None,
            )
    runner.run()
    summary = store.episodes.summaries()[0]
    assert summary.success is True and summary.steps == episode.length and summary.ended_at is not None


def test_a_fork_is_stored_with_its_parent_and_copied_prefix(store_url: str) -> None:
    store = open_store(store_url)
    runner = EpisodeRunner(
        "household", make_policy("expert"), sinks=[store.episodes.sink()], config=RunnerConfig(record_frames=False)
    )
    runner.reset(seed=3)
    parent = runner.run()
    fork = runner.fork(parent, at=2)
    runner.run()
    stored = store.episodes.get(fork.id)
    assert stored.parent_id == parent.id and stored.forked_at == 2
    assert [s.action for s in stored.steps[:2]] == [s.action for s in parent.steps[:2]]
    assert stored.to_dict() == fork.to_dict()


def test_summaries_filter_by_env_policy_model_and_outcome(store_url: str) -> None:
    store = open_store(store_url)
    expert = run_scripted(store, "expert", seed=0)
    random_run = run_scripted(store, "random", seed=0, max_steps=3)
    react = run_react(store, seed=0, steps=2)
    household = run_scripted(store, "expert", seed=0, env="household")
    assert {s.id for s in store.episodes.summaries()} == {expert.id, random_run.id, react.id, household.id}
    assert {s.id for s in store.episodes.summaries(env="household")} == {household.id}
    assert {s.id for s in store.episodes.summaries(policy="random")} == {random_run.id}
    assert {s.id for s in store.episodes.summaries(model="scripted")} == {react.id}
    assert {s.id for s in store.episodes.summaries(success=True)} == {expert.id, household.id}
    assert store.episodes.summaries(since="2999-01-01") == []
    assert store.episodes.count() == {
        "episodes": 4,
        "finished_episodes": 4,
        "steps": sum(e.length for e in (expert, random_run, react, household)),
        "candidates": 4,
    }


def test_episodes_from_a_jsonl_file_can_be_stored_whole(tmp_path: Path) -> None:
    runner = EpisodeRunner("wikihop", make_policy("expert"), sinks=[JsonlSink(tmp_path / "runs.jsonl")])
    runner.reset(seed=4)
    runner.run()
    (episode,) = read_episodes_jsonl(str(tmp_path / "runs.jsonl"))
    store = new_store(tmp_path)
    assert store.episodes.save(episode).outcome == "stored"
    assert store.episodes.save(episode).outcome == "unchanged"  # saving the same again changes nothing
    assert store.episodes.get(episode.id).to_dict() == episode.to_dict()
    assert store.episodes.count()["episodes"] == 1


def test_an_unknown_episode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StudioError, match="No stored episode with id 'nope'"):
        new_store(tmp_path).episodes.get("nope")


def test_the_default_database_lives_where_the_environment_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_STUDIO_DB", str(tmp_path / "deep" / "folder" / "mine.db"))
    with open_store() as store:
        assert store.url.endswith("/deep/folder/mine.db")
    assert (tmp_path / "deep" / "folder" / "mine.db").exists()
