"""Fork cost: restoring a step's snapshot vs replaying the episode up to it, side by side.

Prints one JSON object. For each environment: mean seconds per fork at the last step of a
recorded episode by ``set_state`` (what the runner does) and by reset + replaying every
action (what a runner without snapshots would do), their ratio, the episode length, the
mean snapshot size in bytes, and plain env steps per second.

    python bench/fork.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from studio.agents.scripted import ExpertPolicy, RandomPolicy  # noqa: E402
from studio.envs import make_env  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402

CASES = [
    ("gridworld", {"size": 15, "difficulty": "hard"}, "expert"),
    ("household", {"rooms": 3}, "expert"),
    ("wikihop", {"hops": 3}, "expert"),
    ("gym:FrozenLake-v1", {"map_name": "8x8"}, "random"),
    ("gym:Taxi-v4", {}, "random"),
]


def measure(name: str, options: dict, policy: str, repeats: int) -> dict:
    runner = EpisodeRunner(
        name,
        ExpertPolicy() if policy == "expert" else RandomPolicy(seed=1),
        env_options=options,
        config=RunnerConfig(record_frames=False, max_steps=200),
    )
    runner.reset(seed=3)
    episode = runner.run()
    last = episode.steps[-1]
    actions = [s.action for s in episode.steps[:-1]]
    env = make_env(name, options)
    env.reset(seed=3)
    snapshot_times, replay_times = [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        started = time.perf_counter()
        env.reset(seed=episode.seed)
        env.set_state(last.state)
        snapshot_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        env.reset(seed=episode.seed)
        for action in actions:
            env.step(action)
        replay_times.append(time.perf_counter() - started)
    started = time.perf_counter()
    for step in episode.steps:
        env.step(step.action)
    sizes = [len(json.dumps(s.state)) for s in episode.steps]
    steps_per_s = len(episode.steps) / max(time.perf_counter() - started, 1e-9)
    snapshot, replay = statistics.median(snapshot_times), statistics.median(replay_times)
    return {
        "env": name,
        "options": options,
        "episode_steps": episode.length,
        "fork_by_snapshot_s": snapshot,
        "fork_by_replay_s": replay,
        "replay_over_snapshot": replay / snapshot,
        "snapshot_bytes_mean": statistics.mean(sizes),
        "env_steps_per_s": steps_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    results = [measure(name, options, policy, args.repeats) for name, options, policy in CASES]
    print(json.dumps({"benchmark": "fork", "repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
