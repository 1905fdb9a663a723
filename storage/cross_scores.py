"""Cross-model scores in the store: model B's logprobs of each step's output of an episode."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.orm import CrossScoreRow, StepRow
from studio.evaluation.crossscore import CrossScore
from studio.errors import StudioError
from studio.trace import TokenInfo


class CrossScoreStore:
    """``store.cross_scores``: saved per step and scoring model (scoring again replaces)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def save(self, scores: list[CrossScore]) -> int:
        """Store ``scores`` in one transaction; the number stored."""

        def work(session: Session) -> int:
            for score in scores:
                step_id = session.scalar(
                    select(StepRow.id).where(StepRow.episode_id == score.episode_id, StepRow.index == score.step_index)
                )
                if step_id is None:
                    raise StudioError(f"Step {score.step_index} of episode {score.episode_id} is not stored.")
                row = session.scalars(
                    select(CrossScoreRow).where(CrossScoreRow.step_id == step_id, CrossScoreRow.scorer == score.scorer)
                ).first()
                if row is None:
                    row = CrossScoreRow(step_id=step_id, scorer=score.scorer)
                    session.add(row)
                row.tokens = [token.to_dict() for token in score.tokens]
                row.total, row.own_total = score.total, score.own_total
                row.preferred, row.action_logprobs = score.preferred, score.action_logprobs
                row.created_at = score.created_at
            return len(scores)

        return self.db.write(work)

    def of_episode(self, episode_id: str, scorer: str | None = None) -> list[CrossScore]:
        """The stored scores of an episode's steps (of one scorer, or all), by step then scorer."""
        query = (
            select(CrossScoreRow, StepRow.index, StepRow.action)
            .join(StepRow, CrossScoreRow.step_id == StepRow.id)
            .where(StepRow.episode_id == episode_id)
            .order_by(StepRow.index, CrossScoreRow.scorer)
        )
        if scorer is not None:
            query = query.where(CrossScoreRow.scorer == scorer)
        with self.db.reading() as session:
            return [
                CrossScore(
                    episode_id=episode_id,
                    step_index=index,
                    scorer=row.scorer,
                    tokens=[TokenInfo.from_dict(token) for token in row.tokens],
                    own_total=row.own_total,
                    action=action,
                    preferred=row.preferred,
                    action_logprobs=row.action_logprobs,
                    created_at=row.created_at,
                )
                for row, index, action in session.execute(query)
            ]
