"""Every training export trains one step with TRL as it is written, at max_length=512, keeping its rows.

The tokenizer is the default model's (SmolLM2's BPE: lengths as a user's would be); the model is a tiny
random Llama over its vocabulary, so a step takes a second. The store's episodes record frames, and the
exports leave them out by default (``--images none``): TRL's DPO and KTO trainers would otherwise take
the rows for a vision dataset and refuse a text model.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, LlamaForSequenceClassification
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

from agent_studio.storage.export import export
from studio.models.resolve import resolve_default
from tests.support.store_helpers import new_store, run_react
from tests.support.tiny_models import tiny_llama_config

MAX_LENGTH = 512
TRAINERS = {
    "dpo": (DPOConfig, DPOTrainer),
    "reward": (RewardConfig, RewardTrainer),
    "kto": (KTOConfig, KTOTrainer),
    "sft": (SFTConfig, SFTTrainer),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Judged step pairs, step labels and a successful expert episode, exported in every training format."""
    folder = tmp_path_factory.mktemp("trains")
    store = new_store(folder)
    react = run_react(store, seed=0, steps=3, candidates=3)  # frames recorded
    assert react.steps[0].frame is not None
    expert = _expert_episode(store)
    preferences = store.preferences
    preferences.pairs_from_candidates()
    for index, pair in enumerate(preferences.pairs()):
        preferences.annotate(pair.id, "ada", ("left", "right", "both_bad")[index % 3], as_shown=False)
    for index, label in zip(range(expert.length), ["good", "bad", "good"]):
        preferences.label_step(expert.id, index, "ada", label)
    counts = {fmt: export(store, fmt, folder / f"{fmt}.jsonl").records for fmt in TRAINERS}
    assert all(counts.values()), counts
    tokenizer = AutoTokenizer.from_pretrained(resolve_default(allow_download=False).path)
    return {"folder": folder, "counts": counts, "tokenizer": tokenizer}


def _expert_episode(store):
    from studio.agents.scripted import ExpertPolicy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig

    runner = EpisodeRunner(
        "gridworld",
        ExpertPolicy(),
        {"size": 5, "difficulty": "easy"},
        sinks=[store.episodes.sink()],
        config=RunnerConfig(record_frames=True),
    )
    runner.reset(seed=2)
    episode = runner.run()
    assert episode.success and episode.length >= 3
    return episode


@pytest.mark.parametrize("fmt", list(TRAINERS))
def test_the_export_trains_one_step_with_trl_and_keeps_every_row(exported: dict, fmt: str, tmp_path: Path) -> None:
    path = exported["folder"] / f"{fmt}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert not any("images" in row for row in rows)  # frames left out: a text model trains on them
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    tokenizer = exported["tokenizer"]
    torch.manual_seed(0)
    if fmt == "reward":
        model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1))
    else:
        model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    extra = {"ref_model": LlamaForCausalLM(tiny_llama_config(tokenizer))} if fmt in ("dpo", "kto") else {}
    config_class, trainer_class = TRAINERS[fmt]
    args = config_class(
        output_dir=str(tmp_path),
        max_length=MAX_LENGTH,
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **extra)
    assert len(trainer.train_dataset) == len(rows) == exported["counts"][fmt]  # no row dropped as too long
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
