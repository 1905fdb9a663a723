"""Episodes side by side (lockstep) vs one after another, on the default model, in one run.

Prints one JSON object (each side of the episodes runs in a fresh process of its own):

- ``batched_speedup_8``: 8 ReAct gridworld episodes of 10 steps (seeds 0-7, sampled at
  temperature 0.7, each its own seed) one after another / the same 8 in lockstep
  (``run_parallel(parallel=8)``: one forward per token for every live episode). Target >= 2.2.
  ``same_episodes`` says whether both runs gave the same actions. The split: one by one, the
  time inside ``generate`` and ``score`` calls (the ``Thought:`` pass that encodes each step's
  new prompt tokens, and the action scoring); in lockstep on the transformers backend every call
  rides in the lanes' packed forwards (``studio.models.hf_lanes``): ``decode_s`` is the
  scheduler's forwards and sampling, ``forwards`` how many, ``packed_tokens`` what they carried
  (``prompt``: generate prefills, ``decode``: one token per live call, ``score``: score calls'
  new prompt tokens and continuations); and the rest (environment, prompts, bookkeeping).
- ``decode_forward_ms`` and ``decode_gain``: the ceiling, measured beside it: one decode forward over a
  900-token cache at 1, 2, 4 and 8 rows, and what a batch of that width gains per token.
- ``values_step_s``: Q of 4 outputs x 4 rollouts x a 5-step horizon at one gridworld step
  (ReAct rollouts at temperature 1), in lockstep (16 at once); beside it the same estimate
  one rollout after another (``values_step_s_one_by_one``) and whether they agree.
- ``engine_batched_speedup_8`` (unless ``--no-engine``): the same 8 episodes through vLLM's CPU
  server (started here from ``.venv-vllm``), one after another / 8 at once (concurrent
  requests; the engine batches and its prefix cache shares the common prompt). Target >= 3.
  Beside it, the engine's ceiling: ``engine_unscored_speedup_8``, the same episodes without the
  requests that score each step's forced ``Thought:`` (so one request a step; the same actions),
  and ``engine_decode_step_ms`` / ``engine_decode_gain_8``, one decode step at 1 and 8 rows
  (sampled as the episodes sample). Side by side the longest episode bounds the wall time:
  ``episode_tokens`` (each side) and ``engine_episode_tokens`` give each episode's tokens, and
  ``balance_bound`` / ``engine_balance_bound`` (all tokens / the longest episode's) the most side
  by side could gain even if a step for 8 episodes cost what a step for one costs.

    python bench/rollouts.py [--episodes 8] [--steps 10] [--no-engine] [--no-values]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.errors import StudioError  # noqa: E402
from studio.models.base import Backend, SamplingParams  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.episodes.rollouts import run_parallel  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402
from studio.scaling.values import estimate_step_values  # noqa: E402


class Timed:
    """Clocks a backend's generate and score calls (one by one; in lockstep, the scores the
    scheduler runs between decode steps: generate calls go through its batch)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.generate_s = self.score_s = 0.0
        self.tokens = 0
        self._generate, self._score = backend.generate, backend.score
        backend.generate = self.generate  # type: ignore[method-assign]
        backend.score = self.score  # type: ignore[method-assign]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self._generate(*args, **kwargs)
        self.generate_s += time.perf_counter() - started
        return result

    def score(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = self._score(*args, **kwargs)
        self.score_s += time.perf_counter() - started
        return result

    def restore(self) -> None:
        self.backend.generate, self.backend.score = self._generate, self._score  # type: ignore[method-assign]


def episodes(backend: Backend, count: int, steps: int, parallel: int) -> dict[str, Any]:
    pools: list[Any] = []

    def job_for(seed: int):
        def job(acting: Backend | None):
            if getattr(acting, "pool", None) is not None and not pools:
                pools.append(acting.pool)
            sampling = SamplingParams(temperature=0.7, max_new_tokens=48, seed=seed)
            runner = EpisodeRunner(
                "gridworld",
                ReActPolicy(acting, ReActConfig(sampling=sampling)),
                config=RunnerConfig(max_steps=steps, max_invalid_actions=steps),
            )
            runner.reset(seed=seed)
            return runner.run()

        return job

    timer = Timed(backend)
    started = time.perf_counter()
    try:
        done = run_parallel([job_for(seed) for seed in range(count)], backend, parallel)
    finally:
        timer.restore()
    wall = time.perf_counter() - started
    failures = [str(d) for d in done if isinstance(d, StudioError)]
    if failures:
        raise SystemExit(f"episodes failed: {failures[0]}")
    split: dict[str, Any] = {"score_s": round(timer.score_s, 2)}
    if pools:  # lockstep: the scheduler's own clock (prefill when calls join, decode steps)
        pool = pools[0]
        split.update(
            prefill_s=round(pool.seconds["prefill"], 2),
            decode_s=round(pool.seconds["decode"], 2),
            decode_steps=pool.steps,
            mean_batch_width=round(pool.lane_steps / max(pool.steps, 1), 2),
        )
        model_s = pool.seconds["prefill"] + pool.seconds["decode"] + pool.seconds["other"] + timer.score_s
        lanes = getattr(pool, "_batcher", None)
        if hasattr(lanes, "forwards"):  # packed lanes: scores and prefills ride in the decode forwards
            split.update(
                forwards=lanes.forwards,
                packed_tokens=dict(lanes.tokens),
                mean_tokens_per_forward=round(sum(lanes.tokens.values()) / max(lanes.forwards, 1), 1),
            )
    else:
        split["generate_s"] = round(timer.generate_s, 2)
        model_s = timer.generate_s + timer.score_s
    per_episode = [sum(len(st.tokens or []) for st in e.steps) for e in done]
    return {
        "wall_s": round(wall, 2),
        **split,
        "rest_s": round(wall - model_s, 2),
        "steps": sum(e.length for e in done),
        "step_tokens": sum(per_episode),
        "episode_tokens": per_episode,
        # Side by side the longest episode bounds the wall time: the most side by side can gain even
        # if a step for every episode cost what a step for one costs.
        "balance_bound": round(sum(per_episode) / max(max(per_episode), 1), 2),
        "prompt_tokens_encoded": sum(s.extra.get("cache", {}).get("encoded_tokens", 0) for e in done for s in e.steps),
        "actions": [[s.action for s in e.steps] for e in done],
    }


def episodes_in_fresh_process(count: int, steps: int, parallel: int) -> dict[str, Any]:
    """:func:`episodes` in a process of its own (the model loaded there, not timed): each side
    starts from the same memory state, whatever the other side or the rest of the bench left."""
    command = [sys.executable, __file__, "--side", str(parallel), "--episodes", str(count), "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {parallel}-at-once side failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def compare_episodes(count: int, steps: int) -> dict[str, Any]:
    alone = episodes_in_fresh_process(count, steps, parallel=1)
    together = episodes_in_fresh_process(count, steps, parallel=count)
    same = alone.pop("actions") == together.pop("actions")
    return {
        f"batched_speedup_{count}": round(alone["wall_s"] / together["wall_s"], 2),
        "same_episodes": same,
        "model_time_speedup": round(
            (alone["generate_s"] + alone["score_s"])
            / (together["prefill_s"] + together["decode_s"] + together["score_s"]),
            2,
        ),
        "one_by_one": alone,
        "lockstep": together,
    }


def values_step(backend: Backend) -> dict[str, Any]:
    """Q of a step's 4 outputs (taken + 3 candidates) by 4 ReAct rollouts each, 5-step horizon."""
    config = ReActConfig(candidates=4, sampling=SamplingParams(temperature=1.0, max_new_tokens=48, seed=0))
    runner = EpisodeRunner("gridworld", ReActPolicy(backend, config))
    runner.reset(seed=0)
    runner.step()
    episode = runner.episode
    factory = lambda i, acting: ReActPolicy(  # noqa: E731
        acting, ReActConfig(sampling=SamplingParams(temperature=1.0, max_new_tokens=48, seed=i))
    )
    common: dict[str, Any] = dict(rollout_policy="react", rollouts=4, horizon=5, model=backend)
    started = time.perf_counter()
    together = estimate_step_values(episode, 0, factory, parallel=16, **common)
    lockstep_s = time.perf_counter() - started
    started = time.perf_counter()
    alone = estimate_step_values(episode, 0, factory, parallel=1, **common)
    alone_s = time.perf_counter() - started
    return {
        "values_step_s": round(lockstep_s, 1),
        "values_step_s_one_by_one": round(alone_s, 1),
        "values_outputs": len(together),
        "values_same": [v.returns for v in together] == [v.returns for v in alone],
    }


def engine(count: int, steps: int) -> dict[str, Any]:
    from studio.models.engines import start_vllm
    from studio.models.resolve import resolve_default

    with start_vllm(resolve_default().path, served_name="smollm2", threads=os.cpu_count() or 2) as server:
        remote = ModelRegistry().load(server.url)
        episodes(remote, 1, 2, parallel=1)  # warm the engine (first requests compile kernels)
        alone = episodes(remote, count, steps, parallel=1)
        together = episodes(remote, count, steps, parallel=count)
        # The ceiling, measured beside it: the same episodes without the requests that score the
        # forced "Thought:" (one generate request per step), and the engine's pure decode gain.
        with patch.object(ReActPolicy, "_written", lambda *args, **kwargs: ([], None)):
            bare_alone = episodes(remote, count, steps, parallel=1)
            bare_together = episodes(remote, count, steps, parallel=count)
        widths = engine_decode(remote)
    return {
        f"engine_batched_speedup_{count}": round(alone["wall_s"] / together["wall_s"], 2),
        "engine_one_by_one_s": alone["wall_s"],
        "engine_lockstep_s": together["wall_s"],
        f"engine_unscored_speedup_{count}": round(bare_alone["wall_s"] / bare_together["wall_s"], 2),
        "engine_unscored_s": [bare_alone["wall_s"], bare_together["wall_s"]],
        "engine_unscored_same_episodes": bare_alone["actions"] == alone["actions"] == bare_together["actions"],
        "engine_episode_tokens": together["episode_tokens"],
        "engine_balance_bound": together["balance_bound"],
        **widths,
    }


def engine_decode(remote: Any, context: int = 900, new_tokens: int = 64) -> dict[str, Any]:
    """The engine's decode step at 1 and 8 rows (ms per step) and what 8 rows gain per token: one
    request vs 8 concurrent ones, all on one ``context``-token prompt that the prefix cache already
    holds (so each is its uncached tail and ``new_tokens`` decode steps)."""
    from concurrent.futures import ThreadPoolExecutor

    prompt = [int(i) for i in np.random.default_rng(0).integers(100, 1000, size=context)]
    body = {"model": remote.served_id, "prompt": prompt, "max_tokens": new_tokens, "ignore_eos": True}
    # Sampled as the episodes sample (vLLM's CPU top-p sorts the whole vocabulary: ~15 ms a step at 8 rows).
    body.update(temperature=0.7, top_p=0.95, seed=0, logprobs=remote.top_k)
    remote.client.post("/completions", body)  # into the prefix cache

    def step_ms(rows: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=rows) as pool:
            list(pool.map(lambda _: remote.client.post("/completions", body), range(rows)))
        return (time.perf_counter() - started) / new_tokens * 1000

    ms = {rows: min(step_ms(rows) for _ in range(3)) for rows in (1, 8)}
    return {
        "engine_decode_step_ms": {str(rows): round(value, 1) for rows, value in ms.items()},
        "engine_decode_gain_8": round(8 * ms[1] / ms[8], 2),
    }


def decode_widths(backend: Backend, context: int = 900, repeats: int = 20) -> dict[str, Any]:
    """The ceiling, measured: one decode forward over a ``context``-token cache at 1, 2, 4 and 8 rows
    (ms), and what batching gains per token at each width (rows x one-row time / batched time)."""
    import torch
    from transformers import DynamicCache

    model, forward_ms = backend.model, {}
    with torch.no_grad():
        for rows in (1, 2, 4, 8):
            cache = DynamicCache()
            model(input_ids=torch.randint(0, 1000, (rows, context)), past_key_values=cache, use_cache=True)
            token = torch.randint(0, 1000, (rows, 1))
            started = time.perf_counter()
            for _ in range(repeats):
                model(input_ids=token, past_key_values=cache, use_cache=True)
            forward_ms[rows] = (time.perf_counter() - started) / repeats * 1000
    return {
        "decode_forward_ms": {str(rows): round(ms, 1) for rows, ms in forward_ms.items()},
        "decode_gain": {str(rows): round(rows * forward_ms[1] / ms, 2) for rows, ms in forward_ms.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-engine", action="store_true", help="skip the vLLM server part")
    parser.add_argument("--no-values", action="store_true", help="skip the step values part")
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)  # one side of the episodes, as JSON
    args = parser.parse_args()
    if args.side is not None:
        backend = ModelRegistry().load("default", device="cpu")
        print(json.dumps(episodes(backend, args.episodes, args.steps, parallel=args.side)))
        return
    # Each side of the episodes runs in a fresh process, one after the other: in one process the
    # side-by-side run measured 45-50 s first but 66-77 s after the decode-width forwards below.
    result: dict[str, Any] = compare_episodes(args.episodes, args.steps)
    backend = ModelRegistry().load("default", device="cpu")
    result = {"model": backend.card.id, "device": "cpu", "threads": os.cpu_count(), **result}
    result.update(decode_widths(backend))
    if not args.no_values:
        result.update(values_step(backend))
    if not args.no_engine:
        backend.unload()  # the engine needs the memory and the cores
        result.update(engine(args.episodes, args.steps))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
