"""Web tasks in Chromium: how long a reset and a step take, what a live browser costs, and episodes
side by side vs one after another, in one run.

Prints one JSON object:

- ``reset_s_median`` / ``step_s_median``: the environment alone (no model), ``web:miniwob.click-checkboxes``,
  median over ``--reps`` resets (each launches a browser and loads the task) and steps (a click on a
  checkbox, read back with BrowserGym's default 0.5 s settling wait); ``step_s_median_wait0`` the same
  step with no settling wait (what the browser itself costs);
- ``browser_pss_mb``: memory of one live browser (the proportional set size of the Chromium processes
  of ``--browsers`` live environments, divided by their number; shared pages split between them);
- ``episodes_per_minute_one_by_one`` / ``episodes_per_minute_side_by_side`` and ``side_by_side_speedup``
  (target >= 3: browsers wait on pages, not on the CPU): ``--episodes`` random-policy episodes of
  ``web:miniwob.click-checkboxes`` (seeds 0.., at most 5 steps), one after another, then all at once
  (``run_parallel``, a browser each). Both sides start warm: the pool keeps ``--episodes`` browser
  threads, each with its Chromium launched (a reset opens a new context in it).

    python bench/web.py [--reps 50] [--episodes 8] [--browsers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.agents.scripted import RandomPolicy  # noqa: E402
from studio.envs.registry import make_env  # noqa: E402
from studio.envs.web.browser import ACTORS, chromium_processes  # noqa: E402
from studio.episodes.rollouts import run_parallel  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402

TASK = "web:miniwob.click-checkboxes"


def _median_seconds(action, reps: int) -> float:
    times = []
    for rep in range(reps):
        started = time.perf_counter()
        action(rep)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _median_step_seconds(env, rng: np.random.Generator, reps: int) -> float:
    """Median seconds of a random click (a new episode on seed 0 whenever one ends, untimed)."""

    def step(_rep: int) -> None:
        if env.done:
            env.reset(seed=0)
        env.step(env.sample_action(rng))

    return _median_seconds(step, reps)


def latencies(reps: int) -> dict[str, float]:
    """Median reset and step seconds of the environment alone."""
    out = {}
    env = make_env(TASK)
    out["reset_s_median"] = _median_seconds(lambda rep: env.reset(seed=rep), reps)
    rng = np.random.default_rng(0)
    out["step_s_median"] = _median_step_seconds(env, rng, reps)
    env.close()
    fast = make_env(TASK, {"wait": 0.0})
    fast.reset(seed=0)
    out["step_s_median_wait0"] = _median_step_seconds(fast, rng, reps)
    fast.close()
    return out


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def browser_memory(browsers: int) -> dict[str, float]:
    envs = [make_env(TASK, {"wait": 0.0}) for _ in range(browsers)]
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    processes = chromium_processes()
    total = sum(_pss_mb(pid) for pid in processes)
    for env in envs:
        env.close()
    return {"browser_pss_mb": round(total / browsers, 1), "chromium_processes_per_browser": len(processes) / browsers}


def episodes(count: int, parallel: int) -> float:
    """Seconds for ``count`` random episodes, ``parallel`` at once."""
    config = RunnerConfig(max_steps=5, record_frames=True)

    def job(seed: int):
        def run(_backend):
            runner = EpisodeRunner(TASK, RandomPolicy(seed=seed), config=config)
            try:
                runner.reset(seed=seed)
                return runner.run()
            finally:
                runner.env.close()

        return run

    started = time.perf_counter()
    results = run_parallel([job(seed) for seed in range(count)], None, parallel)
    elapsed = time.perf_counter() - started
    assert all(not isinstance(r, Exception) and r.done for r in results), results
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--browsers", type=int, default=4)
    args = parser.parse_args()
    out: dict[str, object] = {"task": TASK, "cpus": os.cpu_count()}
    out.update(latencies(args.reps))
    out.update(browser_memory(args.browsers))
    # Warm: the browser threads, their Playwright drivers and browsers exist before either side is timed
    # (the pool keeps as many as run side by side here, as it does between the waves of a sweep).
    ACTORS.keep = max(ACTORS.keep, args.episodes)
    episodes(args.episodes, args.episodes)
    one = episodes(args.episodes, 1)
    side = episodes(args.episodes, args.episodes)
    out["episodes"] = args.episodes
    out["episodes_per_minute_one_by_one"] = round(60 * args.episodes / one, 1)
    out["episodes_per_minute_side_by_side"] = round(60 * args.episodes / side, 1)
    out["side_by_side_speedup"] = round(one / side, 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
