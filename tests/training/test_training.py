"""Training from the store, on a tiny random Llama (seconds): a reward model that ranks held-out pairs, the
same loss from the same seed, a LoRA policy that loads as BASE+lora:NAME and changes logprobs, the trained
verifier's choice against scores recomputed in float64, the record's row counts against export's, and
Stop leaving nothing registered."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import torch

from agent_studio.storage.export import export
from agent_studio.storage.training import run_training, training_data
from studio.agents.conversation import compact_messages, output_text
from studio.agents.react import ReActConfig, ReActPolicy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.errors import StudioError
from studio.models.scripted import ScriptedBackend
from studio.scaling.verifiers import VerifiedPolicy
from studio.training.registry import TrainedModels
from studio.training.spec import TrainingData, TrainingSpec
from studio.training.trainer import TrainingStopped, train
from tests.core.test_verifiers import EVERY_ACTION
from tests.support.store_helpers import judged_pairs, new_store, run_react

GOOD, BAD = ("go east", "go north"), ("go west", "go south")


def separable_rows(count: int, seed: int = 0) -> list[dict]:
    """Pairs whose chosen side always takes a GOOD action and rejected side a BAD one, after varied prompts."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        words = " ".join(rng.choice(["red", "blue", "key", "door", "wall", "room"]) for _ in range(5))
        prompt = [{"role": "user", "content": f"Task {i}: {words}"}]
        rows.append({
            "prompt": prompt,
            "chosen": prompt + [{"role": "assistant", "content": f"Action: {rng.choice(GOOD)}"}],
            "rejected": prompt + [{"role": "assistant", "content": f"Action: {rng.choice(BAD)}"}],
        })  # fmt: skip
    return rows


def data_of(rows: list[dict], held: int) -> TrainingData:
    return TrainingData(
        rows[:-held] if held else rows, rows[-held:] if held else [], len(rows), {"human": len(rows)}, "x"
    )


