"""Step labels: an annotator's good/neutral/bad (or correct/redundant/erroneous) on one step."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.orm import AnnotatorRow, StepLabelRow, StepRow
from agent_studio.storage.records import (
    STEP_LABELS,
    StepLabelRecord,
)
from agent_studio.storage.vocab import normalize_annotator, precise_now
from studio.errors import StudioError


class StepLabelling:
    """Part of :class:`~storage.preferences.PreferenceStore`: labelling steps (annotators are the
    judging part's: :meth:`~storage.judging.Judging._annotator_id`)."""

    db: Database
    _annotator_id: Callable[..., int | None]

    # -- step labels ---------------------------------------------------------------------------
    def label_step(
        self, episode_id: str, step_index: int, annotator: str, label: str, note: str = ""
    ) -> StepLabelRecord:
        """Label one step (good / neutral / bad, or correct / redundant / erroneous); again to change it."""
        value = str(label).strip().lower()
        if value not in STEP_LABELS:
            raise StudioError(f"Unknown step label {label!r}: use one of {', '.join(STEP_LABELS)}.")

        def label(session: Session) -> StepLabelRecord:
            step_id = session.scalar(
                select(StepRow.id).where(StepRow.episode_id == episode_id, StepRow.index == step_index)
            )
            if step_id is None:
                raise StudioError(f"No stored step {step_index} in episode {str(episode_id)[:64]}.")
            annotator_id = self._annotator_id(session, annotator, create=True)
            row = session.scalars(
                select(StepLabelRow).where(StepLabelRow.step_id == step_id, StepLabelRow.annotator_id == annotator_id)
            ).first()
            now = precise_now()
            if row is None:
                row = StepLabelRow(
                    step_id=step_id,
                    annotator_id=annotator_id,
                    label=value,
                    note=str(note or ""),
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
            else:
                row.label, row.note, row.updated_at = value, str(note or ""), now
            return StepLabelRecord(episode_id, step_index, normalize_annotator(annotator), value, row.note, now)

        return self.db.write(label)

    def step_labels(self, episode_id: str | None = None) -> list[StepLabelRecord]:
        query = (
            select(
                StepRow.episode_id,
                StepRow.index,
                AnnotatorRow.name,
                StepLabelRow.label,
                StepLabelRow.note,
                StepLabelRow.updated_at,
            )
            .join(StepRow, StepRow.id == StepLabelRow.step_id)
            .join(AnnotatorRow, AnnotatorRow.id == StepLabelRow.annotator_id)
        )
        if episode_id:
            query = query.where(StepRow.episode_id == episode_id)
        with self.db.reading() as session:
            return [
                StepLabelRecord(*row)
                for row in session.execute(query.order_by(StepRow.episode_id, StepRow.index, AnnotatorRow.name))
            ]
