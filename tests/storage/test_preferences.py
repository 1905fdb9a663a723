"""Pairs, the blind annotation queue, judgements, undo and step labels, on a real SQLite file."""

from __future__ import annotations


import pytest

from agent_studio.storage import Store
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.agents.scripted import make_policy
from tests.support.store_helpers import run_react, run_scripted


def test_candidates_make_every_two_way_pair_once(store: Store) -> None:
    episode = run_react(store, seed=0, steps=3, candidates=3)
    made = store.preferences.pairs_from_candidates()
    assert made.to_dict() == {"created": 9, "already_there": 0, "identical": 0}  # 3 steps x C(3, 2)
    again = store.preferences.pairs_from_candidates()
    assert again.to_dict() == {"created": 0, "already_there": 9, "identical": 0}
    pairs = store.preferences.pairs()
    assert {p.step_index for p in pairs} == {0, 1, 2} and all(
        p.kind == "step" and p.source == "candidates" for p in pairs
    )
    step0 = [p for p in pairs if p.step_index == 0]
    sides = {s.candidate_id for p in step0 for s in (p.left, p.right)}
    assert sides == {None, *(c.id for c in episode.steps[0].candidates)}  # the taken output and both candidates


def test_identical_outputs_make_no_pair(store: Store) -> None:
    same = ["Thought: east.\nAction: go east"]
    run_react(store, seed=0, steps=2, candidates=3, outputs=same)
    assert store.preferences.pairs_from_candidates().to_dict() == {"created": 0, "already_there": 0, "identical": 6}
    run_react(
        store, seed=1, steps=1, candidates=2, outputs=["Thought: a.\nAction: go east", "Thought: b.\nAction: go east"]
    )
    assert store.preferences.pairs_from_candidates(different_actions=True).created == 0
    assert store.preferences.pairs_from_candidates().created == 1


def test_filters_on_environment_and_episode(store: Store) -> None:
    grid = run_react(store, seed=0, steps=1)
    run_react(
        store,
        seed=0,
        steps=1,
        env="household",
        outputs=["Thought: a.\nAction: look", "Thought: b.\nAction: inventory", "Thought: c.\nAction: fly"],
    )
    assert store.preferences.pairs_from_candidates(episode_ids=[grid.id]).created == 3
    assert store.preferences.pairs_from_candidates(env="household").created == 3
    assert {p.env for p in store.preferences.pairs()} == {"gridworld", "household"}
    assert len(store.preferences.pairs(env="household")) == 3


def test_episodes_on_the_same_task_make_trajectory_pairs(store: Store) -> None:
    expert = run_scripted(store, "expert", seed=3)
    random_run = run_scripted(store, "random", seed=3, max_steps=4)
    run_scripted(store, "expert", seed=4)  # another seed: no partner
    runner = EpisodeRunner(
        "gridworld", make_policy("random"), sinks=[store.episodes.sink()], config=RunnerConfig(max_steps=6)
    )
    runner.reset(seed=3)
    unfinished = runner.step()  # not finished: not paired
    fork = runner.fork(expert, at=1)
    runner.run()  # a fork: not paired automatically
    made = store.preferences.pairs_from_episodes()
    assert made.created == 1
    (pair,) = store.preferences.pairs(kind="trajectory")
    assert {pair.left.episode_id, pair.right.episode_id} == {expert.id, random_run.id} and pair.step_index is None
    assert unfinished is not None and fork.id not in {pair.left.episode_id, pair.right.episode_id}


def test_identical_trajectories_are_not_queued(store: Store) -> None:
    first = run_scripted(store, "expert", seed=4)
    again = run_scripted(store, "expert", seed=4)  # the expert is deterministic: the same outputs, step for step
    other = run_scripted(store, "random", seed=4, max_steps=5)
    made = store.preferences.pairs_from_episodes()
    assert (made.created, made.identical) == (2, 1)
    sides = {frozenset((p.left.episode_id, p.right.episode_id)) for p in store.preferences.pairs(kind="trajectory")}
    assert sides == {frozenset((first.id, other.id)), frozenset((again.id, other.id))}
    with pytest.raises(StudioError, match="same outputs at every step"):
        store.preferences.add_pair(first.id, again.id)


