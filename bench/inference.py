"""Inference speed of the transformers backend on the default model, measured side by side in one run.

Prints one JSON object:

- ``ttft``: time to first token at steps 1, 10, 20 and 40 of a gridworld episode whose
  prompts hold an expert trajectory's history, with the session's KV cache reused (the
  previous step's prompt is cached) and with the whole prompt re-encoded;
  ``reuse_speedup_at_40`` is their ratio at step 40 (target >= 10).
- ``episode``: total model time of a 40-step episode (same prompts, same greedy
  generations) with and without reuse; ``episode_speedup_40`` (target >= 2.5).
- ``candidates``: K=8 samples in one batched call vs 8 sequential calls on one cached
  prompt (equal tokens: EOS ignored); ``batched_speedup_k8`` (target >= 3).
- ``overhead``: tokens/s of a plain ``model.generate`` loop vs the backend's ``generate``
  on the same prompt, both greedy, same token count; ``overhead_ratio`` = backend / plain
  (target >= 0.9).
- ``scoring``: every valid household action scored in one packed pass vs one pass per
  action; ``scoring_speedup``.

    python bench/inference.py [--model default] [--steps 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import torch  # noqa: E402

from studio.agents.base import Observation  # noqa: E402
from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.agents.react_prompt import expert_thought  # noqa: E402
from studio.envs import make_env  # noqa: E402
from studio.models.base import PrefixSession, SamplingParams  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.trace import Episode, Step  # noqa: E402

GRID = {"size": 15, "difficulty": "hard"}
FIRST_TOKEN = SamplingParams(temperature=0.0, max_new_tokens=1)


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def expert_prompts(policy: ReActPolicy, steps: int) -> list[list[dict]]:
    """Prompts for steps 1..``steps`` of one gridworld episode whose history is the expert's."""
    env = make_env("gridworld", GRID)
    seed = next(s for s in range(500) if _expert_length(env, s) >= steps + 1)
    observation, _ = env.reset(seed=seed)
    policy.reset(env, seed)
    episode = Episode(env="gridworld", seed=seed, env_options=GRID, instruction=env.instruction)
    prompts = []
    for index in range(steps):
        current = Observation(
            text=observation, instruction=env.instruction, valid_actions=env.valid_actions(), step_index=index
        )
        prompts.append(policy.build_messages(episode, current))
        action = env.expert_action()
        raw = f"Thought: {expert_thought(action)}\nAction: {action}"
        next_observation, *_ = env.step(action)
        episode.steps.append(
            Step(
                index=index,
                observation=observation,
                action=action,
                actor=policy.name,
                raw=raw,
                thought=expert_thought(action),
            )
        )
        observation = next_observation
    return prompts


def _expert_length(env, seed: int) -> int:
    env.reset(seed=seed)
    for count in range(1, 200):
        if env.step(env.expert_action())[2]:
            return count
    return 200


def bench_ttft(backend, prompts: list[list[dict]], at: list[int], repeats: int) -> dict[str, Any]:
    rows = {}
    for step in at:
        reuse, full = [], []
        for _ in range(repeats):
            session = PrefixSession()
            if step > 1:
                backend.generate(
                    prompts[step - 2], sampling=FIRST_TOKEN, session=session
                )  # the previous step is cached
            reuse.append(timed(lambda: backend.generate(prompts[step - 1], sampling=FIRST_TOKEN, session=session)))
            full.append(
                timed(lambda: backend.generate(prompts[step - 1], sampling=FIRST_TOKEN, session=PrefixSession()))
            )
        tokens = len(backend.encode(prompts[step - 1])[0])
        rows[str(step)] = {
            "prompt_tokens": tokens,
            "reuse_s": statistics.median(reuse),
            "full_s": statistics.median(full),
            "speedup": statistics.median(full) / statistics.median(reuse),
        }
    return rows


def bench_episode(backend, prompts: list[list[dict]], new_tokens: int) -> dict[str, Any]:
    sampling = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    session = PrefixSession()
    reuse_total = full_total = 0.0
    for messages in prompts:  # interleaved step by step, so machine noise hits both alike
        reuse_total += timed(lambda: backend.generate(messages, sampling=sampling, session=session))
        full_total += timed(lambda: backend.generate(messages, sampling=sampling, session=PrefixSession()))
    return {
        "steps": len(prompts),
        "new_tokens_per_step": new_tokens,
        "reuse_s": reuse_total,
        "full_s": full_total,
        "speedup": full_total / reuse_total,
    }


