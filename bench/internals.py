"""What looking inside costs, on the default model, side by side in one run (ratios, not absolutes).

Prints one JSON object:

- ``capture``: a gridworld ReAct step (generate mode, greedy, 32 new tokens, prefix cache warm from
  the step before) with Record activations off and on (every layer's residual at the last prompt
  token, read by the step's own prompt encoding, written to the cache): ``ratio`` = on / off; and
  ``read_after_ratio``: a step followed by reading its activations afterwards (one more forward over
  the whole prompt, what probes of episodes run without recording pay) / a step alone.
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
    runners = {}
    for record in (False, True):
        config = ReActConfig(sampling=sampling, record_activations=record)
        runners[record] = EpisodeRunner("gridworld", ReActPolicy(backend, config), config=RunnerConfig(max_steps=50))
        runners[record].reset(seed=0)
        runners[record].step()  # warm: the next steps reuse the prompt's cache as an agent's steps do
    plain, recorded, captured = [], [], []
    for _ in range(args.repeats):
        plain.append(timed(runners[False].step))
        recorded.append(timed(runners[True].step))
        episode = runners[False].episode

        def step_and_read() -> None:
            runners[False].step()
            step_activations(backend, episode, episode.steps[-1])

        captured.append(timed(step_and_read))
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
    step_s, with_s, record_s = statistics.median(plain), statistics.median(captured), statistics.median(recorded)
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
                    "step_and_read_after_s": round(with_s, 4),
                    "read_after_ratio": round(with_s / step_s, 3),
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
