"""Exports: each format loads with `datasets` and has the shape TRL documents (checked with TRL's helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest
from trl.data_utils import apply_chat_template, is_conversational

from agent_studio.storage import Store, open_store
from agent_studio.storage.export import export
from studio.errors import StudioError
from studio.trace import read_episodes_jsonl
from tests.support.store_helpers import new_store, run_react, run_scripted
from tests.support.tiny_models import tiny_tokenizer


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def judged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A database (an SQLite file, then PostgreSQL) with step and trajectory pairs judged by two annotators, and step labels."""
    if request.param == "sqlite":
        store = new_store(tmp_path_factory.mktemp("export"))
    else:
        store = open_store(request.getfixturevalue("postgres").new_database())
    react = run_react(store, seed=0, steps=2, candidates=3)  # frames recorded
    expert = run_scripted(store, "expert", seed=5)
    random_run = run_scripted(store, "random", seed=5, max_steps=3)
    prefs = store.preferences
    assert prefs.pairs_from_candidates().created == 6 and prefs.pairs_from_episodes().created == 1
    step_pairs = prefs.pairs(kind="step")
    (trajectory,) = prefs.pairs(kind="trajectory")
    plan = {  # stored-side choices of ada and bob
        step_pairs[0].id: ("left", "left"),  # -> chosen left
        step_pairs[1].id: ("right", "right"),  # -> chosen right
        step_pairs[2].id: ("left", "right"),  # no majority
        step_pairs[3].id: ("tie", "tie"),
        step_pairs[4].id: ("both_bad", "both_bad"),
        trajectory.id: ("right", None),  # one annotator is a majority
    }  # step_pairs[5] stays unjudged
    for pair_id, (ada, bob) in plan.items():
        prefs.annotate(pair_id, "ada", ada, rationale=f"<i>{ada}</i> & more", as_shown=False)
        if bob:
            prefs.annotate(pair_id, "bob", bob, as_shown=False)
    for index, label in enumerate(["good", "bad", "neutral"]):
        prefs.label_step(expert.id, index, "ada", label)
    prefs.label_step(expert.id, 4, "ada", "good")  # after a gap: not in the prm prefix
    prefs.label_step(react.id, 0, "ada", "erroneous")
    return {
        "store": store,
        "react": react,
        "expert": expert,
        "random": random_run,
        "plan": plan,
        "trajectory": trajectory.id,
        "steps": step_pairs,
    }


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def side_text(store: Store, episode_id: str, step_index: int, candidate_id: str | None) -> str:
    step = store.episodes.get(episode_id).steps[step_index]
    if candidate_id is None:
        return step.raw
    return next(c.raw for c in step.candidates if c.id == candidate_id)


