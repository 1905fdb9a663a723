"""Trace records: lossless JSON round-trip, schema versioning, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studio.errors import StudioError
from studio.trace import SCHEMA_VERSION, Candidate, Episode, Step, TokenInfo, read_episodes_jsonl


def full_episode() -> Episode:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)  # odd sizes, random pixels
    tokens = [
        TokenInfo(id=5, text=" go", logprob=-0.1 - 0.2, entropy=1.2345678901234567),
        TokenInfo(id=9, text="\u00e9\u6f22", logprob=-3e-12, entropy=None),
    ]
    step = Step(
        index=0,
        observation="#@.\n<b>map</b>",
        action="go north",
        frame=frame,
        actor="react",
        prompt=[{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "Go."}],
        raw="Thought: north.\nAction: go north",
        thought="north.",
        valid=False,
        invalid_reason="'x' is not one of the valid actions now.",
        reward=0.25,
        terminated=False,
        truncated=True,
        next_observation="Invalid action",
        info={"nested": {"list": [1, 2.5, None, "x"]}, "success": False},
        timing={"policy_s": 0.123456789, "env_s": 1e-7},
        tokens=tokens,
        action_logprobs={"go north": -0.01, "go south": -4.6},
        candidates=[
            Candidate(raw="Action: go south", thought=None, action="go south", tokens=tokens[:1]),
            Candidate(raw="??", action=None, valid=False, invalid_reason="no action"),
        ],
        extra={"cache": {"reused_tokens": 120, "full_encode": False}},
        state={"agent": [1, 2], "done": False},
    )
    return Episode(
        env="gridworld",
        seed=7,
        env_options={"size": 7, "difficulty": "hard"},
        instruction="Reach G.",
        policy="react",
        policy_config={"temperature": 0.7},
        model={"id": "default", "dtype": "float32"},
        steps=[step, Step(index=1, observation="o", action=None, valid=False, invalid_reason="no action")],
        success=False,
        end_reason="step limit",
        parent_id="abc",
        forked_at=1,
        ended_at="2026-11-21T00:00:00.000+00:00",
    )


def test_json_round_trip_is_lossless() -> None:
    episode = full_episode()
    text = episode.to_json()
    back = Episode.from_json(text)
    assert back.to_json() == text
    assert np.array_equal(back.steps[0].frame, episode.steps[0].frame)
    assert back.steps[0].frame.dtype == np.uint8
    assert back.steps[0].tokens == episode.steps[0].tokens
    assert back.steps[0].candidates[0].id == episode.steps[0].candidates[0].id
    assert back.steps[0].timing["policy_s"] == 0.123456789
    assert back.total_return == 0.25 and back.length == 2
    assert back.done  # it has ended (ended_at), though its last step neither terminated nor truncated
    back.ended_at = None
    assert not back.done


def test_serialised_episode_carries_schema_version() -> None:
    data = json.loads(full_episode().to_json())
    assert data["schema_version"] == SCHEMA_VERSION


def test_newer_schema_is_refused_with_a_clear_message() -> None:
    data = full_episode().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StudioError, match="newer than this studio"):
        Episode.from_dict(data)


def test_record_missing_optional_fields_loads_with_defaults() -> None:
    minimal = {"env": "gridworld", "seed": 1, "steps": [{"index": 0, "observation": "x", "action": "go north"}]}
    episode = Episode.from_dict(minimal)
    assert episode.steps[0].valid and episode.steps[0].candidates == [] and episode.steps[0].frame is None


def test_bad_jsonl_line_names_the_line(tmp_path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text(full_episode().to_json() + "\n{not json\n", encoding="utf-8")
    with pytest.raises(StudioError, match="line 2"):
        read_episodes_jsonl(str(path))


def test_summary_has_cli_fields() -> None:
    summary = full_episode().summary()
    assert {"episode_id", "env", "seed", "policy", "success", "return", "steps"} <= set(summary)
    assert summary["return"] == 0.25 and summary["steps"] == 2


def test_a_steps_outputs_are_named_once_taken_then_candidate_n() -> None:
    step = Step(
        index=2,
        observation="o",
        action="go east",
        raw="Action: go east",
        candidates=[Candidate(raw="Action: x", action="x", valid=False)],
    )
    taken, first = step.outputs()
    assert (taken.name, taken.action, taken.candidate_id) == ("taken", "go east", None)
    assert (first.name, first.action, first.valid, first.candidate_id) == (
        "candidate 1",
        "x",
        False,
        step.candidates[0].id,
    )
    assert step.output("candidate 1") == first
    with pytest.raises(StudioError, match="Step 2 has no candidate 2: pick taken or candidate 1 to 1."):
        step.output("candidate 2")
