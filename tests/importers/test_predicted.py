"""Predicted against recorded actions (the worm plot): errors recomputed with NumPy, chunks kept,
a wrong answer refused in one line, and the page written by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent_studio.storage import open_store
from studio.errors import StudioError
from studio.evaluation.predicted import hold, linear, predict_actions
from studio.trace import Episode, Step
from studio.viz.worm import worm_figure

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = np.array([[0.0, 1.0], [0.5, 1.0], [1.5, 0.5], [3.0, 0.0], [3.5, -1.0]])


def robot_episode() -> Episode:
    steps = [
        Step(index=t, observation=f"state {t}", action=str(list(a)), extra={"action_vector": a.tolist(), "state": [t]})
        for t, a in enumerate(ACTIONS)
    ]
    return Episode(
        env="lerobot:toy",
        seed=None,
        env_options={"action_names": ["x", "<b>grip</b>"]},
        steps=steps,
        source={"format": "lerobot"},
    )


def chunked(step: Step, episode: Episode) -> np.ndarray:
    """A policy predicting 3 steps ahead: the recorded action plus 0.1, then drifting by 0.2 per step."""
    base = np.asarray(step.extra["action_vector"]) + 0.1
    return np.stack([base + 0.2 * k for k in range(3)])


def test_errors_per_step_and_dimension_equal_numpy() -> None:
    episode = robot_episode()
    held = predict_actions(episode, hold)
    expected = np.vstack([ACTIONS[:1], ACTIONS[:-1]])
    np.testing.assert_allclose(held.predicted, expected)
    np.testing.assert_allclose(held.error, np.sqrt(((expected - ACTIONS) ** 2).sum(axis=1)))
    np.testing.assert_allclose(held.mean_abs_error, np.abs(expected - ACTIONS).mean(axis=0))
    extrapolated = predict_actions(episode, linear).predicted
    np.testing.assert_allclose(extrapolated[3], 2 * ACTIONS[2] - ACTIONS[1])


def test_a_chunk_is_compared_by_its_first_action_and_kept_whole() -> None:
    prediction = predict_actions(robot_episode(), chunked)
    np.testing.assert_allclose(prediction.error, np.full(5, np.sqrt(2) * 0.1))
    assert prediction.chunks[1].shape == (3, 2)
    figure = worm_figure(prediction, title="<script>x</script>")
    recorded = [t for t in figure.data if t.name == "recorded"]
    assert [list(t.y) for t in recorded] == [ACTIONS[:, 0].tolist(), ACTIONS[:, 1].tolist()]
    worms = [t for t in figure.data if t.name == "predicted chunks"]
    assert len(worms) == 2 * 5 and list(worms[0].x) == [0, 1, 2]
    assert "<script>" not in figure.layout.title.text and "&lt;b&gt;grip" in figure.layout.annotations[1].text


@pytest.mark.parametrize("answer", [[1.0], [[1.0, 2.0, 3.0]], [float("nan"), 0.0], []])
def test_a_wrong_answer_is_one_line(answer) -> None:
    with pytest.raises(StudioError, match="step 0"):
        predict_actions(robot_episode(), lambda step, episode: answer)


def test_an_episode_without_action_vectors_is_refused() -> None:
    with pytest.raises(StudioError, match="no recorded action vectors"):
        predict_actions(Episode(env="gridworld", seed=0, steps=[Step(index=0, observation="o", action="a")]), hold)


def test_the_cli_writes_the_worm_plot(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with open_store(db) as store:
        episode = robot_episode()
        store.episodes.save(episode)
    done = subprocess.run(
        [sys.executable, "app.py", "predict", episode.id, "--policy", "tests.importers.test_predicted:chunked",
         "--out", str(tmp_path / "worm.html"), "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["mean_error"] == pytest.approx(np.sqrt(2) * 0.1) and summary["steps"] == 5
    assert (tmp_path / "worm.html").stat().st_size > 100_000  # plotly.js inside: opens with no network
    bad = subprocess.run(
        [sys.executable, "app.py", "predict", episode.id, "--policy", "os:nothing_here", "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "No callable os:nothing_here" in bad.stderr
