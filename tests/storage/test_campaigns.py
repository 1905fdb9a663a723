"""Annotation campaigns on real SQLite and PostgreSQL: overlap, assignment, queues, guidelines, gold
items, adjudication (and the export that follows it), and quality recomputed with scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score
from sqlalchemy import text

from agent_studio.storage import Store, open_store
from agent_studio.storage.export import export
from studio.errors import StudioError
from tests.support.store_helpers import run_react

ROOT = Path(__file__).resolve().parents[2]


def _pairs(store: Store, seeds: int = 2, steps: int = 3) -> list[str]:
    for seed in range(seeds):
        run_react(store, seed=seed, steps=steps)
    store.preferences.pairs_from_candidates()
    return [p.id for p in store.preferences.pairs()]


def _assignments(store: Store, name: str) -> list[tuple[str, str]]:
    with store.db.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT a.pair_id, n.name FROM campaign_assignments a JOIN annotators n ON n.id = a.annotator_id "
                    "JOIN campaigns c ON c.id = a.campaign_id WHERE c.name = :name"
                ),
                {"name": name},
            )
        ]


def test_round_robin_gives_each_item_exactly_overlap_people_and_nobody_an_item_twice(store: Store) -> None:
    pair_ids = _pairs(store)
    campaign = store.campaigns.create(
        "team", overlap=2, annotators=["ada", "bo", "cy"], guidelines="# Pick the safer action", taxonomy=["unsafe"]
    )
    assert (campaign.items, campaign.gold_items, campaign.guidelines_version) == (len(pair_ids), 0, 1)
    held = _assignments(store, "team")
    assert len(held) == len(set(held)) == 2 * len(pair_ids)
    assert Counter(p for p, _ in held) == {p: 2 for p in pair_ids}
    loads = Counter(who for _, who in held)
    assert set(loads) == {"ada", "bo", "cy"} and max(loads.values()) - min(loads.values()) <= 1
    # Each queue shows exactly that annotator's items; judging empties it one by one.
    for who in ("ada", "bo", "cy"):
        queue = store.campaigns.queue("team", who, limit=100)
        assert sorted(i.pair_id for i in queue) == sorted(p for p, w in held if w == who)
        for item in queue:
            store.campaigns.judge("team", who, item.pair_id, "left", tags=["unsafe"])
        assert store.campaigns.queue("team", who) == []
    progress = store.campaigns.progress("team")
    assert progress["complete"] == progress["items"] == len(pair_ids)
    assert {w: p["judged"] for w, p in progress["annotators"].items()} == dict(loads)
    assert store.campaigns.votes("team") == {
        p: {w: _stored_left(store, p) for q, w in held if q == p} for p in pair_ids
    }


def _stored_left(store: Store, pair_id: str) -> str:
    """'left' as shown, as the store keeps it (blind views swap some pairs)."""
    return "right" if store.preferences.pair(pair_id).swapped else "left"


def test_judging_outside_ones_assignment_or_taxonomy_or_after_closing_is_refused_and_stores_nothing(
    store: Store,
) -> None:
    pair_ids = _pairs(store, seeds=1)
    store.campaigns.create("c", overlap=1, annotators=["ada", "bo"], taxonomy=["unsafe", "loop"])
    ada_item = store.campaigns.queue("c", "ada")[0].pair_id
    with pytest.raises(StudioError, match="not assigned to bo"):
        store.campaigns.judge("c", "bo", ada_item, "left")
    with pytest.raises(StudioError, match="not in the campaign's taxonomy"):
        store.campaigns.judge("c", "ada", ada_item, "left", tags=["<b>other</b>"])
    with pytest.raises(StudioError, match="not in campaign"):
        store.campaigns.judge("c", "ada", "nope", "left")
    assert store.preferences.annotations() == []
    store.campaigns.close("c")
    with pytest.raises(StudioError, match="is closed"):
        store.campaigns.judge("c", "ada", ada_item, "left")
    assert store.campaigns.queue("c", "ada") == [] and store.preferences.annotations() == []
    for bad, match in [
        ({"name": "bad name!"}, "campaign name"),
        ({"name": "c"}, "exists"),
        ({"name": "x", "overlap": 3}, "needs at least 3 annotators"),
        ({"name": "x", "overlap": 0}, "whole number from 1"),
        ({"name": "x", "assignment": "lottery"}, "Unknown assignment"),
        ({"name": "x", "filters": {"env": "nowhere"}}, "No pairs match"),
        ({"name": "x", "filters": {"colour": "red"}}, "Unknown campaign filter"),
        ({"name": "x", "gold": {"missing": "left"}}, "gold item must be a stored pair"),
        ({"name": "x", "gold": {pair_ids[0]: "maybe"}}, "Unknown choice"),
        ({"name": "x", "guidelines": "g" * 100_001}, "at most 100,000"),
    ]:
        arguments = {"annotators": ["ada", "bo"], **bad}
        with pytest.raises(StudioError, match=match):
            store.campaigns.create(**arguments)
    assert [c.name for c in store.campaigns.list()] == ["c"]


def test_guidelines_are_versioned_and_each_judgement_notes_the_version_it_was_made_under(store: Store) -> None:
    _pairs(store, seeds=1)
    store.campaigns.create("g", annotators=["ada"], guidelines="v1: prefer progress")
    first, second = store.campaigns.queue("g", "ada", limit=2)
    store.campaigns.judge("g", "ada", first.pair_id, "left")
    assert store.campaigns.set_guidelines("g", "v2: prefer *safe* progress", author="lead") == 2
    store.campaigns.judge("g", "ada", second.pair_id, "right")
    assert store.campaigns.get("g").guidelines == "v2: prefer *safe* progress"
    assert [(v, t) for v, t, _a, _w in store.campaigns.guidelines_history("g")] == [
        (1, "v1: prefer progress"),
        (2, "v2: prefer *safe* progress"),
    ]
    with store.db.engine.connect() as connection:
        versions = dict(
            connection.exec_driver_sql("SELECT pair_id, guidelines_version FROM campaign_assignments").all()
        )
    assert (versions[first.pair_id], versions[second.pair_id]) == (1, 2)


def test_filters_choose_the_items_and_explicit_assignment_keeps_the_overlap(store: Store) -> None:
    run_react(store, seed=0, steps=2)
    run_react(
        store, seed=0, steps=1, env="household",
        outputs=["Thought: a.\nAction: look", "Thought: b.\nAction: inventory", "Thought: c.\nAction: fly"],
    )  # fmt: skip
    store.preferences.pairs_from_candidates()
    household = {p.id for p in store.preferences.pairs(env="household")}
    campaign = store.campaigns.create("house", overlap=1, assignment="explicit", filters={"env": "household"})
    assert set(store.campaigns.pair_ids("house")) == household and campaign.items == 3
    assert store.campaigns.queue("house", "ada") == []  # nothing is handed out until assigned
    first, *rest = sorted(household)
    assert store.campaigns.assign("house", "ada", [first]) == 1
    assert store.campaigns.assign("house", "ada", [first]) == 0  # already hers
    with pytest.raises(StudioError, match="already has its 1 annotator"):
        store.campaigns.assign("house", "bo", [rest[0], first])
    assert _assignments(store, "house") == [(first, "ada")]  # the refused call assigned nothing
    assert [i.pair_id for i in store.campaigns.queue("house", "ada")] == [first]


def test_adjudication_is_its_own_record_and_exports_follow_it(store: Store, tmp_path: Path) -> None:
    pair_ids = _pairs(store, seeds=1)
    store.campaigns.create("adj", overlap=2, annotators=["ada", "bo"])
    target = pair_ids[0]
    store.campaigns.judge("adj", "ada", target, "left", rationale="ada's reason", as_shown=False)
    store.campaigns.judge("adj", "bo", target, "right", rationale="bo's reason", as_shown=False)
    agreed = pair_ids[1]
    store.campaigns.judge("adj", "ada", agreed, "left", as_shown=False)
    store.campaigns.judge("adj", "bo", agreed, "left", as_shown=False)
    store.preferences.annotate(agreed, "judge:tiny", "right", as_shown=False)  # a machine that differs from people
    found = {d.pair_id: d for d in store.campaigns.disagreements("adj")}
    assert set(found) == {target, agreed}
    assert sorted((j.annotator, j.rationale) for j in found[target].judgements) == [
        ("ada", "ada's reason"), ("bo", "bo's reason")
    ]  # fmt: skip
    before = export(store, "dpo", tmp_path / "before.jsonl")
    assert before.left_out.get("no_majority") == 1 and before.adjudicated == 0
    decision = store.campaigns.adjudicate("adj", target, "lead", "right", rationale="bo is right", as_shown=False)
    assert (decision.choice, decision.adjudicator, decision.campaign) == ("right", "lead", "adj")
    assert [d.pair_id for d in store.campaigns.disagreements("adj", settled=False)] == [agreed]
    assert {(r.annotator, r.choice) for r in store.preferences.annotations(pair_id=target)} == {
        ("ada", "left"), ("bo", "right")
    }  # fmt: skip  # the originals stay
    after = export(store, "dpo", tmp_path / "after.jsonl")
    assert after.adjudicated == 1 and "no_majority" not in after.left_out
    rows = {r["pair_id"]: r for r in map(json.loads, (tmp_path / "after.jsonl").read_text().splitlines())}
    pair = store.preferences.pair(target)
    right_text = store.episodes.get(pair.right.episode_id).steps[pair.step_index]
    chosen = rows[target]["chosen"][-1]["content"]
    expected = (
        next(c.raw for c in right_text.candidates if c.id == pair.right.candidate_id)
        if pair.right.candidate_id
        else right_text.raw
    )
    assert chosen == expected
    only = export(store, "dpo", tmp_path / "campaign.jsonl", campaign="adj")
    assert only.campaign == "adj" and only.records == after.records  # every pair of this store is in the campaign
    with pytest.raises(StudioError, match="--campaign exports judged pairs"):
        export(store, "sft", tmp_path / "sft.jsonl", campaign="adj")


def test_quality_per_annotator_equals_a_recomputation_with_sklearn(store: Store) -> None:
    pair_ids = _pairs(store, seeds=3, steps=3)  # 27 pairs
    gold = {pair_ids[0]: "left", pair_ids[1]: "right", pair_ids[2]: "tie"}
    store.campaigns.create("q", overlap=2, annotators=["ada", "bo", "cy"], gold=gold)
    habits = {"ada": ["left", "left", "right"], "bo": ["left", "right", "tie"], "cy": ["right", "left", "left"]}
    for who, habit in habits.items():
        for n, item in enumerate(store.campaigns.queue("q", who, limit=100)):
            store.campaigns.judge("q", who, item.pair_id, habit[n % 3], seconds=1.0 + n, as_shown=False)
    votes = store.campaigns.votes("q")
    disputed = [d.pair_id for d in store.campaigns.disagreements("q")][:3]
    for pair_id in disputed:
        store.campaigns.adjudicate("q", pair_id, "lead", "left", as_shown=False)
    quality = store.campaigns.quality("q")["annotators"]
    for who in habits:
        mine = {p: v[who] for p, v in votes.items() if who in v}
        on_gold = [p for p in mine if p in gold]
        assert len(on_gold) == 3  # gold items go to everyone
        assert quality[who]["gold_accuracy"] == pytest.approx(
            accuracy_score([gold[p] for p in on_gold], [mine[p] for p in on_gold])
        )
        settled = [p for p in mine if p in disputed]
        if settled:
            assert quality[who]["agreement_with_adjudicated"] == pytest.approx(
                accuracy_score(["left"] * len(settled), [mine[p] for p in settled])
            )
        for other in habits:
            shared = [p for p in mine if p not in gold and other != who and other in votes[p]]
            if shared:
                expected = cohen_kappa_score([mine[p] for p in shared], [votes[p][other] for p in shared])
                assert quality[who]["kappa_with"][other] == pytest.approx(expected)
        same = [mine[p] == votes[p][o] for p in mine if p not in gold for o in votes[p] if o != who]
        assert quality[who]["agreement_with_others"] == pytest.approx(sum(same) / len(same))
        assert quality[who]["median_seconds"] == pytest.approx(1.0 + (len(mine) - 1) / 2)


CLAIM = """
import sys, time
from agent_studio.storage import open_store
store = open_store(sys.argv[1])
name, start = sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))  # every annotator asks for work at the same moment
judged = 0
while True:
    queue = store.campaigns.queue("open", name, limit=2)
    if not queue:
        break
    store.campaigns.judge("open", name, queue[0].pair_id, "left")
    judged += 1
print(judged, flush=True)
"""


def test_annotators_claiming_in_parallel_processes_give_each_item_exactly_overlap_judgements(store_url: str) -> None:
    store = open_store(store_url)
    pair_ids = _pairs(store, seeds=2, steps=3)  # 18 pairs
    store.campaigns.create("open", overlap=2, assignment="open")
    start = time.time() + 4.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, store_url, f"ann{n}", str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert sum(int(out) for out, _ in outputs) == 2 * len(pair_ids)
    records = store.preferences.annotations()
    per_pair = Counter(r.pair_id for r in records)
    assert per_pair == {p: 2 for p in pair_ids}
    assert len({(r.pair_id, r.annotator) for r in records}) == len(records)
    held = _assignments(store, "open")
    assert Counter(p for p, _ in held) == {p: 2 for p in pair_ids} and len(set(held)) == len(held)
    assert store.campaigns.progress("open")["complete"] == len(pair_ids)
