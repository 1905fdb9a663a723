"""What training from the store costs on the default model (SmolLM2-135M) with LoRA, in one run.

Prints one JSON object:

- ``reward``: a Q-value model (RewardTrainer, LoRA rank 16, batch 4) trained for ``--steps`` optimizer
  steps on judged step pairs of gridworld ReAct episodes (compact prompts, as ``export`` writes them):
  ``rows_per_second`` (pairs a second, both sides scored), ``train_seconds``, ``peak_memory_mib``
  (the process's peak resident memory on CPU; the CUDA allocator's peak on a GPU), and the row length in tokens.
- ``verifier``: the trained model scoring a step's K = 4 outputs after its prompt (the merged adapter),
  median of ``--repeats``: ``seconds_per_candidate`` and the whole step's ``seconds``.

    python bench/train.py [--steps 8] [--repeats 5] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACTIONS = ("go north", "go south", "go east", "go west")


def judged_store(folder: Path):
    """Gridworld ReAct episodes with 4 outputs a step (one per move), their pairs judged by a person."""
    from agent_studio.storage import open_store
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig
    from studio.models.scripted import ScriptedBackend

    store = open_store(folder / "bench.db")
    outputs = [f"Thought: I should move.\nAction: {action}" for action in ACTIONS]
    for seed in range(6):
        policy = ReActPolicy(ScriptedBackend(outputs), ReActConfig(candidates=4))
        runner = EpisodeRunner("gridworld", policy, sinks=[store.episodes.sink()], config=RunnerConfig(max_steps=3))
        runner.reset(seed=seed)
        runner.run()
    store.preferences.pairs_from_candidates()
    for index, pair in enumerate(store.preferences.pairs()):
        store.preferences.annotate(pair.id, "bench", ("left", "right")[index % 2], as_shown=False)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["AGENT_STUDIO_TRAINED"] = str(folder / "trained")
    from agent_studio.storage.training import run_training, training_data
    from studio.agents.conversation import compact_messages, output_text
    from studio.training.registry import TrainedModels
    from studio.training.scoring import chat_ids, load_scorer
    from studio.training.spec import TrainingSpec

    store = judged_store(folder)
    spec = TrainingSpec(name="bench-q", base="default", sources=("human",), max_steps=args.steps, held_out=0)
    data = training_data(store, spec)
    outcome = run_training(store, spec, device=args.device)
    record = outcome.record
    scorer = load_scorer(TrainedModels().get("bench-q"), args.device)
    lengths = [len(chat_ids(scorer.tokenizer, row["chosen"])) for row in data.train[:20]]
    episode = store.episodes.get(store.episodes.summaries(limit=1)[0].id)
    prompt = compact_messages(episode.steps[0].prompt)
    completions = [[{"role": "assistant", "content": output_text(f"Thought: go.\nAction: {a}", a)}] for a in ACTIONS]
    scorer.score(prompt, completions)  # warm
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        scorer.score(prompt, completions)
        times.append(time.perf_counter() - started)
    step = statistics.median(times)
    print(json.dumps({
        "model": "default (SmolLM2-135M-Instruct), LoRA rank 16",
        "device": record["device"],
        "reward": {
            "rows": len(data.train), "steps": record["steps"], "batch_size": spec.batch_size,
            "rows_per_second": round(record["steps"] * spec.batch_size / record["train_seconds"], 3),
            "train_seconds": record["train_seconds"], "peak_memory_mib": record["peak_memory_mib"],
            "row_tokens_median": statistics.median(lengths),
        },
        "verifier": {"candidates": len(ACTIONS), "seconds": round(step, 4),
                     "seconds_per_candidate": round(step / len(ACTIONS), 4)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
