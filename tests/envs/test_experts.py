"""Every built-in environment's expert solves every seed (0-19 at least) through the runner."""

from __future__ import annotations

import pytest

from studio.agents.scripted import ExpertPolicy
from studio.episodes.runner import EpisodeRunner, RunnerConfig

CONFIGS = [
    ("gridworld", {}, 50),
    ("gridworld", {"size": 5, "difficulty": "easy"}, 20),
    ("gridworld", {"size": 15, "difficulty": "hard"}, 20),
    ("household", {}, 50),
    ("household", {"rooms": 3, "task": "heat"}, 20),
    ("household", {"rooms": 1, "task": "clean"}, 20),
    ("wikihop", {}, 50),
    ("wikihop", {"hops": 3}, 30),
]


@pytest.mark.parametrize(("env", "options", "seeds"), CONFIGS, ids=[f"{e}-{o}" for e, o, _ in CONFIGS])
def test_expert_solves_every_seed(env: str, options: dict, seeds: int) -> None:
    runner = EpisodeRunner(env, ExpertPolicy(), env_options=options, config=RunnerConfig(record_frames=False))
    failures = []
    for seed in range(seeds):
        runner.reset(seed=seed)
        episode = runner.run()
        if not episode.success or not all(s.valid for s in episode.steps):
            failures.append((seed, episode.end_reason))
    assert failures == []
