"""Building stores with real episodes for the storage tests (a real SQLite file each time)."""

from __future__ import annotations

from pathlib import Path

from agent_studio.storage import Store, open_store
from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import make_policy
from studio.models.scripted import ScriptedBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Episode

#: Three different outputs per step: with candidates=3 every step has three distinct texts.
OUTPUTS = [
    "Thought: The goal is east.\nAction: go east",
    "Thought: Try north first.\nAction: go north",
    "Thought: <img src=x onerror=alert(1)> fly!\nAction: fly",
]


def new_store(tmp_path: Path, name: str = "studio.db") -> Store:
    return open_store(tmp_path / name)


def run_react(
    store: Store,
    seed: int = 0,
    steps: int = 3,
    candidates: int = 3,
    env: str = "gridworld",
    outputs: list[str] | None = None,
    frames: bool = True,
) -> Episode:
    """A scripted ReAct episode with candidates, stored step by step."""
    policy = ReActPolicy(ScriptedBackend(outputs or OUTPUTS), ReActConfig(candidates=candidates))
    runner = EpisodeRunner(
        env, policy, sinks=[store.episodes.sink()], config=RunnerConfig(max_steps=steps, record_frames=frames)
    )
    runner.reset(seed=seed)
    return runner.run()


def run_scripted(
    store: Store, policy: str, seed: int = 0, env: str = "gridworld", max_steps: int | None = None
) -> Episode:
    """An expert or random episode, stored."""
    runner = EpisodeRunner(
        env,
        make_policy(policy),
        sinks=[store.episodes.sink()],
        config=RunnerConfig(max_steps=max_steps, record_frames=False),
    )
    runner.reset(seed=seed)
    return runner.run()


def judged_pairs(store: Store, seeds: int = 3, annotators: tuple[str, ...] = ("ada",)) -> Store:
    """Scripted ReAct episodes on ``seeds`` seeds (2 steps, 3 candidates, no frames), every candidate pair
    queued and judged, left and right in turn, by ``annotators`` in turn: rows to train on."""
    for seed in range(seeds):
        run_react(store, seed=seed, steps=2, candidates=3, frames=False)
    store.preferences.pairs_from_candidates()
    for index, pair in enumerate(store.preferences.pairs()):
        who = annotators[index % len(annotators)]
        store.preferences.annotate(pair.id, who, ("left", "right")[index % 2], as_shown=False)
    return store
