"""Scaling out, in one run: what the Ray executor costs and gains, and what a second replica gains.

Prints one JSON object:

- ``overhead``: the same sweep of trivial cells (the expert on gridworld, 1 step each) run here one at a time
  and on a Ray cluster started for the bench on this machine with one worker (so nothing overlaps): seconds
  per cell each way, and the difference (Ray's per-cell scheduling and the episode's trip back as JSON,
  less the store's: here each step is its own transaction, from Ray the episode is stored whole in one).
- ``env_bound``: cells whose time is the environment's (a web task in Chromium, random actions) on Ray with
  1 worker vs 2: episodes per second each way and the speedup (each worker keeps its browser between cells).
- ``replicas``: vLLM's CPU build serving the default model, one core a replica: generations per second from
  4 concurrent sessions against one replica vs two behind one name (:mod:`studio.models.replicas`), and
  how the requests were shared.

    python bench/scale_out.py [--cells 40] [--web-cells 8] [--requests 16] [--parts overhead,env_bound,replicas]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from agent_studio.storage import open_store  # noqa: E402
from studio.evaluation.sweep import SweepSpec  # noqa: E402
from studio.executors import ExecutorOptions, make_executor  # noqa: E402
from studio.executors.sweeps import run_sweep_with  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402

WEB_TASK = "web:miniwob.click-button"


def timed(spec: SweepSpec, executor: Any, folder: Path) -> float:
    """Seconds to run ``spec`` into a fresh store on ``executor`` (None: here, one at a time)."""
    with open_store(folder / f"sweep-{time.monotonic_ns()}.db") as store:
        record = store.sweeps.create(spec)
        started = time.perf_counter()
        outcome = run_sweep_with(executor, spec, record.id, [store.episodes.sink()], ModelRegistry().load)
        seconds = time.perf_counter() - started
        if outcome.failed or outcome.completed != spec.size:
            raise SystemExit(f"the sweep failed: {outcome.failed[:1]}")
    return seconds


def ray_executor(workers: int) -> Any:
    executor = make_executor("ray", ExecutorOptions(address="local", workers=workers))
    executor.workers()  # started before the clock: a cluster's workers outlive one sweep
    executor.ray.get([actor.pid.remote() for actor in executor.workers()])
    return executor


def overhead(cells: int, folder: Path) -> dict[str, Any]:
    spec = SweepSpec.build(["expert"], ["gridworld"], f"0-{cells - 1}", {"max_steps": 1})
    local_s = timed(spec, None, folder)
    executor = ray_executor(1)
    try:
        timed(spec, executor, folder)  # warm: the workers import the studio on their first cell
        ray_s = timed(spec, executor, folder)
    finally:
        executor.close()
    return {
        "cells": cells,
        "local_s_per_cell": round(local_s / cells, 4),
        "ray_s_per_cell": round(ray_s / cells, 4),
        "ray_overhead_s_per_cell": round((ray_s - local_s) / cells, 4),
    }


def env_bound(cells: int, folder: Path) -> dict[str, Any]:
    spec = SweepSpec.build(["random"], [WEB_TASK], f"0-{cells - 1}", {"max_steps": 5})
    result: dict[str, Any] = {"env": WEB_TASK, "cells": cells}
    for workers in (1, 2):
        executor = ray_executor(workers)
        try:
            timed(SweepSpec.build(["random"], [WEB_TASK], f"0-{workers - 1}", {"max_steps": 1}), executor, folder)
            seconds = timed(spec, executor, folder)  # each worker's browser is up before the clock
        finally:
            executor.close()
        result[f"workers_{workers}_episodes_per_s"] = round(cells / seconds, 3)
    result["speedup"] = round(result["workers_2_episodes_per_s"] / result["workers_1_episodes_per_s"], 2)
    return result


def generations_per_s(name: str, requests: int, sessions: int = 4) -> tuple[float, Counter]:
    from studio.models.base import SamplingParams

    backend = ModelRegistry().load(name)
    chat = [{"role": "user", "content": "Say something about grid worlds."}]
    sampling = SamplingParams(temperature=0.0, max_new_tokens=32, ignore_eos=True)
    backend.generate(chat, sampling=sampling)  # warm
    answered: Counter = Counter()
    lock = threading.Lock()
    left = list(range(requests))

    def session() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            result = backend.generate(chat, sampling=sampling)
            with lock:
                answered[result.served_by] += 1

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.perf_counter() - started), answered


def replicas(requests: int, rounds: int = 2) -> dict[str, Any]:
    """One replica vs two, alternating ``rounds`` times (a busy machine's drift falls on both alike)."""
    from studio.models.engines import start_vllm
    from studio.models.resolve import resolve_default

    folder = resolve_default().path
    single: list[float] = []
    both: list[float] = []
    pooled: list[float] = []  # the one replica under two names: the pool's own cost, no second engine
    shared: Counter = Counter()
    with start_vllm(folder, served_name="smollm2", threads=1, first_core=0) as one:
        with start_vllm(folder, served_name="smollm2", threads=1, first_core=1) as two:
            for _ in range(rounds):
                single.append(generations_per_s(one.url, requests)[0])
                rate, answered = generations_per_s(f"{one.url},{two.url}", requests)
                both.append(rate)
                shared.update(answered)
                pooled.append(generations_per_s(f"{one.url},{one.url.replace('127.0.0.1', 'localhost')}", requests)[0])
    return {
        "requests": requests,
        "one_replica_per_s": [round(r, 3) for r in single],
        "two_replicas_per_s": [round(r, 3) for r in both],
        "one_replica_by_two_names_per_s": [round(r, 3) for r in pooled],
        "speedup": round(sum(both) / sum(single), 2),
        "answered_by": {str(k): v for k, v in shared.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--web-cells", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--parts", default="overhead,env_bound,replicas", help="which measurements, comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "overhead" in parts:
            result["overhead"] = overhead(args.cells, folder)
        if "env_bound" in parts:
            result["env_bound"] = env_bound(args.web_cells, folder)
    if "replicas" in parts:
        result["replicas"] = replicas(args.requests)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
