"""``--verifier model:NAME``: a trained reward model (or a DPO model's implicit reward) scores each of a
step's K outputs after the prompt the policy saw, as the export wrote its training rows (the prompt
without its few-shot example, the output as an assistant turn); the best valid output is taken.
"""

from __future__ import annotations

from typing import Any

from studio.agents.conversation import compact_messages, output_text
from studio.training.registry import VERIFIER_PREFIX, TrainedModels


class TrainedVerifier:
    """a trained Q-value model scores each output after the step's prompt (train --kind reward)"""

    needs_judge = False

    def __init__(self, name: str, models: TrainedModels | None = None) -> None:
        self.trained = (models or TrainedModels()).verifier(name)  # one line if unknown or not a verifier
        self.name = VERIFIER_PREFIX + self.trained.name

    def scores(
        self, verified: Any, outputs: list[Any], episode: Any, observation: Any, should_stop: Any
    ) -> list[float | None]:
        """The trained model's score of each valid output (None for an invalid one: it is never taken)."""
        from studio.training.scoring import load_scorer

        prompt = getattr(verified, "decision_prompt", None)
        if not prompt:
            return [None for _ in outputs]
        valid = [i for i, output in enumerate(outputs) if output.valid]
        if not valid:
            return [None for _ in outputs]
        completions = [
            [{"role": "assistant", "content": output_text(outputs[i].raw, outputs[i].action)}] for i in valid
        ]
        scored = dict(zip(valid, load_scorer(self.trained).score(compact_messages(prompt), completions)))
        return [scored.get(i) for i in range(len(outputs))]