def test_dpo_is_trl_conversational_preference_with_explicit_prompt(judged: dict, tmp_path: Path) -> None:
    store: Store = judged["store"]
    summary = export(store, "dpo", tmp_path / "dpo.jsonl", prompt="full")
    assert summary.records == 3  # two step pairs and the trajectory pair
    assert summary.left_out == {"tie": 1, "both_bad": 1, "no_majority": 1, "unjudged": 1}
    dataset = datasets.load_dataset("json", data_files=str(tmp_path / "dpo.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    tokenizer = tiny_tokenizer()
    rows = load_jsonl(tmp_path / "dpo.jsonl")
    for row in rows:
        assert is_conversational(row)
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][0]["role"] == "system"
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
        assert all(set(m) == {"role", "content"} for m in row["prompt"] + row["chosen"] + row["rejected"])
        text = apply_chat_template({k: row[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
        assert text["chosen"] and text["rejected"] and text["prompt"]
    by_pair = {row["pair_id"]: row for row in rows}
    first = store.preferences.pair(judged["steps"][0].id)
    row = by_pair[first.id]
    assert (
        row["prompt"] == store.episodes.get(first.left.episode_id).steps[first.step_index].prompt
    )  # what the model saw
    assert row["chosen"] == [
        {
            "role": "assistant",
            "content": side_text(store, first.left.episode_id, first.step_index, first.left.candidate_id),
        }
    ]
    assert row["rejected"] == [
        {
            "role": "assistant",
            "content": side_text(store, first.right.episode_id, first.step_index, first.right.candidate_id),
        }
    ]
    assert row["rationales"] == ["<i>left</i> & more"]  # verbatim, markup and all
    second = store.preferences.pair(judged["steps"][1].id)
    assert by_pair[second.id]["chosen"][0]["content"] == side_text(
        store, second.right.episode_id, second.step_index, second.right.candidate_id
    )
    # A trajectory: alternating assistant turns and observations, the chosen side the one judged better.
    trajectory = by_pair[judged["trajectory"]]
    pair = store.preferences.pair(judged["trajectory"])
    chosen_episode = store.episodes.get(pair.right.episode_id)
    assert [m["role"] for m in trajectory["chosen"]] == ["assistant", "user"] * (chosen_episode.length - 1) + [
        "assistant"
    ]
    action = chosen_episode.steps[0].action  # an expert or random step: in the policy's format
    assert trajectory["chosen"][0]["content"] == f"Thought: Next I should {action}.\nAction: {action}"
    assert trajectory["chosen"][1]["content"] == f"Observation: {chosen_episode.steps[1].observation}"


def test_compact_prompts_drop_the_few_shot_example_and_nothing_else(judged: dict, tmp_path: Path) -> None:
    export(judged["store"], "dpo", tmp_path / "full.jsonl", prompt="full")
    export(judged["store"], "dpo", tmp_path / "compact.jsonl")  # the default
    for full, compact in zip(load_jsonl(tmp_path / "full.jsonl"), load_jsonl(tmp_path / "compact.jsonl")):
        system, short = full["prompt"][0]["content"], compact["prompt"][0]["content"]
        if "Here is an example of" in system:
            assert short == system[: system.index("\n\nHere is an example of")] and "Here is an example" not in short
        else:
            assert short == system
        assert full["prompt"][1:] == compact["prompt"][1:] and full["chosen"] == compact["chosen"]
    assert sum(len(json.dumps(r["prompt"])) for r in load_jsonl(tmp_path / "compact.jsonl")) < sum(
        len(json.dumps(r["prompt"])) for r in load_jsonl(tmp_path / "full.jsonl")
    )


def test_frames_are_left_out_unless_asked_for(judged: dict, tmp_path: Path) -> None:
    for fmt in ("dpo", "kto", "prm", "sft"):
        summary = export(judged["store"], fmt, tmp_path / f"{fmt}.jsonl")  # --images none, the default
        assert summary.images == 0 and not any("images" in row for row in load_jsonl(tmp_path / f"{fmt}.jsonl"))
    with pytest.raises(StudioError, match="--images must be one of none, paths"):
        export(judged["store"], "dpo", tmp_path / "x.jsonl", images="embedded")


def test_step_pairs_with_frames_carry_images(judged: dict, tmp_path: Path) -> None:
    summary = export(judged["store"], "dpo", tmp_path / "with_images.jsonl", hf_dataset=tmp_path / "hf", images="paths")
    rows = load_jsonl(tmp_path / "with_images.jsonl")
    step_rows = [r for r in rows if r["pair_id"] != judged["trajectory"]]
    assert summary.images == len(step_rows) == 2 and all(len(r["images"]) == 1 for r in step_rows)
    react = judged["store"].episodes.get(judged["react"].id)
    pair = judged["store"].preferences.pair(step_rows[0]["pair_id"])
    assert Path(step_rows[0]["images"][0]).is_absolute()  # found wherever the trainer runs from
    png = cv2.cvtColor(cv2.imread(step_rows[0]["images"][0]), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, react.steps[pair.step_index].frame)  # the observation the step saw, lossless
    saved = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(saved) == 3 and saved.features["images"].feature.__class__.__name__ == "Image"
    with_image = next(row for row in saved if row["images"])
    assert with_image["images"][0].size == (react.steps[0].frame.shape[1], react.steps[0].frame.shape[0])


def test_reward_is_trl_preference_with_implicit_prompt(judged: dict, tmp_path: Path) -> None:
    export(judged["store"], "dpo", tmp_path / "dpo.jsonl")
    summary = export(judged["store"], "reward", tmp_path / "reward.jsonl")
    assert summary.records == 3 and summary.left_out["tie"] == 1
    dpo = {r["pair_id"]: r for r in load_jsonl(tmp_path / "dpo.jsonl")}
    tokenizer = tiny_tokenizer()
    for row in load_jsonl(tmp_path / "reward.jsonl"):
        assert "prompt" not in row and is_conversational(row)
        explicit = dpo[row["pair_id"]]
        assert (
            row["chosen"] == explicit["prompt"] + explicit["chosen"]
            and row["rejected"] == explicit["prompt"] + explicit["rejected"]
        )
        assert set(apply_chat_template({"chosen": row["chosen"], "rejected": row["rejected"]}, tokenizer)) == {
            "chosen",
            "rejected",
        }
    assert len(datasets.load_dataset("json", data_files=str(tmp_path / "reward.jsonl"), split="train")) == 3


def test_kto_is_trl_unpaired_preference(judged: dict, tmp_path: Path) -> None:
    summary = export(judged["store"], "kto", tmp_path / "kto.jsonl")
    rows = load_jsonl(tmp_path / "kto.jsonl")
    # 3 decided pairs and 1 both-bad pair give two rows each; the labels good, bad, good and
    # erroneous one each (neutral is left out).
    assert summary.records == len(rows) == 2 * 4 + 4 and summary.left_out["tie"] == 1
    both_bad = [r for r in rows if r["source"] == f"pair:{judged['steps'][4].id}"]
    assert [r["label"] for r in both_bad] == [False, False]
    labelled = {r["source"]: r["label"] for r in rows if r["source"].startswith("step:")}
    expert, react = judged["expert"].id, judged["react"].id
    assert labelled == {
        f"step:{expert}:0": True,
        f"step:{expert}:1": False,
        f"step:{react}:0": False,
        f"step:{expert}:4": True,
    }
    tokenizer = tiny_tokenizer()
    for row in rows:
        assert isinstance(row["label"], bool) and is_conversational(row)
        assert (
            apply_chat_template({k: row[k] for k in ("prompt", "completion", "label")}, tokenizer)["label"]
            == row["label"]
        )
    assert (
        datasets.load_dataset("json", data_files=str(tmp_path / "kto.jsonl"), split="train").features["label"].dtype
        == "bool"
    )


def test_prm_is_trl_stepwise_supervision(judged: dict, tmp_path: Path) -> None:
    summary = export(judged["store"], "prm", tmp_path / "prm.jsonl")
    rows = {r["episode_id"]: r for r in load_jsonl(tmp_path / "prm.jsonl")}
    assert summary.records == 2
    expert = judged["expert"]
    row = rows[expert.id]
    assert isinstance(row["prompt"], str) and row["prompt"].startswith("Task: ")
    assert row["labels"] == [True, False, True]  # good, bad, neutral (not an error); the gap at step 3 ends it
    first, second = expert.steps[0].action, expert.steps[1].action  # the expert's turns in the policy's format
    assert row["completions"][0] == f"Thought: Next I should {first}.\nAction: {first}"
    assert row["completions"][1] == (
        f"Observation: {expert.steps[1].observation}\nThought: Next I should {second}.\nAction: {second}"
    )
    assert rows[judged["react"].id]["labels"] == [False]
    dataset = datasets.load_dataset("json", data_files=str(tmp_path / "prm.jsonl"), split="train")
    assert (
        dataset.features["labels"].feature.dtype == "bool" and dataset.features["completions"].feature.dtype == "string"
    )


def test_episodes_export_is_the_trace_format(judged: dict, tmp_path: Path) -> None:
    summary = export(judged["store"], "episodes", tmp_path / "episodes.jsonl")
    episodes = {e.id: e for e in read_episodes_jsonl(str(tmp_path / "episodes.jsonl"))}
    assert summary.records == 3
    assert episodes[judged["react"].id].to_dict() == judged["react"].to_dict()


def test_an_empty_database_exports_empty_files(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for fmt in ("dpo", "reward", "prm", "kto", "episodes"):
        summary = export(store, fmt, tmp_path / f"{fmt}.jsonl")
        assert summary.records == 0 and (tmp_path / f"{fmt}.jsonl").read_text() == ""


def test_export_errors_are_clear_and_leave_nothing_half_written(judged: dict, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StudioError, match="Cannot write"):
        export(judged["store"], "dpo", tmp_path / "file" / "dpo.jsonl")
    with pytest.raises(StudioError, match="is a folder"):
        export(judged["store"], "dpo", tmp_path)
    with pytest.raises(StudioError, match="Unknown export format"):
        export(judged["store"], "nonesuch", tmp_path / "x.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_every_line_is_its_record(judged: dict, tmp_path: Path) -> None:
    """The JSON line written and the record (what --hf-dataset and plugins get) come from one row:
    they agree for every row of every registered format, and the file holds exactly those lines."""
    from agent_studio.storage.export import ExportSummary, ImageWriter, export, export_rows, format_names

    store = judged["store"]
    for fmt in format_names():
        out = tmp_path / f"{fmt}.jsonl"
        rows = list(export_rows(store, fmt, ExportSummary(fmt, str(out)), ImageWriter(out)))
        assert rows, fmt
        for row in rows:
            assert json.loads(row.line()) == row.record(), fmt
        export(store, fmt, out)
        assert out.read_bytes() == b"".join(row.line() + b"\n" for row in rows), fmt


def test_the_guides_table_has_every_built_in_format() -> None:
    """The training-data guide's export table lists every format the registry has out of the box."""
    from agent_studio.storage.export import format_names

    readme = (Path(__file__).resolve().parents[2] / "docs" / "training-data.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in readme for name in format_names()), format_names()


def test_machine_verdicts_never_outvote_the_people_who_decided_a_pair(tmp_path: Path) -> None:
    """Seven verdicts of a judge removed three human-decided pairs from the dpo export; by default
    people decide every pair any person judged, and ``annotators`` chooses otherwise, said in the summary."""
    store = new_store(tmp_path)
    run_react(store, steps=2)  # 6 step pairs
    store.preferences.pairs_from_candidates()
    pairs = [p.id for p in store.preferences.pairs()]
    people = pairs[:3]
    for pair_id in pairs:
        for machine in ("judge:tiny", "mc:expert-m4-end"):  # two machines that agree with each other
            store.preferences.annotate(pair_id, machine, "right", as_shown=False)
    for pair_id in people:
        store.preferences.annotate(pair_id, "ada", "left", as_shown=False)

    def chosen_sides(annotators: str) -> tuple[dict[str, str], dict]:
        out = tmp_path / f"{annotators}.jsonl"
        summary = export(store, "dpo", out, annotators=annotators).to_dict()
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        sides = {}
        for row in rows:
            pair = store.preferences.pair(row["pair_id"])
            left = pair.left
            left_text = store.episodes.get(left.episode_id).steps[left.step_index]
            text = (
                left_text.raw
                if left.candidate_id is None
                else next(c.raw for c in left_text.candidates if c.id == left.candidate_id)
            )
            sides[row["pair_id"]] = "left" if text in row["chosen"][0]["content"] else "right"
        return sides, summary

    default, summary = chosen_sides("default")
    assert default == {**{p: "left" for p in people}, **{p: "right" for p in pairs[3:]}}
    assert summary["annotators"] == "people where any person judged, machines elsewhere"
    humans, summary = chosen_sides("humans")
    assert humans == {p: "left" for p in people} and summary["left_out"]["judged_by_others"] == 3
    machines, _ = chosen_sides("machines")
    assert machines == {p: "right" for p in pairs}
    everyone, summary = chosen_sides("all")
    assert everyone == {p: "right" for p in pairs} and summary["annotators"] == "everyone, people and machines alike"
    named, summary = chosen_sides("ada,judge:tiny")  # one person, one machine: a tie on ada's pairs
    assert named == {p: "right" for p in pairs[3:]} and summary["left_out"]["no_majority"] == 3
    with pytest.raises(StudioError, match="not both"):
        export(store, "dpo", tmp_path / "x.jsonl", annotators="machines,ada")
    # A pattern matches many machine annotators, and people may join them (train --sources human,judge).
    assert chosen_sides("judge:*")[0] == chosen_sides("judge:tiny")[0]
    assert chosen_sides("humans,judge:*")[0] == chosen_sides("ada,judge:tiny")[0]
    assert chosen_sides("humans,judge:*")[1]["annotators"] == "only people, judge:*"


def test_step_labels_follow_the_same_annotator_choice(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    episode = run_react(store, steps=2)
    store.preferences.label_step(episode.id, 0, "mc:expert-m4-end", "bad")
    store.preferences.label_step(episode.id, 0, "judge:tiny", "bad")
    store.preferences.label_step(episode.id, 0, "ada", "good")

    def labels(annotators: str) -> list[bool]:
        out = tmp_path / f"prm-{annotators}.jsonl"
        export(store, "prm", out, annotators=annotators)
        return [json.loads(line)["labels"] for line in out.read_text().splitlines()][0]

    assert labels("default") == [True] and labels("humans") == [True]
    assert labels("machines") == [False] and labels("all") == [False]
