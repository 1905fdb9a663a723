"""Finding behaviours across episodes, on SQLite (FTS5) and PostgreSQL (tsvector): full-text search,
every filter, tags, notes, aggregates, rubric labels and their validation, the trajectory diff."""

from __future__ import annotations

import pytest

from agent_studio.storage.aggregates import aggregates
from agent_studio.storage.search import EpisodeFilter
from studio.errors import StudioError
from studio.evaluation.rubric import Rubric, RubricVerdict, agreement, judge_episode
from studio.evaluation.trajectory_diff import diff_episodes
from studio.models.scripted import ScriptedBackend
from studio.trace import Episode, Step


def episode(
    env: str,
    actions: list[str],
    *,
    thought: str = "",
    success: bool | None = True,
    source: str | None = None,
    observations: list[str] | None = None,
    invalid: dict[int, str] | None = None,
    **fields,
) -> Episode:
    steps = [
        Step(
            index=i,
            observation=(observations or [f"room {i}"] * len(actions))[i],
            action=a,
            raw=f"{thought} {a}".strip(),
            thought=thought or None,
            valid=i not in (invalid or {}),
            invalid_reason=(invalid or {}).get(i),
        )
        for i, a in enumerate(actions)
    ]
    made = Episode(
        env=env,
        seed=0,
        steps=steps,
        success=success,
        end_reason="done",
        source={"format": source} if source else None,
        **fields,
    )
    made.ended_at = made.started_at
    return made


@pytest.fixture()
def stored(store):
    episodes = [
        episode(
            "gridworld",
            ["go north", "go north", "go north", "open door"],
            thought="the key is hidden under the mat",
            policy_config={"temperature": 0.7},
        ),
        episode(
            "gridworld",
            ["go east", "take key"],
            thought="a lamp glows",
            success=False,
            invalid={1: "no key here"},
            policy_config={"temperature": 0.0},
        ),
        episode("household", ["open fridge"], source="chat", success=None),
    ]
    store.episodes.save_all(episodes)
    return store, episodes


def test_full_text_search_finds_thoughts_actions_and_observations(stored) -> None:
    store, (a, b, c) = stored
    hits = store.search.search("mat hidden")  # every word, any order
    assert {(h.episode_id, h.step_index) for h in hits} == {(a.id, i) for i in range(4)}
    assert [h.step_index for h in store.search.search("fridge")] == [0]  # an action
    assert {h.episode_id for h in store.search.search("room")} == {a.id, b.id, c.id}  # observations
    assert store.search.search("LAMP")[0].episode_id == b.id  # case does not matter
    assert store.search.search("lamps") == []  # whole words


@pytest.mark.parametrize(
    "query", ['"', 'key" OR "x', "NEAR(key mat)", "key*", "observation:room", "'; DROP TABLE steps; --", "(", "a:b:c"]
)
def test_typed_query_syntax_is_only_text(stored, query: str) -> None:
    store, _ = stored
    try:
        store.search.search(query)  # never a database error
    except StudioError as exc:  # a query of no word at all is one line
        assert "at least one word" in str(exc)
    assert store.episodes.count()["steps"] == 7


def test_an_empty_query_is_one_line(stored) -> None:
    store, _ = stored
    with pytest.raises(StudioError, match="at least one word"):
        store.search.search("  !! ")


def test_every_filter_and_its_count(stored) -> None:
    store, (a, b, c) = stored
    cases = [
        (EpisodeFilter(env="gridworld"), {a.id, b.id}),
        (EpisodeFilter(outcome="failure"), {b.id}),
        (EpisodeFilter(outcome="unknown"), {c.id}),
        (EpisodeFilter(source="chat"), {c.id}),
        (EpisodeFilter(source="studio"), {a.id, b.id}),
        (EpisodeFilter(setting="temperature=0.7"), {a.id}),
        (EpisodeFilter(text="key"), {a.id, b.id}),
        (EpisodeFilter(env="gridworld", text="lamp"), {b.id}),
    ]
    for where, expected in cases:
        assert {s.id for s in store.search.page(where)} == expected, where
        assert store.search.count(where) == len(expected), where
    assert store.search.count() == 3 and len(store.search.page(limit=2)) == 2
    assert {s.id for s in store.search.page(limit=2)} | {s.id for s in store.search.page(limit=2, offset=2)} == {
        a.id,
        b.id,
        c.id,
    }


