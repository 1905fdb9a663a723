"""The real embedded default model (SmolLM2-135M-Instruct), offline: the path a new user takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.models.base import SamplingParams
from studio.models.registry import ModelRegistry
from studio.episodes.runner import EpisodeRunner, RunnerConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_model(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    return ModelRegistry().load("default")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_three_react_steps_on_gridworld(default_model) -> None:
    assert default_model.info["architecture"] == "LlamaForCausalLM" and default_model.info["layers"] == 30
    policy = ReActPolicy(default_model, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40)))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=10))
    runner.reset(seed=0)
    steps = [runner.step() for _ in range(3)]
    for step in steps:
        assert step.valid, step.raw  # few-shot + "Thought:" prefix: the model keeps the format
        assert step.thought and step.action in runner.env.valid_actions()
        assert step.tokens and all(t.logprob <= 0 for t in step.tokens)
    for step in steps[1:]:
        assert step.extra["cache"]["reused_tokens"] > 0.8 * step.extra["cache"]["prompt_tokens"]
    assert runner.episode.model["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_score_mode_on_household(default_model) -> None:
    policy = ReActPolicy(
        default_model, ReActConfig(action_mode="score", sampling=SamplingParams(temperature=0.0, max_new_tokens=24))
    )
    runner = EpisodeRunner("household", policy)
    runner.reset(seed=0)
    step = runner.step()
    assert step.valid and step.action_logprobs and step.action in step.action_logprobs
    assert 0 < step.extra["chosen_action_probability"] <= 1


def test_a_videos_frames_show_where_the_model_looked(default_model) -> None:
    import numpy as np

    from studio.envs.registry import env_at
    from studio.analysis.attention import policy_written
    from studio.viz.attention import projection_image
    from studio.viz.video import attention_frames, episode_frames

    policy = ReActPolicy(default_model, ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=40)))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=2, record_frames=False))
    runner.reset(seed=0)
    episode = runner.run()
    plain = episode_frames(episode)
    laid = attention_frames(episode, plain, default_model)
    assert len(laid) == len(plain) == 3 and np.array_equal(laid[-1], plain[-1])  # the end: no decision
    env = env_at(episode.env, episode.env_options, episode.seed, None)
    for step in episode.steps:
        amap = default_model.attention(
            step.prompt, step.raw, instruction=episode.instruction, observation=step.observation,
            written=policy_written(step.raw, step.tokens),
        )  # fmt: skip
        values = amap.aggregate("mean", span="action")
        expected = projection_image(amap, values, env, step.observation, plain[step.index])
        assert expected is not None and np.array_equal(laid[step.index], expected)
        assert not np.array_equal(laid[step.index], plain[step.index])


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment
    )


def test_cli_react_run_with_candidates_is_stored_paired_and_exported(tmp_path: Path) -> None:
    """Run, pairs, every export and stats on a real model, as a user types them."""
    db = str(tmp_path / "runs.db")
    result = cli(
        "run",
        "--env",
        "gridworld",
        "--policy",
        "react",
        "--model",
        "default",
        "--candidates",
        "3",
        "--seed",
        "0",
        "--max-steps",
        "3",
        "--db",
        db,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["policy"] == "react" and summary["steps"] == 3 and f"stored in sqlite:///{db}" in result.stderr

    from agent_studio.storage import open_store

    store = open_store(db)
    episode = store.episodes.get(summary["episode_id"])
    assert episode.model["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and episode.policy_config["temperature"] == 0.7
    assert [len(s.candidates) for s in episode.steps] == [2, 2, 2] and all(s.prompt and s.tokens for s in episode.steps)

    result = cli("pairs", "--db", db, "--from", "candidates")
    assert result.returncode == 0, result.stderr
    made = int(result.stdout.split()[1])
    assert made >= 1 and result.stdout.startswith(f"made {made} pairs")
    assert len(store.preferences.pairs()) == made
    for item in store.preferences.queue("ada", limit=made):
        store.preferences.annotate(item.pair_id, "ada", "left")

    for fmt in ("dpo", "reward", "prm", "kto", "episodes"):
        result = cli("export", "--db", db, "--format", fmt, "--out", str(tmp_path / f"{fmt}.jsonl"))
        assert result.returncode == 0, result.stderr
        written = json.loads(result.stdout)
        assert written["format"] == fmt and (tmp_path / f"{fmt}.jsonl").exists()
        assert written["records"] == len((tmp_path / f"{fmt}.jsonl").read_text().splitlines())
    assert json.loads((tmp_path / "dpo.jsonl").read_text().splitlines()[0])["prompt"][0]["role"] == "system"
    result = cli("stats", "--db", db)
    assert result.returncode == 0 and "episodes: 1 (1 finished), steps: 3, candidates: 6" in result.stdout
    assert f"pairs: {made} (step {made})" in result.stdout


def test_cli_react_run_on_babyai_as_the_readme_says(tmp_path: Path) -> None:
    """The README's BabyAI command, offline, on the default model: a map the model reads, named actions."""
    db = str(tmp_path / "runs.db")
    args = ("--env", "gym:BabyAI-GoToRedBall-v0", "--policy", "react", "--model", "default", "--max-steps", "3")
    result = cli("run", *args, "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["env"] == "gym:BabyAI-GoToRedBall-v0" and summary["steps"] == 3

    from agent_studio.storage import open_store

    episode = open_store(db).episodes.get(summary["episode_id"])
    assert episode.instruction.startswith("Mission: go to the red ball.")
    first = episode.steps[0]
    assert "################" in first.observation and "You carry nothing." in first.observation
    assert all(step.tokens for step in episode.steps)
