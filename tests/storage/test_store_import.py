"""Importing episodes never loses data: re-imports, replacements and failures, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from agent_studio.storage import Store, open_store
from studio.errors import StudioError
from studio.trace import Episode
from tests.support.store_helpers import run_react


def judged_episode(store: Store) -> Episode:
    """A 3-step episode with candidate pairs, two judgements and two step labels."""
    episode = run_react(store, seed=0, steps=3, candidates=3)
    store.preferences.pairs_from_candidates()
    for pair in store.preferences.pairs()[::4]:
        store.preferences.annotate(pair.id, "ada", "left")
    store.preferences.label_step(episode.id, 0, "ada", "good")
    store.preferences.label_step(episode.id, 2, "ada", "bad")
    return store.episodes.get(episode.id)


def snapshot(store: Store) -> tuple:
    """Everything a re-import could lose."""
    return (
        [e.to_dict() for e in (store.episodes.get(s.id) for s in store.episodes.summaries())],
        sorted((p.id, p.step_index) for p in store.preferences.pairs()),
        sorted((a.pair_id, a.choice) for a in store.preferences.annotations()),
        sorted((label.episode_id, label.step_index, label.label) for label in store.preferences.step_labels()),
    )


def test_importing_the_same_episode_again_changes_nothing(store: Store) -> None:
    episode = judged_episode(store)
    before = snapshot(store)
    assert len(before[2]) >= 2 and len(before[3]) == 2
    assert store.episodes.save(Episode.from_json(episode.to_json())).outcome == "unchanged"
    assert snapshot(store) == before


def test_importing_other_content_under_a_stored_id_is_refused_and_changes_nothing(store: Store) -> None:
    episode = judged_episode(store)
    before = snapshot(store)
    changed = copy.deepcopy(episode)
    changed.steps[1].thought = "a different thought"
    with pytest.raises(StudioError, match="already stored with different content.*--replace"):
        store.episodes.save(changed)
    assert snapshot(store) == before


def test_replacing_keeps_judgements_on_the_unchanged_steps(store: Store) -> None:
    episode = judged_episode(store)
    pairs_before = store.preferences.pairs()
    changed = copy.deepcopy(episode)
    changed.steps[2].thought = "a different thought"
    changed.policy = "p" * 150  # longer than the old VARCHAR(100): PostgreSQL must take it too
    result = store.episodes.save(changed, replace=True)
    assert (result.outcome, result.kept_steps, result.dropped_labels) == ("replaced", 2, 1)
    pairs_after = store.preferences.pairs()
    assert {p.id for p in pairs_after} == {p.id for p in pairs_before if p.step_index < 2}
    assert result.dropped_pairs == len(pairs_before) - len(pairs_after) == 3
    labels = [(label.step_index, label.label) for label in store.preferences.step_labels()]
    assert labels == [(0, "good")]
    kept_judgements = {a.pair_id for a in store.preferences.annotations()}
    assert kept_judgements and kept_judgements <= {p.id for p in pairs_after}
    assert store.episodes.get(episode.id).to_dict() == changed.to_dict()


def test_a_failing_import_changes_nothing(store: Store) -> None:
    episode = judged_episode(store)
    before = snapshot(store)
    new = Episode.from_json(episode.to_json())
    new.id = "0" * 32
    with pytest.raises(StudioError, match="already stored with another episode"):
        store.episodes.save(new)  # a copy under a new id still has the stored candidates' ids
    for step in new.steps:
        for number, candidate in enumerate(step.candidates):
            candidate.id = f"{step.index}-{number}"
    clash = copy.deepcopy(episode)
    clash.steps[0].raw = "something else"
    with pytest.raises(StudioError, match="different content"):
        store.episodes.save_all([new, clash])  # the first alone would be fine: not even it is stored
    assert snapshot(store) == before
    bad = copy.deepcopy(new)
    bad.steps[1].index = "<b>1</b>"
    with pytest.raises(StudioError, match=r"steps\[1\]\.index: expected an integer"):
        store.episodes.save(bad)
    assert snapshot(store) == before


def test_the_cli_import_is_idempotent_and_replace_says_what_it_kept(tmp_path: Path) -> None:
    from tests.storage.test_store_db import cli

    db = tmp_path / "cli.db"
    with open_store(db) as store:
        episode = judged_episode(store)
    path = tmp_path / "episodes.jsonl"
    path.write_text(episode.to_json() + "\n", encoding="utf-8")
    again = cli("import", str(path), "--db", str(db))
    assert again.returncode == 0 and "0 episodes, 1 already stored unchanged" in again.stdout, again
    changed = copy.deepcopy(episode)
    changed.steps[1].thought = "changed"
    path.write_text(changed.to_json() + "\n", encoding="utf-8")
    refused = cli("import", str(path), "--db", str(db))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--replace" in refused.stderr
    replaced = cli("import", str(path), "--db", str(db), "--replace")
    assert (
        replaced.returncode == 0
        and "kept steps 0-0" in replaced.stdout
        and "dropped 6 pairs and 1 step label" in replaced.stdout
    ), replaced
