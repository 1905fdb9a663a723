"""Scores of outputs by a trained model: the reward head on a whole conversation (prompt and output,
tokenized as TRL's RewardTrainer tokenized it for training), or a DPO model's implicit reward
β·(log πθ(y|x) − log πref(y|x)), the reference being the base (the adapter switched off).

:func:`load_scorer` loads a registered model once per process (a verifier asks at every step).
"""

from __future__ import annotations

import threading
from typing import Any

from studio.errors import StudioError
from studio.training.registry import TrainedModel

Message = dict[str, Any]
#: Conversations scored in one forward pass.
SCORE_BATCH = 8


def chat_ids(tokenizer: Any, messages: list[Message], generation_prompt: bool = False) -> list[int]:
    """``messages`` through the chat template, as TRL's trainers tokenize a conversation."""
    result = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt
    )
    return list(result["input_ids"])


class RewardScorer:
    """A sequence classifier with one output: the score of each conversation."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def score_conversations(self, conversations: list[list[Message]]) -> list[float]:
        import torch

        scores: list[float] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(conversations), SCORE_BATCH):
            batch = [chat_ids(self.tokenizer, c) for c in conversations[start : start + SCORE_BATCH]]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):  # right padding, as TRL's preference collator pads
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            scores.extend(float(v) for v in logits[:, 0].float().cpu())
        return scores

    def score(self, prompt: list[Message], completions: list[list[Message]]) -> list[float]:
        """Each completion's score after ``prompt``."""
        return self.score_conversations([prompt + completion for completion in completions])


class ImplicitRewardScorer:
    """A DPO-trained policy's implicit reward of each completion: β times its log-likelihood ratio to the base."""

    def __init__(self, model: Any, tokenizer: Any, device: str, beta: float, reference: Any = None) -> None:
        self.model, self.tokenizer, self.device, self.beta = model, tokenizer, device, beta
        self.reference = reference
        """The base model (a fully trained model); None: the model's own adapter switched off."""

    def _logprob(self, model: Any, prompt_ids: list[int], full_ids: list[int]) -> float:
        import torch

        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full_ids], device=self.device)).logits[0].float()
        logprobs = torch.log_softmax(logits[:-1], dim=-1)
        targets = torch.tensor(full_ids[1:], device=logprobs.device)
        picked = logprobs.gather(1, targets[:, None])[:, 0]
        return float(picked[len(prompt_ids) - 1 :].sum())

    def score(self, prompt: list[Message], completions: list[list[Message]]) -> list[float]:
        prompt_ids = chat_ids(self.tokenizer, prompt, generation_prompt=True)
        scores = []
        for completion in completions:
            full = chat_ids(self.tokenizer, prompt + completion)
            start = _common_prefix(prompt_ids, full)
            policy = self._logprob(self.model, full[:start], full)
            if self.reference is not None:
                reference = self._logprob(self.reference, full[:start], full)
            else:
                with self.model.disable_adapter():
                    reference = self._logprob(self.model, full[:start], full)
            scores.append(self.beta * (policy - reference))
        return scores


def _common_prefix(first: list[int], second: list[int]) -> int:
    n = 0
    for a, b in zip(first, second):
        if a != b:
            break
        n += 1
    return max(n, 1)


def build_scorer(trained: TrainedModel, device: str = "auto") -> RewardScorer | ImplicitRewardScorer:
    """Load ``trained`` as a scorer (its base from the manifest, its adapter or whole weights)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from studio.models.hf import pick_device
    from studio.models.resolve import resolve
    from studio.training.trainer import load_tokenizer

    device_name = pick_device(device)
    tokenizer = load_tokenizer(str(trained.tokenizer))
    auto = AutoModelForSequenceClassification if trained.kind == "reward" else AutoModelForCausalLM
    extra = {"num_labels": 1} if trained.kind == "reward" else {}
    base_path = resolve(trained.base, allow_download=False).path
    try:
        if trained.lora:
            from peft import PeftModel

            model = auto.from_pretrained(base_path, dtype=torch.float32, local_files_only=True, **extra)
            model.config.pad_token_id = tokenizer.pad_token_id
            model = PeftModel.from_pretrained(model, str(trained.weights))
            if trained.kind == "reward":
                model = model.merge_and_unload()
            reference = None
        else:
            model = auto.from_pretrained(str(trained.weights), dtype=torch.float32, local_files_only=True, **extra)
            reference = None
            if trained.kind == "dpo":
                reference = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, local_files_only=True)
                reference.to(device_name).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise StudioError(f"Could not load the trained model {trained.name!r}: {str(exc).splitlines()[0]}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device_name).eval()
    if trained.kind == "reward":
        return RewardScorer(model, tokenizer, device_name)
    beta = float(trained.manifest.get("record", {}).get("spec", {}).get("beta", 0.1))
    return ImplicitRewardScorer(model, tokenizer, device_name, beta, reference)


_lock = threading.Lock()
# Read-only weights, loaded once per process, as the model registry keeps models: the key is the folder
# and its manifest's time, so a model removed and trained again under its name is loaded afresh.
_loaded: dict[tuple[str, int], Any] = {}


def load_scorer(trained: TrainedModel, device: str = "auto") -> RewardScorer | ImplicitRewardScorer:
    """:func:`build_scorer`, once per registered model per process (the latest one kept)."""
    manifest = trained.folder / "manifest.json"
    key = (str(trained.folder), manifest.stat().st_mtime_ns if manifest.exists() else 0)
    with _lock:
        if key not in _loaded:
            _loaded.clear()  # one trained verifier at a time: they are the size of the base model
            _loaded[key] = build_scorer(trained, device)
        return _loaded[key]
