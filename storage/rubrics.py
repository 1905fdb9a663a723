"""Rubric labels of whole episodes: judges' verdicts (with explanation, citations and provenance) and
people's labels, which the judges are validated against (:func:`studio.evaluation.rubric.agreement`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.orm import EpisodeRow, RubricLabelRow, StepRow
from studio.errors import StudioError
from studio.evaluation.rubric import NAME, RubricVerdict
from studio.trace import utc_now

#: How a person's label is stored: ``judge`` is ``human:NAME``.
HUMAN = "human:"


class RubricStore:
    """Rubric labels: one per episode, rubric and judge (labelling again replaces it)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def save(self, verdict: RubricVerdict) -> None:
        """Store a verdict; every citation must be a step the episode has (checked here too)."""

        def work(session: Session) -> None:
            if session.get(EpisodeRow, verdict.episode_id) is None:
                raise StudioError(f"No stored episode with id {str(verdict.episode_id)[:64]!r}.")
            steps = set(session.scalars(select(StepRow.index).where(StepRow.episode_id == verdict.episode_id)))
            missing = [n for n in verdict.citations if n not in steps]
            if missing:
                raise StudioError(
                    f"Episode {verdict.episode_id} has no step {missing[0]}: a citation must point at a step."
                )
            row = session.scalars(
                select(RubricLabelRow).where(
                    RubricLabelRow.episode_id == verdict.episode_id,
                    RubricLabelRow.rubric == verdict.rubric,
                    RubricLabelRow.judge == verdict.judge,
                )
            ).first()
            if row is None:
                row = RubricLabelRow(episode_id=verdict.episode_id, rubric=verdict.rubric, judge=verdict.judge)
                session.add(row)
            row.label, row.explanation = verdict.label, verdict.explanation
            row.citations, row.provenance, row.created_at = list(verdict.citations), verdict.provenance, utc_now()

        self.db.write(work)

    def label_by_hand(self, episode_id: str, rubric: str, label: str, annotator: str, labels: tuple[str, ...]) -> None:
        """A person's label of an episode under ``rubric`` (one of ``labels``)."""
        if label not in labels:
            raise StudioError(f"Label {label[:40]!r} is not one of {', '.join(labels)}.")
        if not NAME.match(annotator or ""):
            raise StudioError("An annotator's name is 1 to 100 letters, digits, '-', '_', '.' or ':'.")
        self.save(RubricVerdict(episode_id, rubric, f"{HUMAN}{annotator}", label, "", []))

    def verdicts(self, rubric: str, judge: str | None = None, episode_id: str | None = None) -> list[RubricVerdict]:
        """The stored labels under ``rubric`` (of one judge, of one episode, or all)."""
        query = select(RubricLabelRow).where(RubricLabelRow.rubric == rubric).order_by(RubricLabelRow.id)
        if judge is not None:
            query = query.where(RubricLabelRow.judge == judge)
        if episode_id is not None:
            query = query.where(RubricLabelRow.episode_id == episode_id)
        with self.db.reading() as session:
            return [
                RubricVerdict(
                    r.episode_id, r.rubric, r.judge, r.label, r.explanation, list(r.citations), r.provenance or {}
                )
                for r in session.scalars(query)
            ]

    def of_episode(self, episode_id: str) -> list[RubricVerdict]:
        with self.db.reading() as session:
            rows = session.scalars(
                select(RubricLabelRow).where(RubricLabelRow.episode_id == episode_id).order_by(RubricLabelRow.id)
            )
            return [
                RubricVerdict(
                    r.episode_id, r.rubric, r.judge, r.label, r.explanation, list(r.citations), r.provenance or {}
                )
                for r in rows
            ]

    def labels_by_episode(self, rubric: str, judge: str) -> dict[str, str]:
        """episode id -> label, of one judge (``human:NAME`` for a person)."""
        return {v.episode_id: v.label for v in self.verdicts(rubric, judge)}
