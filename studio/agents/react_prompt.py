"""The ReAct policy's prompt: the answer format, the few-shot example from the environment's expert,
and the chat built from an episode (system message, then a user turn per observation and an
assistant turn per step, within a token budget). :class:`~studio.agents.react.ReActPolicy` decides
with it; the exports rebuild conversations with :data:`EXAMPLE_TITLES` and :func:`expert_thought`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.agents.base import Observation
from studio.agents.parsing import ACTION_LINE_END
from studio.envs.base import StudioEnv
from studio.models.base import Backend, SamplingParams
from studio.settings import default_temperature
from studio.trace import Episode, Step

# Written as a description, not a template: small models copy a template's placeholders verbatim.
FORMAT = (
    'Answer every turn with two lines. The first line starts with "Thought:" and gives one short '
    'sentence of reasoning. The second line starts with "Action:" and names exactly one valid action.'
)
STOP = ["\nObservation", "Observation:", "\nThought:"]
#: A generated turn also ends with its action line (what follows is not the model's output).
GENERATE_STOP = [*STOP, ACTION_LINE_END]
THOUGHT = "Thought:"
#: What the system message says before the few-shot example (an expert's turns, or one made-up turn);
#: the example is the system message's last part (exports in compact mode cut it there).
EXAMPLE_TITLES = ("Here is an example of the format on a different task:", "Here is an example of one turn (made up):")
EXAMPLE_STEPS = 3
EXAMPLE_SEED_OFFSET = 100_003


@dataclass(frozen=True)
class ReActConfig:
    """Settings of the ReAct policy (recorded on every episode it runs)."""

    action_mode: str = "generate"
    """``generate`` (the model writes the action) or ``score`` (valid actions are scored)."""
    sampling: SamplingParams | None = None
    """None: the defaults, sampling at :data:`~studio.settings.SAMPLING_FOR_CANDIDATES` when ``candidates`` > 1."""
    candidates: int = 1
    """Outputs sampled per step (in one batch); the first valid one is taken."""
    few_shot: bool = True
    """Include an example trajectory from the environment's expert on another seed."""
    max_prompt_tokens: int = 6144
    """History budget; past it the oldest half of the history is dropped."""
    record_activations: bool = False
    """Keep each step's residual stream at its decision point in the activation cache (read by the
    step's own prompt encoding: no extra forward)."""

    def __post_init__(self) -> None:
        if self.action_mode not in ("generate", "score"):
            raise ValueError(f"action_mode must be generate or score, got {self.action_mode!r}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")
        if self.sampling is None:  # K greedy candidates would be one text K times: the one rule
            object.__setattr__(self, "sampling", SamplingParams(temperature=default_temperature(self.candidates)))


def expert_thought(action: str) -> str:
    """The thought written for an expert step in the few-shot example."""
    return f"Next I should {action}."


class ReActPrompt:
    """How a ReAct policy writes its prompt (mixed into :class:`~studio.agents.react.ReActPolicy`, which
    holds the attributes used here: ``backend``, ``config``, ``name``, ``fixed_actions``,
    ``example`` and ``history_start``)."""

    name = "react"
    backend: Backend
    config: ReActConfig
    fixed_actions: list[str] | None
    action_help: str | None
    example: str
    history_start: int

    @staticmethod
    def _fixed_actions(env: StudioEnv) -> list[str] | None:
        """The action list when it is the same in every state (shown once, in the system prompt)."""
        actions = env.valid_actions()
        return None if actions is None or env.actions_depend_on_state else list(actions)

    def _example(self, env: StudioEnv, seed: int | None) -> str:
        """A few expert steps on another seed of the same environment, as a transcript; without
        an expert, one made-up turn in the exact format with one of the environment's real actions."""
        if not env.provides_expert():
            actions = env.valid_actions()
            if not actions:
                return ""
            action = actions[min(1, len(actions) - 1)]
            return f"Thought: I will try {action} and see what the observation says.\nAction: {action}"
        twin = env.twin()
        observation, _ = twin.reset(seed=(seed or 0) + EXAMPLE_SEED_OFFSET)
        lines = [f"Task: {twin.instruction}"]
        for _ in range(EXAMPLE_STEPS):
            action = twin.expert_action()
            lines += [f"Observation: {observation}", f"Thought: {expert_thought(action)}", f"Action: {action}"]
            observation, _reward, terminated, truncated, _info = twin.step(action)
            if terminated or truncated:
                break
        twin.close()
        return "\n".join(lines)

    # -- prompt ------------------------------------------------------------------------------------
    def _system(self, observation: Observation) -> str:
        parts = [f"You are an agent solving a task step by step.\nTask: {observation.instruction}", FORMAT]
        if self.fixed_actions is not None:
            parts.append("Valid actions: " + ", ".join(self.fixed_actions))
        elif self.action_help:
            parts.append(f"Actions: {self.action_help}")
        if self.example:
            title = EXAMPLE_TITLES[0] if self.example.startswith("Task:") else EXAMPLE_TITLES[1]
            parts.append(f"{title}\n{self.example}")
        return "\n\n".join(parts)

    def _user_text(self, observation_text: str, valid_actions: list[str] | None) -> str:
        text = f"Observation: {observation_text}"
        if valid_actions is not None and self.fixed_actions is None:
            text += "\nValid actions now: " + ", ".join(valid_actions)
        return text

    def _assistant_text(self, step: Step) -> str:
        """A past step as the assistant said it: its own raw output, or the action someone else took."""
        if step.actor == self.name and step.raw:
            return step.raw
        return f"Thought: I will {step.action}.\nAction: {step.action}" if step.action else step.raw

    def _content(self, text: str, image: bool = False) -> Any:
        if not self.backend.capabilities.images:
            return text
        return ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]

    def build_messages(self, episode: Episode, observation: Observation) -> list[dict[str, Any]]:
        """The chat for the next step (the history from ``history_start`` on)."""
        with_image = self.backend.capabilities.images and observation.frame is not None
        messages = [{"role": "system", "content": self._content(self._system(observation))}]
        for step in episode.steps[self.history_start :]:
            valid = step.extra.get("valid_actions") if step.actor == self.name else None
            messages.append({"role": "user", "content": self._content(self._user_text(step.observation, valid))})
            messages.append({"role": "assistant", "content": self._content(self._assistant_text(step))})
        messages.append(
            {
                "role": "user",
                "content": self._content(
                    self._user_text(observation.text, observation.valid_actions), image=with_image
                ),
            }
        )
        return messages

    def _fit(self, episode: Episode, observation: Observation) -> list[dict[str, Any]]:
        """Messages within the token budget, dropping the oldest half of the history when needed."""
        budget = min(
            self.config.max_prompt_tokens, self.backend.context_length - self.config.sampling.max_new_tokens - 16
        )
        while True:
            messages = self.build_messages(episode, observation)
            remaining = len(episode.steps) - self.history_start
            if remaining == 0 or len(self.backend.encode(messages)[0]) <= budget:
                return messages
            self.history_start += max(1, remaining // 2)