def bench_candidates(backend, messages: list[dict], k: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=new_tokens, seed=0, ignore_eos=True)
    session = PrefixSession()
    backend.generate(messages, sampling=FIRST_TOKEN, session=session)  # both sides start from a cached prompt
    batched, sequential = [], []
    for _ in range(repeats):
        batched.append(timed(lambda: backend.generate(messages, n=k, sampling=sampling, session=session)))
        sequential.append(
            timed(lambda: [backend.generate(messages, n=1, sampling=sampling, session=session) for _ in range(k)])
        )
    return {
        "k": k,
        "new_tokens": new_tokens,
        "batched_s": statistics.median(batched),
        "sequential_s": statistics.median(sequential),
        "speedup": statistics.median(sequential) / statistics.median(batched),
    }


def bench_overhead(backend, messages: list[dict], new_tokens: int, repeats: int) -> dict[str, Any]:
    ids = torch.tensor([backend.encode(messages)[0]], device=backend.device)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    plain, ours = [], []
    with torch.inference_mode():
        backend.model.generate(ids, max_new_tokens=2, do_sample=False)  # warm-up
        for _ in range(repeats):
            plain.append(
                timed(
                    lambda: backend.model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens,
                        do_sample=False,
                    )
                )
            )
            ours.append(timed(lambda: backend.generate(messages, sampling=sampling, session=PrefixSession())))
    plain_tps, our_tps = new_tokens / statistics.median(plain), new_tokens / statistics.median(ours)
    return {
        "prompt_tokens": ids.shape[1],
        "new_tokens": new_tokens,
        "plain_tokens_per_s": plain_tps,
        "backend_tokens_per_s": our_tps,
        "ratio": our_tps / plain_tps,
    }


def bench_scoring(backend, repeats: int) -> dict[str, Any]:
    env = make_env("household", {"rooms": 3})
    observation, _ = env.reset(seed=0)
    for _ in range(3):
        observation, *_ = env.step(env.expert_action())
    policy = ReActPolicy(backend, ReActConfig(action_mode="score"))
    policy.reset(env, 0)
    episode = Episode(env="household", seed=0, instruction=env.instruction)
    messages = policy.build_messages(
        episode,
        Observation(text=observation, instruction=env.instruction, valid_actions=env.valid_actions(), step_index=0),
    )
    actions = [f" {a}" for a in env.valid_actions()]
    prefix = "Thought: I should look around.\nAction:"
    session = PrefixSession()
    backend.score(
        messages, actions[:1], session=session, assistant_prefix=prefix
    )  # both sides start from a cached prompt
    packed, each = [], []
    for _ in range(repeats):
        packed.append(
            timed(lambda: backend.score(messages, actions, session=session, assistant_prefix=prefix, end_with_eos=True))
        )
        each.append(
            timed(
                lambda: [
                    backend.score(messages, [a], session=session, assistant_prefix=prefix, end_with_eos=True)
                    for a in actions
                ]
            )
        )
    return {
        "actions": len(actions),
        "one_pass_s": statistics.median(packed),
        "pass_per_action_s": statistics.median(each),
        "speedup": statistics.median(each) / statistics.median(packed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backend = ModelRegistry().load(args.model)
    policy = ReActPolicy(backend, ReActConfig(max_prompt_tokens=backend.context_length - 64))
    prompts = expert_prompts(policy, args.steps)
    at = [s for s in (1, 10, 20, 40) if s <= args.steps]
    ttft = bench_ttft(backend, prompts, at, args.repeats)
    episode = bench_episode(backend, prompts, new_tokens=20)
    candidates = bench_candidates(backend, prompts[min(9, len(prompts) - 1)], k=8, new_tokens=32, repeats=args.repeats)
    overhead = bench_overhead(backend, prompts[0], new_tokens=64, repeats=args.repeats)
    scoring = bench_scoring(backend, args.repeats)
    last = str(at[-1])
    print(
        json.dumps(
            {
                "benchmark": "inference",
                "model": backend.info["id"],
                "device": backend.info["device"],
                "dtype": backend.info["dtype"],
                "torch_threads": torch.get_num_threads(),
                f"reuse_speedup_at_{last}": ttft[last]["speedup"],
                f"episode_speedup_{args.steps}": episode["speedup"],
                "batched_speedup_k8": candidates["speedup"],
                "overhead_ratio": overhead["ratio"],
                "scoring_speedup": scoring["speedup"],
                "ttft": ttft,
                "episode": episode,
                "candidates": candidates,
                "overhead": overhead,
                "scoring": scoring,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
