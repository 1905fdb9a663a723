"""The remote backend against a real vLLM server on the default model, measured side by side in one run.

Starts vLLM's CPU build (``.venv-vllm``, as the test suite does) on the default model's
converted folder and loads the same model in-process; prints one JSON object:

- ``concurrent_speedup_8``: 8 sessions each stepping a 10-step ReAct gridworld episode at once
  (greedy, same settings), total wall time through the in-process backend (sessions queue on
  its device lock) / through the engine (every request goes at once; the engine batches).
  Target >= 3. The two runs never overlap (2 shared cores).
- ``engine_overhead_ratio``: tokens/s of the backend's ``generate`` vs the identical request
  (same token-id prompt, streamed with logprobs=5, greedy, EOS ignored) sent raw with httpx
  and read without parsing, alternated; ratio of medians. Target >= 0.9.
- ``score_request_ms``: the valid household actions (26 in 3 rooms) scored in one request
  (median), with the in-process packed pass beside it (``score_in_process_ms``). vLLM
  recomputes the whole prompt for every continuation whose prompt logprobs are asked for, so
  this grows with actions × prompt length; SGLang's ``logprob_start_len`` would not.

    python bench/remote.py [--sessions 8] [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.agents.base import Observation  # noqa: E402
from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.envs import make_env  # noqa: E402
from studio.models.base import Backend, SamplingParams  # noqa: E402
from studio.models.engines import start_vllm  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.models.resolve import resolve_default  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402
from studio.trace import Episode  # noqa: E402

SAMPLING = SamplingParams(temperature=0.0, max_new_tokens=48)


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def sessions_at_once(backend: Backend, sessions: int, steps: int) -> dict[str, Any]:
    """``sessions`` threads, each its own policy and runner (a browser session each), all stepping at once."""
    tokens = [0] * sessions
    errors: list[BaseException] = []

    def session(index: int) -> None:
        try:
            policy = ReActPolicy(backend, ReActConfig(sampling=SAMPLING))
            runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(max_steps=steps))
            runner.reset(seed=index)
            for _ in range(steps):
                if runner.episode.done:
                    break
                step = runner.step()
                tokens[index] += len(step.tokens or [])
        except BaseException as exc:  # noqa: BLE001 - reported in the result
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"a session failed: {errors[0]}")
    return {"wall_s": round(wall, 2), "tokens": sum(tokens), "tokens_per_s": round(sum(tokens) / wall, 1)}


def overhead(remote: Any, repeats: int, new_tokens: int = 96) -> dict[str, Any]:
    """Our generate vs the same streamed request read raw, alternated."""
    import httpx

    messages = [{"role": "user", "content": "Describe a walk through a small grid world, step by step."}]
    sampling = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    ids, _ = remote.encode(messages)
    body = {
        "model": remote.served_id,
        "prompt": ids,
        "n": 1,
        "max_tokens": new_tokens,
        "temperature": 0.0,
        "top_p": sampling.top_p,
        "logprobs": remote.top_k,
        "return_tokens_as_token_ids": True,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def raw() -> None:
        with httpx.Client(timeout=300) as client:
            with client.stream("POST", remote.client.address.base + "/completions", json=body) as response:
                for _ in response.iter_lines():
                    pass

    ours_s, raw_s = [], []
    raw()  # warm the engine's cache for the prompt on both sides
    for _ in range(repeats):
        ours_s.append(timed(lambda: remote.generate(messages, sampling=sampling)))
        raw_s.append(timed(raw))
    ours, theirs = new_tokens / statistics.median(ours_s), new_tokens / statistics.median(raw_s)
    return {
        "tokens": new_tokens,
        "ours_tokens_per_s": round(ours, 1),
        "raw_tokens_per_s": round(theirs, 1),
        "engine_overhead_ratio": round(ours / theirs, 3),
    }


def scoring(remote: Backend, local: Backend, repeats: int) -> dict[str, Any]:
    env = make_env("household", {"rooms": 3})
    observation, _ = env.reset(seed=0)
    policy = ReActPolicy(remote, ReActConfig(action_mode="score"))
    policy.reset(env, 0)
    episode = Episode(env="household", seed=0, instruction=env.instruction)
    messages = policy.build_messages(
        episode,
        Observation(text=observation, instruction=env.instruction, valid_actions=env.valid_actions(), step_index=0),
    )
    actions = [f" {a}" for a in env.valid_actions()]
    prefix = "Thought: I should look around.\nAction:"
    prompt_tokens = len(remote.encode(messages, prefix)[0])
    score = lambda backend: backend.score(messages, actions, assistant_prefix=prefix, end_with_eos=True)  # noqa: E731
    score(local)  # warm
    remote_ms = [1000 * timed(lambda: score(remote)) for _ in range(repeats)]
    local_ms = [1000 * timed(lambda: score(local)) for _ in range(repeats)]
    return {
        "actions": len(actions),
        "prompt_tokens": prompt_tokens,
        "score_request_ms": round(statistics.median(remote_ms), 1),
        "score_in_process_ms": round(statistics.median(local_ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    registry = ModelRegistry()
    local = registry.load("default", device="cpu")
    with start_vllm(resolve_default().path, served_name="smollm2", threads=os.cpu_count()) as server:
        remote = registry.load(server.url)
        result: dict[str, Any] = {"engine": remote.info["engine"], "engine_version": remote.info["engine_version"]}
        result["server_start_s"] = round(server.started_s, 1)
        result["overhead"] = overhead(remote, args.repeats)
        result["scoring"] = scoring(remote, local, max(1, args.repeats // 2))
        in_process = sessions_at_once(local, args.sessions, args.steps)
        through_engine = sessions_at_once(remote, args.sessions, args.steps)
    result["concurrent"] = {
        "sessions": args.sessions,
        "steps": args.steps,
        "in_process": in_process,
        "engine": through_engine,
    }
    result["concurrent_speedup_8" if args.sessions == 8 else f"concurrent_speedup_{args.sessions}"] = round(
        in_process["wall_s"] / through_engine["wall_s"], 2
    )
    result["engine_overhead_ratio"] = result["overhead"]["engine_overhead_ratio"]
    result["score_request_ms"] = result["scoring"]["score_request_ms"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