def test_tags_and_notes(stored) -> None:
    store, (a, b, _c) = stored
    assert store.search.tag(a.id, "Loop", "ada", step_index=2) is True
    assert store.search.tag(a.id, "loop", "bob", step_index=2) is False  # already there (tags are lower-case)
    store.search.tag(b.id, "loop", "ada")
    assert store.search.tags_of(a.id) == [(2, "loop")]
    assert {s.id for s in store.search.page(EpisodeFilter(tag="loop"))} == {a.id, b.id}
    assert store.search.tag_counts() == [("loop", 2)]
    assert store.search.untag(a.id, "loop", step_index=2) == 1 and store.search.tags_of(a.id) == []
    for bad in ("<b>", "", "x" * 65, "two words"):
        with pytest.raises(StudioError, match="A tag is"):
            store.search.tag(a.id, bad, "ada")
    with pytest.raises(StudioError, match="has no step 9"):
        store.search.tag(a.id, "x", "ada", step_index=9)
    store.search.note(b.id, "The agent hallucinated a door.", "ada", step_index=1)
    (hit,) = store.search.search("hallucinated")
    assert (hit.episode_id, hit.step_index, hit.where) == (b.id, 1, "note")
    assert {s.id for s in store.search.page(EpisodeFilter(text="hallucinated door"))} == {b.id}
    with pytest.raises(StudioError, match="needs some text"):
        store.search.note(b.id, "   ", "ada")
    assert store.search.notes_of(b.id)[0]["step"] == 1


def test_aggregates_count_invalid_reasons_and_loops_with_examples(stored) -> None:
    store, (a, b, _c) = stored
    found = aggregates(store.db)
    assert found.episodes == 3
    assert found.invalid_reasons == [("no key here", 1, [(b.id, 1)])]
    assert found.loops == [(a.id, 0, "go north")]  # steps 0, 1, 2 repeat one action
    assert aggregates(store.db, EpisodeFilter(env="household")).loops == []


def test_rubric_verdicts_cite_existing_steps_and_validate_like_sklearn(stored) -> None:
    store, (a, b, c) = stored
    rubric = Rubric("loops", "Does the agent repeat itself?", ("yes", "no"))
    judge = ScriptedBackend(
        [" 0, step 1 and step 2 it repeats go north, not at step 17."], preferences=["yes"], name="judge-a"
    )
    verdict = judge_episode(judge, rubric, a)
    assert verdict.label == "yes" and verdict.citations == [0, 1, 2]
    assert verdict.explanation == "In step 0, step 1 and step 2 it repeats go north, not at step 17."
    assert verdict.provenance["dropped_citations"] == [17] and verdict.provenance["method"] == "scored"
    assert verdict.provenance["label_probabilities"]["yes"] > 0.5
    store.rubrics.save(verdict)
    assert {s.id for s in store.search.page(EpisodeFilter(judged=True))} == {a.id}
    assert store.search.count(EpisodeFilter(judged=False)) == 2
    with pytest.raises(StudioError, match="a citation must point at a step"):
        store.rubrics.save(RubricVerdict(b.id, "loops", "judge-a", "no", "", [5]))
    (kept,) = store.rubrics.of_episode(a.id)
    assert kept.citations == [0, 1, 2] and all(0 <= n < a.length for n in kept.citations)
    # Validation: the judge against a person, by hand and by scikit-learn.
    for e, label in ((b.id, "no"), (c.id, "no")):
        store.rubrics.save(RubricVerdict(e, "loops", "judge-a", "yes", "", []))
    for e, label in ((a.id, "yes"), (b.id, "no"), (c.id, "no")):
        store.rubrics.label_by_hand(e, "loops", label, "ada", rubric.labels)
    with pytest.raises(StudioError, match="not one of"):
        store.rubrics.label_by_hand(a.id, "loops", "maybe", "ada", rubric.labels)
    report = agreement(
        store.rubrics.labels_by_episode("loops", "judge-a"), store.rubrics.labels_by_episode("loops", "human:ada")
    )
    # By hand: judge says yes, yes, yes; ada says yes, no, no. Agreement 1/3; chance p_e = (1*3 + 2*0)/9 = 1/3.
    assert report["episodes"] == 3 and report["accuracy"] == pytest.approx(1 / 3)
    assert report["kappa"] == pytest.approx((1 / 3 - 1 / 3) / (1 - 1 / 3))
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    assert report["kappa"] == pytest.approx(cohen_kappa_score(["yes", "no", "no"], ["yes", "yes", "yes"]))
    assert report["accuracy"] == pytest.approx(accuracy_score(["yes", "no", "no"], ["yes", "yes", "yes"]))
    assert report["confusion"] == {"yes": {"yes": 1}, "no": {"yes": 2}}


def test_a_rubric_is_checked(stored) -> None:
    with pytest.raises(StudioError, match="2 to 12 different labels"):
        Rubric("r", "q?", ("yes",))
    with pytest.raises(StudioError, match="rubric's name"):
        Rubric("<script>", "q?", ("yes", "no"))


def test_the_diff_marks_the_first_divergent_step() -> None:
    left = episode("gridworld", ["go north", "go east", "take key"])
    right = episode("gridworld", ["go north", "go west", "take key", "open door"])
    diff = diff_episodes(left, right)
    assert diff.first_divergence == 1 and "acted differently" in diff.reason
    assert [row.same for row in diff.rows] == [True, False, False, False]
    assert diff.rows[3].left is None
    seen = episode("gridworld", ["go north", "go east"], observations=["room 0", "a wall"])
    assert diff_episodes(left, seen).first_divergence == 1 and "saw different" in diff_episodes(left, seen).reason
    assert diff_episodes(left, left).first_divergence is None
    with pytest.raises(StudioError, match="different environments"):
        diff_episodes(left, episode("household", ["go north"]))
