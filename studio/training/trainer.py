"""Run TRL's trainers on the rows of a :class:`~studio.training.spec.TrainingData`: RewardTrainer for the
step-level Q-value model, DPO/KTO/SFT for the policy; LoRA through PEFT unless the spec says otherwise.

:func:`train` reports progress after every optimizer step (loss, ETA), stops between steps when asked,
measures the held-out pair accuracy (the reward head: chosen scored above rejected, recomputed by the
same scorer the verifier uses; DPO: TRL's implicit reward accuracy) and registers the model only when
everything is written (:class:`studio.training.registry.TrainedModels`).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from studio.errors import StudioError
from studio.trace import utc_now
from studio.training.registry import TrainedModel, TrainedModels, discard
from studio.training.spec import TrainingData, TrainingSpec

#: The columns each kind trains on (export rows also carry provenance TRL would take for features).
COLUMNS = {
    "reward": ("chosen", "rejected"),
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "sft": ("messages",),
}


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: optimizer steps done of the total, the latest loss, and the time left."""

    step: int
    total: int
    loss: float | None
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        return self.elapsed_s / self.step * (self.total - self.step) if self.step else None

    def line(self) -> str:
        eta = f", about {self.eta_s:.0f} s left" if self.eta_s is not None else ""
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        return f"step {self.step}/{self.total}{loss}{eta}"


class TrainingStopped(StudioError):
    """The run was stopped before it finished: nothing was registered."""


@dataclass
class TrainingOutcome:
    """A finished run: the registered model and the run's record (what the store keeps)."""

    model: TrainedModel
    record: dict[str, Any] = field(default_factory=dict)


def train(
    spec: TrainingSpec,
    data: TrainingData,
    *,
    models: TrainedModels | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
) -> TrainingOutcome:
    """Train ``spec`` on ``data`` and register the result under ``spec.name`` (see the module's docstring)."""
    if not data.train:
        raise StudioError(
            f"No {spec.export_format} rows to train on from {', '.join(spec.sources)}: judge some pairs, or "
            "make them from Monte Carlo values (values, then pairs --from values)."
        )
    models = models or TrainedModels()
    staging = models.staging(spec.name)
    try:
        record = _train_into(spec, data, staging, progress, should_stop or (lambda: False), device)
        manifest = {"name": spec.name, "kind": spec.kind, "base": spec.base, "lora": spec.lora,
                    "created_at": utc_now(), "record": record}  # fmt: skip
        return TrainingOutcome(models.register(staging, spec.name, manifest), record)
    except BaseException:
        discard(staging)
        raise


def _train_into(
    spec: TrainingSpec,
    data: TrainingData,
    staging: Any,
    progress: Callable[[TrainingProgress], None] | None,
    should_stop: Callable[[], bool],
    device: str,
) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from studio.models.hf import pick_device
    from studio.models.resolve import resolve

    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the score head, as meant
    logging.getLogger("peft").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    device_name = pick_device(device)
    base = resolve(spec.base, allow_download=False)
    set_seed(spec.seed, deterministic=True)
    tokenizer = load_tokenizer(base.path)
    model = _base_model(spec, base.path, tokenizer, device_name)
    columns = COLUMNS[spec.kind]
    train_set = datasets.Dataset.from_list([{c: row[c] for c in columns} for row in data.train])
    held_set = datasets.Dataset.from_list([{c: row[c] for c in columns} for row in data.held_out]) or None
    watcher = _Watcher(progress, should_stop)
    trainer = _trainer(spec, model, tokenizer, train_set, held_set, staging, device_name, watcher)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    if watcher.stopped:
        raise TrainingStopped(f"Training {spec.name!r} was stopped at step {watcher.step}: nothing was registered.")
    trained = trainer.model
    trained.eval()
    accuracy, held_metrics = _held_out(spec, trainer, trained, tokenizer, data, device_name)
    target = staging / ("adapter" if spec.lora else "model")
    trained.save_pretrained(str(target))
    tokenizer.save_pretrained(str(staging / "tokenizer"))
    if device_name == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "spec": spec.to_dict(),
        "data": data.describe(),
        "device": device_name,
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "loss_curve": watcher.curve,
        "held_out_accuracy": accuracy,
        "held_out_metrics": held_metrics,
        "train_seconds": round(seconds, 3),
        "rows_per_second": round(len(data.train) * spec.epochs / seconds, 4) if seconds else None,
        "peak_memory_mib": round(peak, 1),
    }


