"""The blind annotation queue and judgements: what an annotator sees next (sides swapped by the
pair's bit, nothing that says who produced them), their choices, undo, and the annotations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from agent_studio.storage.db import Database
from agent_studio.storage.episode_rows import candidate_record, step_record
from agent_studio.storage.episodes import HEAVY_STEP_COLUMNS, EpisodeStore
from agent_studio.storage.orm import AnnotationRow, AnnotatorRow, CandidateRow, EpisodeRow, PairRow, StepRow
from agent_studio.storage.records import (
    AnnotationRecord,
    QueueItem,
    ShownSide,
)
from agent_studio.storage.vocab import SWAP, normalize_annotator, normalize_choice, precise_now
from studio.errors import StudioError
from studio.trace import Step, png_to_frame, tokens_from_list

# The judge's model loop lives in the core (studio.scaling.judge); the name stays importable here for one release.
from studio.scaling.judge import judge_queue  # noqa: E402, F401


def _blind(step: Step) -> Step:
    """A step with nothing that tells who produced it."""
    step.actor, step.extra, step.timing, step.prompt, step.state = "", {}, {}, None, None
    return step


class _PageLoader:
    """Builds the queue items of a page of pairs with a handful of queries, whatever its size."""

    def __init__(self, session: Session, rows: list[PairRow]) -> None:
        self.session, self.rows = session, rows
        episode_ids = sorted({r.left_episode_id for r in rows} | {r.right_episode_id for r in rows})
        self.episodes = (
            {e.id: e for e in session.scalars(select(EpisodeRow).where(EpisodeRow.id.in_(episode_ids)))} if rows else {}
        )
        # Every step of these episodes, without the heavy columns (history and trajectories)...
        light = [getattr(StepRow, c) for c in (*HEAVY_STEP_COLUMNS, "tokens")]
        self.steps: dict[str, list[StepRow]] = defaultdict(list)
        if rows:
            query = (
                select(StepRow).where(StepRow.episode_id.in_(episode_ids)).order_by(StepRow.episode_id, StepRow.index)
            )
            for step in session.scalars(query.options(*(defer(c) for c in light))):
                self.steps[step.episode_id].append(step)
        # ...then the frame of each shared observation and the tokens of each side.
        spots = {(r.left_episode_id, r.step_index or 0) for r in rows} | {
            (r.right_episode_id, r.step_index) for r in rows if r.step_index is not None
        }
        self.frames: dict[tuple[str, int], Any] = {}
        self.tokens: dict[tuple[str, int], Any] = {}
        if spots:
            # OR of (episode, index) pairs: SQLite uses the (episode_id, index) index for it (a row-value IN scans).
            where = or_(*(and_(StepRow.episode_id == e, StepRow.index == i) for e, i in sorted(spots)))
            query = select(StepRow.episode_id, StepRow.index, StepRow.frame, StepRow.tokens).where(where)
            for episode_id, index, frame, tokens in session.execute(query):
                self.frames[(episode_id, index)], self.tokens[(episode_id, index)] = frame, tokens
        candidate_ids = [c for r in rows for c in (r.left_candidate_id, r.right_candidate_id) if c]
        self.candidates = (
            {c.id: c for c in session.scalars(select(CandidateRow).where(CandidateRow.id.in_(candidate_ids)))}
            if candidate_ids
            else {}
        )

    def items(self) -> list[QueueItem]:
        return [self._item(row) for row in self.rows]

    def _step(self, episode_id: str, index: int) -> StepRow | None:
        steps = self.steps.get(episode_id, [])
        return steps[index] if 0 <= index < len(steps) and steps[index].index == index else None

    def _item(self, row: PairRow) -> QueueItem:
        episode = self.episodes.get(row.left_episode_id)
        index = row.step_index or 0
        context = self._step(row.left_episode_id, index)
        if row.kind == "trajectory":
            history, left, right = [], self._trajectory(row.left_episode_id), self._trajectory(row.right_episode_id)
        else:
            history = [
                _blind(step_record(s, heavy=False, tokens=False)) for s in self.steps[row.left_episode_id][:index]
            ]
            left, right = (
                self._output(row.left_episode_id, index, row.left_candidate_id),
                self._output(row.right_episode_id, index, row.right_candidate_id),
            )
        if row.swapped:
            left, right = right, left
        return QueueItem(
            pair_id=row.id,
            kind=row.kind,
            env=row.env,
            source=row.source,
            instruction=episode.instruction if episode else "",
            step_index=row.step_index,
            history=history,
            observation=context.observation if context else "",
            frame=png_to_frame(self.frames.get((row.left_episode_id, index))),
            left=left,
            right=right,
            swapped=row.swapped,
            context=(row.left_episode_id, index),
            elements=_elements(context.info if context is not None and row.kind != "trajectory" else None),
        )

    def _output(self, episode_id: str, index: int, candidate_id: str | None) -> ShownSide:
        if candidate_id is not None:
            c = candidate_record(self.candidates[candidate_id])
            return ShownSide(
                raw=c.raw,
                thought=c.thought,
                action=c.action,
                valid=c.valid,
                invalid_reason=c.invalid_reason,
                tokens=c.tokens,
            )
        step = self._step(episode_id, index)
        return ShownSide(
            raw=step.raw,
            thought=step.thought,
            action=step.action,
            valid=step.valid,
            invalid_reason=step.invalid_reason,
            tokens=tokens_from_list(self.tokens.get((episode_id, index))),
        )

    def _trajectory(self, episode_id: str) -> ShownSide:
        episode = self.episodes[episode_id]
        steps = [_blind(step_record(s, heavy=False, tokens=False)) for s in self.steps[episode_id]]
        return ShownSide(
            steps=steps, success=episode.success, total_return=episode.total_return, end_reason=episode.end_reason
        )


class Judging:
    """Part of :class:`~storage.preferences.PreferenceStore`: annotators, the queue, judgements."""

    db: Database
    episodes: EpisodeStore

    # -- annotators ----------------------------------------------------------------------------
    def _annotator_id(self, session: Session, name: str, create: bool) -> int | None:
        name = normalize_annotator(name)
        found = session.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == name))
        if found is not None or not create:
            return found
        try:
            with session.begin_nested():
                row = AnnotatorRow(name=name, created_at=precise_now())
                session.add(row)
            return row.id
        except IntegrityError:  # another process created it a moment ago
            return session.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == name))

    # -- the queue -----------------------------------------------------------------------------
    def _unjudged(self, annotator_id: int | None):  # noqa: ANN202
        if annotator_id is None:
            return select(PairRow)
        judged = exists().where(and_(AnnotationRow.pair_id == PairRow.id, AnnotationRow.annotator_id == annotator_id))
        return select(PairRow).where(~judged)

    def queue(
        self,
        annotator: str,
        limit: int = 10,
        kind: str | None = None,
        env: str | None = None,
        source: str | None = None,
    ) -> list[QueueItem]:
        """The next pairs this annotator has not judged, in the queue's stable random order."""
        with self.db.reading() as session:
            annotator_id = self._annotator_id(session, annotator, create=False)
            query = (
                self._filtered(self._unjudged(annotator_id), kind, env, source)
                .order_by(PairRow.shuffle, PairRow.id)
                .limit(limit)
            )
            return _PageLoader(session, session.scalars(query).all()).items()

    def progress(
        self, annotator: str, kind: str | None = None, env: str | None = None, source: str | None = None
    ) -> tuple[int, int]:
        """(pairs this annotator judged, pairs in total) under the filters."""
        with self.db.reading() as session:
            total = session.scalar(self._filtered(select(func.count()).select_from(PairRow), kind, env, source)) or 0
            annotator_id = (
                self._annotator_id(session, annotator, create=False) if str(annotator or "").strip() else None
            )
            if annotator_id is None:
                return 0, total
            judged_query = (
                select(func.count())
                .select_from(PairRow)
                .join(AnnotationRow, AnnotationRow.pair_id == PairRow.id)
                .where(AnnotationRow.annotator_id == annotator_id)
            )
            return session.scalar(self._filtered(judged_query, kind, env, source)) or 0, total

    def item(self, pair_id: str) -> QueueItem:
        """One pair as an annotator sees it (e.g. to show a judged pair again)."""
        with self.db.reading() as session:
            row = session.get(PairRow, pair_id)
            if row is None:
                raise StudioError(f"No pair with id {pair_id!r}.")
            return _PageLoader(session, [row]).items()[0]

    # -- judging -------------------------------------------------------------------------------
    def annotate(
        self,
        pair_id: str,
        annotator: str,
        choice: str,
        rationale: str = "",
        tags: Iterable[str] = (),
        confidence: float | None = None,
        seconds: float | None = None,
        as_shown: bool = True,
        provenance: dict[str, Any] | None = None,
    ) -> AnnotationRecord:
        """Judge a pair; judging it again replaces the judgement (and the old one can be restored by undo).

        ``choice`` is left / right / tie / both-bad. With ``as_shown`` (the default) left and
        right mean the sides as the queue showed them; the store maps them to the stored pair.
        ``provenance``: how a machine annotator came to it (JSON), kept beside the judgement.
        """
        fields = judgement_fields(choice, rationale, tags, confidence, seconds, provenance)
        return self.db.write(lambda session: self._judge_in(session, pair_id, annotator, fields, as_shown))

    def _judge_in(
        self, session: Session, pair_id: str, annotator: str, fields: dict[str, Any], as_shown: bool
    ) -> AnnotationRecord:
        """Store one judgement (:func:`judgement_fields`) in ``session``'s transaction."""
        pair = session.get(PairRow, pair_id)
        if pair is None:
            raise StudioError(f"No pair with id {str(pair_id)[:64]!r}.")
        fields = {**fields, "choice": SWAP[fields["choice"]] if as_shown and pair.swapped else fields["choice"]}
        annotator_id = self._annotator_id(session, annotator, create=True)
        row = session.scalars(
            select(AnnotationRow).where(AnnotationRow.pair_id == pair_id, AnnotationRow.annotator_id == annotator_id)
        ).first()
        now = precise_now()
        fields["updated_at"] = now
        if row is None:
            row = AnnotationRow(pair_id=pair_id, annotator_id=annotator_id, created_at=now, previous=None, **fields)
            session.add(row)
        else:
            row.previous = {name: getattr(row, name) for name in fields}
            for name, new in fields.items():
                setattr(row, name, new)
        session.flush()
        return self._annotation_record(row, normalize_annotator(annotator))

    @staticmethod
    def _annotation_record(row: AnnotationRow, annotator: str) -> AnnotationRecord:
        return AnnotationRecord(
            pair_id=row.pair_id,
            annotator=annotator,
            choice=row.choice,
            rationale=row.rationale,
            tags=list(row.tags or []),
            confidence=row.confidence,
            seconds=row.seconds,
            created_at=row.created_at,
            updated_at=row.updated_at,
            provenance=row.provenance,
        )

    def undo(self, annotator: str) -> str | None:
        """Undo this annotator's latest judgement: restore what it replaced, or remove it.

        Returns the pair id (it is back in the queue when the judgement was removed), or None.
        """
        with self.db.writing() as session:
            annotator_id = self._annotator_id(session, annotator, create=False)
            if annotator_id is None:
                return None
            row = session.scalars(
                select(AnnotationRow)
                .where(AnnotationRow.annotator_id == annotator_id)
                .order_by(AnnotationRow.updated_at.desc(), AnnotationRow.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            if row.previous:
                for name, old in row.previous.items():
                    setattr(row, name, old)
                row.previous = None
            else:
                session.delete(row)
            return row.pair_id

    def annotations(self, pair_id: str | None = None, annotator: str | None = None) -> list[AnnotationRecord]:
        query = select(AnnotationRow, AnnotatorRow.name).join(
            AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id
        )
        if pair_id:
            query = query.where(AnnotationRow.pair_id == pair_id)
        if annotator:
            query = query.where(AnnotatorRow.name == normalize_annotator(annotator))
        with self.db.reading() as session:
            return [
                self._annotation_record(row, name)
                for row, name in session.execute(query.order_by(AnnotationRow.updated_at, AnnotationRow.id))
            ]


def judgement_fields(
    choice: str,
    rationale: str = "",
    tags: Iterable[str] = (),
    confidence: float | None = None,
    seconds: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A judgement's columns, checked (``choice`` as given: left/right are mapped to the stored pair later)."""
    if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
        raise StudioError(f"Confidence must be between 0 and 1, got {confidence}.")
    return {
        "choice": normalize_choice(choice),
        "rationale": str(rationale or ""),
        "tags": [str(t).strip() for t in tags if str(t).strip()],
        "confidence": confidence,
        "seconds": seconds,
        "provenance": provenance,
    }


def _elements(info: Any) -> dict[str, list[int]] | None:
    """A screen step's element boxes (what the pair's actions are drawn with), else None."""
    elements = info.get("elements") if isinstance(info, dict) else None
    return elements if isinstance(elements, dict) else None