def test_pairs_by_hand(store: Store) -> None:
    first = run_react(store, seed=0, steps=2)
    second = run_scripted(store, "expert", seed=0)
    other_env = run_scripted(store, "expert", seed=0, env="household")
    trajectory = store.preferences.add_pair(first.id, second.id)
    assert trajectory.kind == "trajectory" and trajectory.source == "manual"
    assert store.preferences.add_pair(second.id, first.id).id == trajectory.id  # the same pair, not a duplicate
    candidate = first.steps[1].candidates[0].id
    step_pair = store.preferences.add_pair(f"{first.id}:1", candidate)
    assert step_pair.kind == "step" and step_pair.step_index == 1
    assert step_pair.right.candidate_id == candidate or step_pair.left.candidate_id == candidate
    with pytest.raises(StudioError, match="different environments"):
        store.preferences.add_pair(first.id, other_env.id)
    with pytest.raises(StudioError, match="not one of each"):
        store.preferences.add_pair(first.id, candidate)
    with pytest.raises(StudioError, match="different steps"):
        store.preferences.add_pair(f"{first.id}:0", candidate)
    with pytest.raises(StudioError, match="No stored episode or candidate"):
        store.preferences.add_pair("nope", candidate)
    with pytest.raises(StudioError, match="same thing"):
        store.preferences.add_pair(candidate, candidate)


def test_the_queue_is_blind_stable_and_per_annotator(store: Store) -> None:
    run_react(store, seed=0, steps=3)
    store.preferences.pairs_from_candidates()
    first_page = store.preferences.queue("ada", limit=4)
    assert [i.pair_id for i in first_page] == [i.pair_id for i in store.preferences.queue("ada", limit=4)]  # stable
    assert [i.pair_id for i in first_page] == [i.pair_id for i in store.preferences.queue("bob", limit=4)]
    item = first_page[0]
    pair = store.preferences.pair(item.pair_id)
    assert item.step_index == pair.step_index and len(item.history) == pair.step_index
    assert all(
        step.actor == "" and step.prompt is None and step.extra == {} for step in item.history
    )  # nothing names the policy
    assert item.frame is not None and item.instruction.startswith("You are @")
    # The store remembers the side mapping: "left as shown" is stored as the pair's real side.
    record = store.preferences.annotate(item.pair_id, "ada", "left")
    assert record.choice == ("right" if item.swapped else "left")
    assert item.pair_id not in [i.pair_id for i in store.preferences.queue("ada", limit=20)]
    assert item.pair_id in [i.pair_id for i in store.preferences.queue("bob", limit=20)]
    assert store.preferences.progress("ada") == (1, 9) and store.preferences.progress("bob") == (0, 9)
    assert store.preferences.progress("ada", kind="trajectory") == (0, 0)


def test_swapping_is_random_per_pair(store: Store) -> None:
    for seed in range(4):
        run_react(store, seed=seed, steps=3)
    store.preferences.pairs_from_candidates()
    swapped = [p.swapped for p in store.preferences.pairs()]
    assert len(swapped) == 36 and 0 < sum(swapped) < 36
    shown = store.preferences.queue("ada", limit=36)
    for item in shown:
        pair = store.preferences.pair(item.pair_id)
        assert item.swapped == pair.swapped


def test_judging_again_updates_and_undo_restores(store: Store) -> None:
    run_react(store, seed=0, steps=1)
    store.preferences.pairs_from_candidates()
    first, second = store.preferences.queue("ada", limit=2)
    store.preferences.annotate(
        first.pair_id,
        "ada",
        "left",
        rationale="<script>alert(1)</script> clearer",
        tags=["correct"],
        confidence=0.9,
        seconds=3.5,
        as_shown=False,
    )
    store.preferences.annotate(second.pair_id, "ada", "tie", as_shown=False)
    store.preferences.annotate(first.pair_id, "ada", "both-bad", as_shown=False)  # a re-submit updates
    records = store.preferences.annotations(annotator="ada")
    assert [(r.pair_id, r.choice) for r in records] == [(second.pair_id, "tie"), (first.pair_id, "both_bad")]
    assert store.preferences.undo("ada") == first.pair_id  # restores the earlier judgement
    (restored,) = store.preferences.annotations(pair_id=first.pair_id)
    assert (restored.choice, restored.rationale, restored.tags, restored.confidence) == (
        "left",
        "<script>alert(1)</script> clearer",
        ["correct"],
        0.9,
    )
    # Undo walks back in time: next the judgement of the second pair, then the first one's.
    assert store.preferences.undo("ada") == second.pair_id
    assert [r.pair_id for r in store.preferences.annotations()] == [first.pair_id]
    assert store.preferences.undo("ada") == first.pair_id
    assert store.preferences.annotations() == [] and store.preferences.undo("ada") is None
    assert store.preferences.progress("ada") == (0, 3)


def test_judging_errors_are_clear(store: Store) -> None:
    run_react(store, seed=0, steps=1)
    store.preferences.pairs_from_candidates()
    pair_id = store.preferences.pairs()[0].id
    with pytest.raises(StudioError, match="Unknown choice 'maybe'"):
        store.preferences.annotate(pair_id, "ada", "maybe")
    with pytest.raises(StudioError, match="annotator name is needed"):
        store.preferences.annotate(pair_id, "   ", "left")
    with pytest.raises(StudioError, match="No pair with id"):
        store.preferences.annotate("nope", "ada", "left")
    with pytest.raises(StudioError, match="Confidence must be between 0 and 1"):
        store.preferences.annotate(pair_id, "ada", "left", confidence=3)
    with pytest.raises(StudioError, match="Unknown pair kind"):
        store.preferences.queue("ada", kind="chapter")
    assert store.preferences.annotations() == []


