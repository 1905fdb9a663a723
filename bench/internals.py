"""What looking inside costs, on the default model, side by side in one run (ratios, not absolutes).

Prints one JSON object:

- ``capture``: one gridworld ReAct step (generate mode, greedy, 32 new tokens) taken again from its
  snapshot with Record activations off and on (every layer's residual at the last prompt token, read
  by the step's own prompt encoding, written to the cache): ``ratio`` = on / off. And
  ``read_after_ratio``: a step of a running episode (prefix cache warm) plus reading a step's
  activations afterwards (one more forward over the whole prompt, what probes of episodes run
  without recording pay), over that step alone.
- ``steering``: decode tokens/s of 64 greedy tokens unsteered and steered (a vector added after one
  layer, every position); ``ratio`` = steered / unsteered.
- ``lens_s``: the logit lens of one score-mode step (every valid action, every layer).
- ``probe_fit_s``: fitting probes on 200 steps x every layer (scikit-learn, with the shuffled controls).

    python bench/internals.py [--repeats 5]
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402
from studio.internals.activations import step_activations  # noqa: E402
from studio.internals.lens import step_lens  # noqa: E402
from studio.internals.probes import fit_probes  # noqa: E402
from studio.models.base import SamplingParams  # noqa: E402
from studio.models.registry import ModelRegistry  # noqa: E402
from studio.models.steering import Steering, steered  # noqa: E402


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = ModelRegistry().load("default")
    sampling = SamplingParams(temperature=0.0, max_new_tokens=32, ignore_eos=True)
    warm = EpisodeRunner(
        "gridworld", ReActPolicy(backend, ReActConfig(sampling=sampling)), config=RunnerConfig(max_steps=50)
    )
    warm.reset(seed=0)
    warm.step()  # the next steps reuse the prompt's cache, as an agent's steps do
    episode = warm.episode
    plain, recorded, warm_steps, reads = [], [], [], []
    for _ in range(args.repeats):
        for record, times in ((False, plain), (True, recorded)):  # the same step, taken again from its snapshot
            config = ReActConfig(sampling=sampling, record_activations=record)
            again = EpisodeRunner("gridworld", ReActPolicy(backend, config), config=RunnerConfig(max_steps=50))
            again.fork(episode, 0)
            times.append(timed(again.step))
        warm_steps.append(timed(warm.step))
        reads.append(timed(lambda: step_activations(backend, episode, episode.steps[-1])))
    hidden, layers = backend.model.config.hidden_size, backend.card.layers or 30
    vector = np.random.default_rng(0).standard_normal(hidden).astype(np.float32)
    steering = Steering("bench", "0" * 64, (layers // 2,), 4.0, "all", {layers // 2: vector})
    chat = [{"role": "user", "content": "Describe a grid world in detail."}]
    long = SamplingParams(temperature=0.0, max_new_tokens=64, ignore_eos=True)
    rates: dict[str, list[float]] = {"unsteered": [], "steered": []}
    for _ in range(args.repeats):
        for name in ("unsteered", "steered"):
            with steered(steering if name == "steered" else None):
                result = backend.generate(chat, sampling=long)
            rates[name].append(64 / result.timing["decode_s"] if result.timing.get("decode_s") else float("nan"))
    score_runner = EpisodeRunner(
        "gridworld",
        ReActPolicy(backend, ReActConfig(action_mode="score", sampling=sampling)),
        config=RunnerConfig(max_steps=3),
    )
    score_runner.reset(seed=1)
    score_runner.step()
    lens_s = timed(lambda: step_lens(backend, score_runner.episode, score_runner.episode.steps[-1]))
    features = np.random.default_rng(1).standard_normal((200, layers, hidden)).astype(np.float32)
    targets = (features[:, layers // 2, :5].sum(axis=1)).tolist()
    probe_s = timed(lambda: fit_probes(features, targets, [i % 10 for i in range(200)], "bench"))
    step_s, record_s = statistics.median(plain), statistics.median(recorded)
    warm_s, read_s = statistics.median(warm_steps), statistics.median(reads)
    fast, slow = statistics.median(rates["unsteered"]), statistics.median(rates["steered"])
    print(
        json.dumps(
            {
                "model": backend.card.id,
                "device": backend.card.device,
                "capture": {
                    "step_s": round(step_s, 4),
                    "recording_step_s": round(record_s, 4),
                    "ratio": round(record_s / step_s, 3),
                    "warm_step_s": round(warm_s, 4),
                    "read_after_s": round(read_s, 4),
                    "read_after_ratio": round((warm_s + read_s) / warm_s, 3),
                },
                "steering": {
                    "unsteered_tokens_s": round(fast, 2),
                    "steered_tokens_s": round(slow, 2),
                    "ratio": round(slow / fast, 3),
                },
                "lens_s": round(lens_s, 3),
                "lens_actions": len(score_runner.episode.steps[-1].action_logprobs or {}),
                "probe_fit_s": round(probe_s, 3),
                "probe_shape": list(features.shape),
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