def float64_scores(folder: Path, tokenizer_folder: Path, conversations: list[list[dict]]) -> list[float]:
    """The reward head's score of each conversation, computed here in float64, one conversation at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=torch.float64).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    scores = []
    for conversation in conversations:
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            scores.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    return scores


def test_a_reward_model_ranks_held_out_separable_pairs(tiny_base: str, trained_root: Path) -> None:
    rows = separable_rows(80)
    spec = TrainingSpec(name="q", base=tiny_base, sources=("human",), lora=False, epochs=3, learning_rate=1e-3,
                        batch_size=8)  # fmt: skip
    outcome = train(spec, data_of(rows, 20), device="cpu")
    assert outcome.record["held_out_accuracy"] >= 0.9
    model = TrainedModels().get("q")
    assert model.is_verifier and not model.is_policy and model.weights.name == "model"
    held = rows[-20:]
    chosen = float64_scores(model.weights, model.tokenizer, [r["chosen"] for r in held])
    rejected = float64_scores(model.weights, model.tokenizer, [r["rejected"] for r in held])
    assert outcome.record["held_out_accuracy"] == sum(c > r for c, r in zip(chosen, rejected)) / len(held)
    assert [p["step"] for p in outcome.record["loss_curve"]] == list(range(1, outcome.record["steps"] + 1))


def test_training_is_reproducible_with_a_seed(tiny_base: str, tmp_path: Path) -> None:
    rows = separable_rows(24)
    curves = []
    for run in range(2):
        spec = TrainingSpec(name=f"r{run}", base=tiny_base, sources=("human",), max_steps=4, seed=7, batch_size=4)
        outcome = train(spec, data_of(rows, 0), models=TrainedModels(tmp_path / "trained"), device="cpu")
        curves.append([point["loss"] for point in outcome.record["loss_curve"]])
    assert len(curves[0]) == 4
    assert curves[0] == pytest.approx(curves[1], abs=1e-6)
    other = train(
        TrainingSpec(name="other", base=tiny_base, sources=("human",), max_steps=4, seed=8, batch_size=4),
        data_of(rows, 0), models=TrainedModels(tmp_path / "trained"), device="cpu",
    )  # fmt: skip
    assert [p["loss"] for p in other.record["loss_curve"]] != pytest.approx(curves[0], abs=1e-6)


def test_a_lora_policy_registers_loads_and_changes_logprobs(tiny_base: str, trained_root: Path) -> None:
    from studio.models.registry import ModelRegistry

    rows = [
        {k: r[k] if k == "prompt" else r[k][-1:] for k in ("prompt", "chosen", "rejected")} for r in separable_rows(16)
    ]
    spec = TrainingSpec(name="p", kind="dpo", base=tiny_base, sources=("human",), max_steps=3, learning_rate=5e-2)
    train(spec, data_of(rows, 0), device="cpu")
    trained = TrainedModels().get("p")
    assert trained.is_policy and trained.lora and trained.model_name() == f"{tiny_base}+lora:p"
    registry = ModelRegistry()
    base = registry.load(tiny_base, device="cpu")
    tuned = registry.load(trained.model_name(), device="cpu")
    assert tuned is not base and tuned.card.id == f"{tiny_base}+lora:p"
    prompt, text = [{"role": "user", "content": "Task 1: red key"}], ["Action: go east"]
    before, after = (sum(model.score(prompt, text).token_logprobs[0]) for model in (base, tuned))
    assert abs(before - after) > 1e-4  # the adapter is merged into the weights
    with pytest.raises(StudioError, match="trained on"):
        registry.load("default+lora:p", device="cpu")
    with pytest.raises(StudioError, match="No trained model named 'nope'"):
        registry.load(f"{tiny_base}+lora:nope", device="cpu")


def test_the_trained_verifier_takes_the_argmax_of_independent_scores(tiny_base: str, trained_root: Path) -> None:
    rows = separable_rows(40)
    spec = TrainingSpec(name="q", base=tiny_base, sources=("human",), lora=False, epochs=1, learning_rate=1e-3)
    train(spec, data_of(rows, 0), device="cpu")
    policy = ReActPolicy(ScriptedBackend(EVERY_ACTION), ReActConfig(candidates=len(EVERY_ACTION)))
    runner = EpisodeRunner("gridworld", VerifiedPolicy(policy, "model:q"), config=RunnerConfig(max_steps=3))
    runner.reset(seed=0)
    step = runner.step()
    record = step.extra["verifier"]
    assert record["name"] == "model:q" and runner.episode.policy_config["verifier"] == "model:q"
    outputs = [(step.raw, step.action), *((c.raw, c.action) for c in step.candidates)]
    trained = TrainedModels().get("q")
    prompt = compact_messages(step.prompt)
    expected = float64_scores(
        trained.weights, trained.tokenizer,
        [prompt + [{"role": "assistant", "content": output_text(raw, action)}] for raw, action in outputs],
    )  # fmt: skip
    assert record["scores"] == pytest.approx(expected, abs=1e-4)
    assert max(range(len(expected)), key=expected.__getitem__) == 0  # the step took the best-scored output


def _judged_store(tmp_path: Path):
    return judged_pairs(new_store(tmp_path), seeds=4, annotators=("ada", "mc:random-m4-end", "judge:tiny"))


def test_the_training_record_counts_rows_as_export_does(tiny_base: str, trained_root: Path, tmp_path: Path) -> None:
    store = _judged_store(tmp_path)
    spec = TrainingSpec(name="q", base=tiny_base, sources=("human", "mc"), max_steps=1, held_out=0.5)
    outcome = run_training(store, spec, device="cpu")
    (run,) = store.training.runs()
    assert run.status == "done" and run.record["steps"] == 1 == outcome.record["steps"]
    both = export(store, "reward", tmp_path / "both.jsonl", annotators="humans,mc:*")
    assert run.data["rows"] == both.records == run.data["train_rows"] + run.data["held_out_rows"] > 0
    assert run.data["data_hash"] == hashlib.sha256((tmp_path / "both.jsonl").read_bytes()).hexdigest()
    for source, annotators in (("human", "humans"), ("mc", "mc:*")):
        alone = export(store, "reward", tmp_path / f"{source}.jsonl", annotators=annotators).records
        assert run.data["rows_by_source"][source] == alone > 0
    everyone = export(store, "reward", tmp_path / "all.jsonl", annotators="all").records
    assert everyone > both.records  # the judge's pairs are not among a human,mc run's rows
    from studio.training.spec import held_out_seed

    assert run.data["held_out_seeds"] == [seed for seed in range(4) if held_out_seed(seed, 0.5)]


def test_stop_leaves_no_half_registered_model(tiny_base: str, trained_root: Path, tmp_path: Path) -> None:
    store = _judged_store(tmp_path)
    spec = TrainingSpec(name="q", base=tiny_base, sources=("all",), max_steps=5)
    with pytest.raises(TrainingStopped, match="nothing was registered"):
        run_training(store, spec, should_stop=lambda: True, device="cpu")
    assert TrainedModels().names() == [] and list(trained_root.iterdir()) == []  # no staging folder left
    (run,) = store.training.runs()
    assert run.status == "stopped" and run.record is None
    run_training(store, spec, device="cpu")  # the name is free: the next run registers it
    assert TrainedModels().names() == ["q"]
    with pytest.raises(StudioError, match="exists already"):
        run_training(store, spec, device="cpu")
    assert [r.status for r in store.training.runs()] == ["done", "stopped"]


def test_a_run_without_rows_is_refused_and_stores_nothing(tiny_base: str, trained_root: Path, tmp_path: Path) -> None:
    store = new_store(tmp_path)
    run_react(store, seed=0, steps=2, candidates=3, frames=False)
    spec = TrainingSpec(name="q", base=tiny_base, sources=("human",))
    with pytest.raises(StudioError, match="No reward rows to train on"):
        run_training(store, spec, device="cpu")
    assert store.training.runs() == [] and TrainedModels().names() == []
    assert training_data(store, spec).rows == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": "../x"}, "trained model's name"),
        ({"name": "a:b"}, "trained model's name"),
        ({"name": "q", "kind": "ppo"}, "Unknown kind"),
        ({"name": "q", "sources": ("people",)}, "Unknown source"),
        ({"name": "q", "sources": ("all", "mc")}, "give it alone"),
        ({"name": "q", "epochs": float("nan")}, "Epochs"),
        ({"name": "q", "held_out": 1.0}, "held-out share"),
        ({"name": "q", "base": "default+lora:p"}, "not a trained adapter"),
        ({"name": "q", "sources": ("mc:",)}, "Unknown source"),
        ({"name": "q", "kind": "sft", "sweep": "s"}, "train reward, dpo, kto with it"),
        ({"name": "q", "sweep": " "}, "by its name"),
    ],
)
def test_a_bad_spec_is_one_line(values: dict, message: str) -> None:
    with pytest.raises(StudioError, match=message):
        TrainingSpec(**values)


def test_a_killed_run_leaves_nothing_registered_and_the_next_clears_its_folder(
    tiny_base: str, trained_root: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    store = _judged_store(tmp_path)
    store.close()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AGENT_STUDIO_TRAINED": str(trained_root)}
    args = [sys.executable, "app.py", "train", "q", "--model", tiny_base, "--sources", "all", "--train-steps", "100000",
            "--db", str(tmp_path / "studio.db")]  # fmt: skip
    process = subprocess.Popen(args, cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(trained_root.glob(".staging-q-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # training by now
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert list(trained_root.iterdir()) == []  # the staging folder went with it
    with new_store(tmp_path) as reopened:
        (run,) = reopened.training.runs()
        assert run.status == "failed" and "SystemExit" in run.error
    # A run killed without a chance to clean up (SIGKILL) leaves its staging folder: the next run removes it.
    stale = trained_root / ".staging-q-999999999-abcdef12"
    stale.mkdir()
    TrainedModels().staging("other")
    assert not stale.exists()


def test_a_run_limited_to_a_sweep_names_one_the_store_has(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    spec = TrainingSpec(name="q", sources=("mc:expert-m1-h10-g0.95",), sweep="nowhere")
    assert spec.annotators == "mc:expert-m1-h10-g0.95"
    with pytest.raises(StudioError, match="No sweep named 'nowhere'"):
        training_data(store, spec)
