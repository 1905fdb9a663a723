"""Baseline success rates: the default model (both action modes) next to the expert and random policies.

Prints one JSON object: for each environment and policy, successes over seeds 0..N-1,
mean steps and mean seconds per step. Greedy decoding; step limits per environment are
part of the output (a 135M model on 2 CPU cores is slow, so the limits are modest).

    python bench/baseline.py [--seeds 20] [--model default] [--out episodes.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.agents.scripted import ExpertPolicy, RandomPolicy  # noqa: E402
from studio.models.base import SamplingParams  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.episodes.runner import EpisodeRunner, JsonlSink, RunnerConfig  # noqa: E402

STEP_LIMITS = {"gridworld": 20, "household": 15, "wikihop": 10}


def run_policy(env: str, policy, seeds: int, sinks: list) -> dict:
    runner = EpisodeRunner(
        env, policy, sinks=sinks, config=RunnerConfig(max_steps=STEP_LIMITS[env], record_frames=False)
    )
    successes, steps, started = 0, 0, time.perf_counter()
    for seed in range(seeds):
        runner.reset(seed=seed)
        episode = runner.run()
        successes += bool(episode.success)
        steps += episode.length
    seconds = time.perf_counter() - started
    return {
        "successes": successes,
        "episodes": seeds,
        "success_rate": successes / seeds,
        "mean_steps": steps / seeds,
        "seconds_per_step": seconds / max(steps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--model", default="default")
    parser.add_argument("--envs", nargs="+", default=list(STEP_LIMITS))
    parser.add_argument("--out", default=None, help="also write every episode to this JSONL file")
    args = parser.parse_args()
    backend = ModelRegistry().load(args.model)
    sinks = [JsonlSink(args.out)] if args.out else []
    results = []
    for env in args.envs:
        policies = [
            ("expert", ExpertPolicy()),
            ("random", RandomPolicy(seed=0)),
            (
                "react-generate",
                ReActPolicy(
                    backend,
                    ReActConfig(action_mode="generate", sampling=SamplingParams(temperature=0.0, max_new_tokens=48)),
                ),
            ),
            (
                "react-score",
                ReActPolicy(
                    backend,
                    ReActConfig(action_mode="score", sampling=SamplingParams(temperature=0.0, max_new_tokens=48)),
                ),
            ),
        ]
        for label, policy in policies:
            row = {
                "env": env,
                "policy": label,
                "max_steps": STEP_LIMITS[env],
                **run_policy(env, policy, args.seeds, sinks),
            }
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
    print(
        json.dumps(
            {
                "benchmark": "baseline",
                "model": backend.info["id"],
                "device": backend.info["device"],
                "seeds": args.seeds,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
