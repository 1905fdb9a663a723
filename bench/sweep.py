"""Sweeps one by one vs side by side, in one run: episodes per second.

Prints one JSON object:

- ``scripted``: expert and random x gridworld, household, wikihop x 10 seeds (60 episodes, step
  limit 30), stored in a fresh SQLite file, run with ``parallel`` 1 and 8. These policies have no
  model, so side by side only overlaps threads (on 2 cores: little to gain); ``speedup`` is the
  ratio of episodes/s.
- ``default_model`` (unless ``--no-model``): the default model x gridworld x 4 seeds, 3 steps each,
  with ``parallel`` 1 and 4 (lockstep: one batched forward per token across live episodes), and
  whether both gave the same actions.

    python bench/sweep.py [--no-model] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent_studio.storage import open_store  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.evaluation.sweep import SweepSpec, run_sweep  # noqa: E402


def timed_sweep(spec: SweepSpec, parallel: int, load: Any, folder: Path) -> tuple[float, list[list[str | None]]]:
    """Seconds to run ``spec`` into a fresh store with ``parallel`` side by side, and each cell's actions."""
    with open_store(folder / f"sweep-{parallel}-{time.monotonic_ns()}.db") as store:
        record = store.sweeps.create(spec)
        started = time.perf_counter()
        outcome = run_sweep(spec, record.id, [store.episodes.sink()], load, parallel=parallel)
        seconds = time.perf_counter() - started
        if outcome.failed:
            raise SystemExit(f"the sweep failed: {outcome.failed[0]}")
        actions = [[step.action for step in episode.steps] for episode in store.sweeps.episodes_of(record.id)]
    return seconds, actions


def compare(spec: SweepSpec, wide: int, load: Any, folder: Path) -> dict[str, Any]:
    one_s, one_actions = timed_sweep(spec, 1, load, folder)
    wide_s, wide_actions = timed_sweep(spec, wide, load, folder)
    return {
        "episodes": spec.size,
        "one_by_one_s": round(one_s, 2),
        f"parallel_{wide}_s": round(wide_s, 2),
        "one_by_one_episodes_per_s": round(spec.size / one_s, 3),
        f"parallel_{wide}_episodes_per_s": round(spec.size / wide_s, 3),
        "speedup": round(one_s / wide_s, 2),
        "same_episodes": one_actions == wide_actions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--no-model", action="store_true", help="skip the default-model part")
    args = parser.parse_args()
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        scripted = SweepSpec.build(
            ["expert", "random"], ["gridworld", "household", "wikihop"], f"0-{args.seeds - 1}", {"max_steps": 30}
        )
        result["scripted"] = compare(scripted, 8, lambda name: None, Path(folder))
        if not args.no_model:
            registry = ModelRegistry()
            backend = registry.load("default")
            spec = SweepSpec.build(["default"], ["gridworld"], "0-3", {"max_steps": 3})
            result["default_model"] = compare(spec, 4, lambda name: backend, Path(folder))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