def test_step_labels_upsert_per_annotator(store: Store) -> None:
    episode = run_scripted(store, "expert", seed=0)
    store.preferences.label_step(episode.id, 0, "ada", "good")
    store.preferences.label_step(episode.id, 0, "ada", "Redundant", note="loops back")
    store.preferences.label_step(episode.id, 0, "bob", "neutral")
    labels = store.preferences.step_labels(episode.id)
    assert [(l.annotator, l.label, l.note) for l in labels] == [
        ("ada", "redundant", "loops back"),
        ("bob", "neutral", ""),
    ]
    with pytest.raises(StudioError, match="Unknown step label"):
        store.preferences.label_step(episode.id, 0, "ada", "meh")
    with pytest.raises(StudioError, match="No stored step 99"):
        store.preferences.label_step(episode.id, 99, "ada", "good")


def test_stats_count_and_measure_agreement(store: Store) -> None:
    episode = run_react(store, seed=0, steps=2)
    store.preferences.pairs_from_candidates()
    pairs = store.preferences.pairs()
    for pair, (a, b) in zip(pairs, [("left", "left"), ("right", "left"), ("tie", "tie"), ("left", "left")]):
        store.preferences.annotate(pair.id, "ada", a, as_shown=False)
        store.preferences.annotate(pair.id, "bob", b, as_shown=False)
    stats = store.preferences.stats()
    assert stats["pairs"] == 6 and stats["annotations"] == 8
    assert stats["annotations_by_annotator"] == {"ada": 4, "bob": 4}
    assert stats["choices"] == {"left": 5, "right": 1, "tie": 2, "both_bad": 0}
    assert stats["agreement"]["percent_agreement"] == pytest.approx(0.75)
    # ada: L R T L, bob: L L T L -> p_o 0.75, p_e (2*3 + 1*0 + 1*1)/16 = 7/16 -> kappa 5/9
    assert stats["agreement"]["cohen_kappa"] == pytest.approx(5 / 9)
    # 8 labels (L 5, R 1, T 2), 2 disagreeing ordered pairs: alpha = 1 - 7 * 2 / (2 * (5*1 + 5*2 + 1*2)).
    assert stats["agreement"]["krippendorff_alpha"] == pytest.approx(1 - 7 * 2 / 34)
    for index, (a, b, c) in enumerate([("good", "good", "bad"), ("bad", "bad", "bad")]):
        for name, label in (("ada", a), ("bob", b), ("cy", c)):
            store.preferences.label_step(episode.id, index, name, label)
    labels = store.preferences.stats()["label_agreement"]
    assert labels["annotators"] == ["ada", "bob", "cy"] and labels["items_with_two_or_more"] == 2
    assert labels["percent_agreement"] == pytest.approx((1 / 3 + 1) / 2)
    assert labels["krippendorff_alpha"] == pytest.approx(1 - 5 * 2 / (2 * 4 * 2))


def test_a_judgement_that_races_another_writer_for_the_same_row_is_kept(store: Store) -> None:
    """Another process inserts ada's judgement of the pair, uncommitted, while ada judges it here.

    PostgreSQL then fails our insert with a unique violation (SQLite makes us wait instead):
    the store must run the judgement again, as an update, and lose nothing.
    """
    import threading
    import time

    from sqlalchemy import insert, select

    from agent_studio.storage.db import Database
    from agent_studio.storage.orm import AnnotationRow, AnnotatorRow

    run_react(store, seed=0, steps=1, candidates=3)
    store.preferences.pairs_from_candidates()
    first, second = store.preferences.pairs()[:2]
    store.preferences.annotate(second.id, "ada", "tie")  # ada exists
    other = Database(store.db.url)
    results: list = []
    try:
        with other.writing() as session:
            ada = session.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == "ada"))
            now = "2026-01-01T00:00:00.000000+00:00"
            row = dict(
                pair_id=first.id,
                annotator_id=ada,
                choice="right",
                rationale="other",
                tags=[],
                created_at=now,
                updated_at=now,
            )
            session.execute(insert(AnnotationRow).values(**row))
            session.flush()
            worker = threading.Thread(
                target=lambda: results.append(store.preferences.annotate(first.id, "ada", "left", as_shown=False))
            )
            worker.start()
            time.sleep(1.5)  # the worker now waits on our uncommitted row
        worker.join(timeout=60)
    finally:
        other.dispose()
    assert results and results[0].choice == "left"
    (kept,) = [a for a in store.preferences.annotations(pair_id=first.id) if a.annotator == "ada"]
    assert kept.choice == "left"
