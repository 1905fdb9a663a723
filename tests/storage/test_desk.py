"""The annotation desk (one annotator's walk through the queue) and candidate pairs queued while stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_studio.storage import open_store
from agent_studio.storage.desk import AnnotationDesk
from agent_studio.storage.preferences import CandidatePairSink
from studio.agents.react import ReActConfig, ReActPolicy
from studio.errors import StudioError
from studio.models.scripted import ScriptedBackend
from studio.episodes.runner import EpisodeRunner
from tests.support.store_helpers import OUTPUTS


def stepped_store(tmp_path: Path, steps: int = 2):
    store = open_store(tmp_path / "s.db")
    runner = EpisodeRunner(
        "gridworld",
        ReActPolicy(ScriptedBackend(OUTPUTS), ReActConfig(candidates=3)),
        sinks=[store.episodes.sink(), CandidatePairSink(store.preferences)],
    )
    runner.reset(seed=0)
    for expected in range(1, steps + 1):
        runner.step()
        assert len(store.preferences.pairs()) == 3 * expected  # queued as each step is stored
    return store


def test_walk_judge_skip_and_undo(tmp_path: Path) -> None:
    desk = AnnotationDesk(stepped_store(tmp_path))
    with pytest.raises(StudioError, match="Type your name"):
        desk.next()
    desk.configure("ada")
    first = desk.next()
    assert desk.next() is first  # stays on screen until judged or skipped
    record = desk.judge("left", rationale="why", tags=["correct"], confidence="high")
    assert record.confidence == 1.0 and record.seconds is not None and record.seconds >= 0
    second = desk.next()
    assert second.pair_id != first.pair_id
    desk.skip()
    third = desk.next()
    assert third.pair_id not in {first.pair_id, second.pair_id}
    assert desk.progress() == (1, 6)
    assert desk.undo() == first.pair_id and desk.item.pair_id == first.pair_id and desk.progress() == (0, 6)
    desk.configure("ada", kind="trajectory")  # new filters start over
    assert desk.next() is None and desk.skipped == set()


def test_two_desks_on_one_store_do_not_share_state(tmp_path: Path) -> None:
    store = stepped_store(tmp_path, steps=1)
    ada, bob = AnnotationDesk(store), AnnotationDesk(store)
    ada.configure("ada")
    bob.configure("bob")
    shown = ada.next()
    assert bob.next().pair_id == shown.pair_id  # the same stable order...
    ada.judge("right")
    assert bob.next().pair_id == shown.pair_id  # ...but bob's queue is his own
    assert ada.progress() == (1, 3) and bob.progress() == (0, 3)


def test_opening_the_tab_keeps_the_name_submitted_meanwhile(tmp_path: Path) -> None:
    """The tab's refresh and a submitted name run at once in a browser: the refresh shows the
    desk as it is, never an annotator (or empty queue) from the fields as they were when the tab opened."""
    from agent_studio.components.annotate_panel import refresh

    desk = AnnotationDesk(stepped_store(tmp_path, steps=1))
    desk.configure("ada")  # the name submitted while the tab's refresh was on its way
    progress = refresh(desk)[1]
    assert "ada: 0 judged of 3 pairs" in progress
    assert desk.lock.acquire(blocking=False)  # every handler releases the desk
    desk.lock.release()


def test_a_pair_whose_step_kept_no_frame_shows_it_redrawn_from_the_snapshot(tmp_path: Path) -> None:
    import numpy as np

    from agent_studio.components.annotate_panel import render_pair
    from studio.envs.registry import env_at
    from tests.support.store_helpers import run_react

    with open_store(tmp_path / "s.db") as store:
        episode = run_react(store, seed=2, steps=2, candidates=3, frames=False)  # as the CLI runs without --frames
        store.preferences.pairs_from_candidates()
        desk = AnnotationDesk(store)
        desk.configure("ada")
        item = desk.next()
        assert item is not None and item.frame is None and item.context == (episode.id, item.step_index)
        step = episode.steps[item.step_index]
        drawn = env_at(episode.env, episode.env_options, episode.seed, step.state).render()
        assert np.array_equal(store.episodes.step_frame(*item.context), drawn)
        assert np.array_equal(render_pair(desk)[2], drawn)  # what the Pairs view shows beside the context
        assert store.episodes.step_frame(episode.id, 99) is None


def test_a_desk_in_a_campaign_walks_only_ones_own_items(tmp_path: Path) -> None:
    store = stepped_store(tmp_path, steps=2)  # 6 pairs
    store.campaigns.create(
        "c", overlap=1, annotators=["ada", "bob"], taxonomy=["loop"], filters={"kind": "step"}, limit=4
    )
    assert len(store.campaigns.pair_ids("c")) == 4  # --limit
    desk = AnnotationDesk(store)
    desk.configure("ada", campaign="c")
    assert desk.tags == ("loop",)  # the campaign's taxonomy
    mine = [i.pair_id for i in store.campaigns.queue("c", "ada", limit=10)]
    assert desk.progress() == (0, len(mine)) == (0, 2)
    seen = []
    while (item := desk.next()) is not None:
        seen.append(item.pair_id)
        desk.judge("left", tags=["loop"])
    assert seen == mine and desk.progress() == (2, 2)
    assert desk.undo() == mine[-1] and desk.progress() == (1, 2)
    desk.judge("right")
    # A judgement made outside the campaign is not undone from inside it.
    free = next(p.id for p in store.preferences.pairs() if p.id not in store.campaigns.pair_ids("c"))
    store.preferences.annotate(free, "ada", "tie")
    with pytest.raises(StudioError, match="not in campaign c"):
        desk.undo()
    assert len(store.preferences.annotations(annotator="ada")) == 3
    with pytest.raises(StudioError, match="No campaign named"):
        desk.configure("ada", campaign="nope")
