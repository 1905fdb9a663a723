"""A package someone else wrote: an environment, a backend and an export format for Agent Studio.

It registers through entry points only (``agent_studio_toys-0.1.dist-info/entry_points.txt``):
no file of the studio is edited. The tests put this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from studio.envs.base import OptionSpec, StudioEnv
from studio.models.base import Backend, CacheStats, Capabilities, GenerateResult, Generation, ModelCard


class LineWalk(StudioEnv):
    """Walk right along a line of cells to the flag."""

    action_summary = "finite: left, right"
    option_specs = (OptionSpec("length", int, 5, "cells on the line", minimum=2, maximum=20),)
    default_max_steps = 30

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.position = seed % 2  # seeded: odd seeds start one cell on
        self.instruction = f"Walk right to the flag at cell {self.options['length'] - 1}."
        return self._look(), {"success": False}

    def _look(self) -> str:
        return f"You are at cell {self.position} of {self.options['length']}."

    def valid_actions(self) -> list[str]:
        return ["left", "right"]

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self.position = max(0, self.position + (1 if action == "right" else -1))
        arrived = self.position == self.options["length"] - 1
        self.done = arrived
        return self._look(), float(arrived), arrived, False, {"success": arrived}

    def _render_frame(self) -> np.ndarray:
        frame = np.full((24, 24 * self.options["length"], 3), 250, dtype=np.uint8)
        cv2.rectangle(frame, (24 * self.position + 4, 4), (24 * self.position + 19, 19), (40, 90, 200), thickness=-1)
        return frame

    def _get_state(self) -> dict[str, Any]:
        return {"position": self.position}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.position = state["position"]

    def expert_action(self) -> str:
        return "right"


class EchoBackend(Backend):
    """Always says it goes right: a backend with nothing but ``generate`` and a card."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def card(self) -> ModelCard:
        return ModelCard(
            id=f"echo:{self.name}", source="agent_studio_toys", capabilities=Capabilities(), architecture="Echo"
        )

    def generate(
        self,
        messages,
        n=1,
        sampling=None,
        stop=None,
        images=None,
        session=None,
        should_stop=None,
        assistant_prefix="",
        on_token=None,
    ) -> GenerateResult:
        text = " The flag is to the right.\nAction: right"
        return GenerateResult(
            generations=[Generation(text=text, tokens=[], finish_reason="stop") for _ in range(n)], cache=CacheStats()
        )


def load_echo(request: Any) -> EchoBackend:
    """A model that always goes right (echo:ANY_NAME)."""
    return EchoBackend(request.target)


def actions_export(store: Any, summary: Any, images: Any):
    """Every stored step as (task, observation, action): a plain table of what agents did."""
    for episode in store.episodes.summaries(limit=10_000):
        for step in store.episodes.get(episode.id).steps:
            yield {"env": episode.env, "observation": step.observation, "action": step.action}


class Shortest:
    """the shortest valid output: a toy verifier that likes brevity"""

    name = "shortest"
    needs_judge = False

    def scores(self, verified, outputs, episode, observation, should_stop):
        return [-float(len(output.raw)) if output.valid else None for output in outputs]


class CsvActions:
    """a CSV of actions, one episode a file: a toy importer"""

    name = "csvactions"

    def read(self, path):
        from studio.importers.transcript import file_digest, file_time, source_record, stamped
        from studio.trace import Episode, Step

        actions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        digest = file_digest(path)
        steps = [
            Step(index=n, observation=f"row {n}", action=a, raw=a, actor="imported") for n, a in enumerate(actions)
        ]
        episode = Episode(
            env="imported:csv",
            seed=None,
            steps=steps,
            id=digest[:32],
            policy="imported",
            source=source_record(self.name, path, digest, path.name),
            end_reason="imported",
        )
        yield stamped(episode, file_time(path))


IMPORTER = CsvActions()
