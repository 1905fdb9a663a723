"""Core records to database rows and back: a :class:`~studio.trace.Step` and its candidates as
``StepRow``/``CandidateRow`` (frames as PNG, tokens as lists), and rows as records again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_studio.storage.orm import CandidateRow, EpisodeRow, StepRow
from studio.trace import Candidate, Episode, Step, frame_to_png, png_to_frame, tokens_from_list, tokens_to_list


def step_row(episode_id: str, step: Step) -> StepRow:
    return StepRow(**step_values(episode_id, step))


def step_values(episode_id: str, step: Step) -> dict[str, Any]:
    """A step's columns (for one ORM row, or many rows in one bulk insert)."""
    return dict(
        episode_id=episode_id,
        index=step.index,
        observation=step.observation,
        action=step.action,
        actor=step.actor,
        raw=step.raw,
        thought=step.thought,
        valid=step.valid,
        invalid_reason=step.invalid_reason,
        reward=float(step.reward),
        terminated=step.terminated,
        truncated=step.truncated,
        next_observation=step.next_observation,
        prompt=step.prompt,
        info=step.info,
        timing=step.timing,
        tokens=tokens_to_list(step.tokens),
        action_logprobs=step.action_logprobs,
        extra=step.extra,
        frame=frame_to_png(step.frame),
        state=step.state,
    )


def candidate_rows(step_id: int, candidates: list[Candidate]) -> list[CandidateRow]:
    return [
        CandidateRow(
            id=c.id,
            step_id=step_id,
            position=position,
            raw=c.raw,
            thought=c.thought,
            action=c.action,
            valid=c.valid,
            invalid_reason=c.invalid_reason,
            tokens=tokens_to_list(c.tokens),
        )
        for position, c in enumerate(candidates)
    ]


def candidate_record(row: CandidateRow) -> Candidate:
    return Candidate(
        id=row.id,
        raw=row.raw,
        thought=row.thought,
        action=row.action,
        valid=row.valid,
        invalid_reason=row.invalid_reason,
        tokens=tokens_from_list(row.tokens),
    )


def step_record(
    row: StepRow, candidates: list[Candidate] | None = None, heavy: bool = True, tokens: bool = True
) -> Step:
    """A core Step from its row; with ``heavy=False`` the prompt, snapshot and frame stay unloaded,
    with ``tokens=False`` the token list too (each is a deferred column the caller did not load)."""
    return Step(
        index=row.index,
        observation=row.observation,
        action=row.action,
        frame=png_to_frame(row.frame) if heavy else None,
        actor=row.actor,
        prompt=row.prompt if heavy else None,
        raw=row.raw,
        thought=row.thought,
        valid=row.valid,
        invalid_reason=row.invalid_reason,
        reward=row.reward,
        terminated=row.terminated,
        truncated=row.truncated,
        next_observation=row.next_observation,
        info=dict(row.info or {}),
        timing=dict(row.timing or {}),
        tokens=tokens_from_list(row.tokens) if tokens else None,
        action_logprobs=row.action_logprobs,
        candidates=candidates or [],
        extra=dict(row.extra or {}),
        state=row.state if heavy else None,
    )


def episode_record(row: EpisodeRow, model: dict[str, Any] | None, steps: list[Step]) -> Episode:
    return Episode(
        env=row.env,
        seed=row.seed,
        env_options=dict(row.env_options or {}),
        instruction=row.instruction,
        policy=row.policy,
        policy_config=dict(row.policy_config or {}),
        model=model,
        steps=steps,
        success=row.success,
        end_reason=row.end_reason,
        id=row.id,
        parent_id=row.parent_id,
        forked_at=row.forked_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        sweep=row.sweep_id,
        sweep_cell=row.sweep_cell,
        max_steps=row.max_steps,
        source=row.source,
    )


@dataclass
class EpisodeSummary:
    """One row of the episode browser."""

    id: str
    env: str
    seed: int | None
    policy: str
    model: str | None
    success: bool | None
    steps: int
    total_return: float
    end_reason: str | None
    started_at: str
    ended_at: str | None
    parent_id: str | None
    forked_at: int | None


def episode_summary(row: EpisodeRow, model_name: str | None) -> EpisodeSummary:
    """An episode's row (and its model's name) as a row of the episode browser."""
    return EpisodeSummary(
        id=row.id,
        env=row.env,
        seed=row.seed,
        policy=row.policy,
        model=model_name,
        success=row.success,
        steps=row.length,
        total_return=row.total_return,
        end_reason=row.end_reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        parent_id=row.parent_id,
        forked_at=row.forked_at,
    )