def load_tokenizer(path: str) -> Any:
    """The base's tokenizer, with a pad token (its end-of-sequence token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _base_model(spec: TrainingSpec, path: str, tokenizer: Any, device: str) -> Any:
    """The model to train: a sequence classifier with one output for a reward model, else the causal LM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        if spec.kind == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=dtype, local_files_only=True
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise StudioError(f"Could not load the base model {spec.base!r} to train: {str(exc).splitlines()[0]}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def lora_config(spec: TrainingSpec) -> Any:
    """PEFT's LoRA on every linear layer (and the reward model's score head trained whole)."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_rank,
        lora_alpha=2 * spec.lora_rank,
        lora_dropout=0.0,  # dropout would make the same seed give different losses across devices' kernels
        target_modules="all-linear",
        task_type="SEQ_CLS" if spec.kind == "reward" else "CAUSAL_LM",
    )


def _trainer(
    spec: TrainingSpec,
    model: Any,
    tokenizer: Any,
    train_set: Any,
    held_set: Any,
    staging: Any,
    device: str,
    watcher: Any,
) -> Any:
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    config_class, trainer_class = {
        "reward": (RewardConfig, RewardTrainer),
        "dpo": (DPOConfig, DPOTrainer),
        "kto": (KTOConfig, KTOTrainer),
        "sft": (SFTConfig, SFTTrainer),
    }[spec.kind]
    extra = {"beta": spec.beta} if spec.kind in ("dpo", "kto") else {}
    args = config_class(
        output_dir=str(staging / "checkpoints"),
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps or -1,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        learning_rate=spec.rate,
        seed=spec.seed,
        data_seed=spec.seed,
        max_length=spec.max_length,
        logging_steps=1,
        gradient_checkpointing=False,  # TRL's default recomputes every forward: slower, and these models fit
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=str(model.dtype) == "torch.bfloat16",  # what _base_model chose (on CUDA, where it is supported)
        **extra,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=held_set,
        processing_class=tokenizer,
        peft_config=lora_config(spec) if spec.lora else None,
        callbacks=[watcher],
    )
    trainer.remove_callback(PrinterCallback)  # the log dicts on stdout: progress is the watcher's
    return trainer


class _Watcher(TrainerCallback):
    """Progress after each optimizer step, the loss curve, and Stop between steps."""

    def __init__(self, progress: Callable[[TrainingProgress], None] | None, should_stop: Callable[[], bool]) -> None:
        self.progress, self.should_stop = progress, should_stop
        self.curve: list[dict[str, float]] = []
        self.started = time.perf_counter()
        self.step, self.stopped = 0, False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.curve.append({"step": int(state.global_step), "loss": float(logs["loss"])})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step = int(state.global_step)
        if self.progress is not None:
            loss = self.curve[-1]["loss"] if self.curve else None
            self.progress(TrainingProgress(self.step, int(state.max_steps), loss, time.perf_counter() - self.started))
        if self.should_stop():
            self.stopped = True
            control.should_training_stop = True


def _held_out(
    spec: TrainingSpec, trainer: Any, model: Any, tokenizer: Any, data: TrainingData, device: str
) -> tuple[float | None, dict[str, float]]:
    """The held-out pair accuracy (None without held-out rows) and the held-out metrics. A reward model's
    come from one pass of the scorer the verifier uses (its loss as RewardTrainer's); the others' from
    the trainer's own evaluation."""
    if not data.held_out:
        return None, {}
    if spec.kind == "reward":
        import math

        from studio.training.scoring import RewardScorer

        scorer = RewardScorer(model, tokenizer, device)
        chosen = scorer.score_conversations([row["chosen"] for row in data.held_out])
        rejected = scorer.score_conversations([row["rejected"] for row in data.held_out])
        accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)
        loss = sum(math.log1p(math.exp(r - c)) for c, r in zip(chosen, rejected)) / len(chosen)  # -log σ(c - r)
        return accuracy, {"eval_loss": loss, "eval_accuracy": accuracy}
    metrics = {key: float(value) for key, value in trainer.evaluate().items() if isinstance(value, (int, float))}
    if spec.kind == "dpo":
        return metrics.get("eval_rewards/accuracies"), metrics
    return None, metrics
