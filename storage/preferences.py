"""Preference pairs, the annotation queue, judgements and step labels.

Pairs come from three sources: the candidates sampled at a step together with the output
actually taken (step pairs), two finished episodes on the same environment, options and
seed (trajectory pairs), or two things picked by hand. Every pair gets, once, a random
``swapped`` bit (blind views show its sides the other way round) and a random ``shuffle``
key that orders every annotator's queue: stable across sessions, random with respect to
source, model and time. Choices are stored in terms of the stored pair, whatever was shown.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from itertools import combinations
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, defer

from storage.agreement import agreement_report
from storage.db import Database, first_line
from storage.episodes import HEAVY_STEP_COLUMNS, EpisodeStore, candidate_record, step_record
from storage.orm import AnnotationRow, AnnotatorRow, CandidateRow, EpisodeRow, PairRow, StepLabelRow, StepRow
from storage.records import (
    CHOICES,
    PAIR_KINDS,
    PAIR_SOURCES,
    STEP_LABELS,
    AnnotationRecord,
    PairRecord,
    PairsMade,
    QueueItem,
    ShownSide,
    SideRef,
    StepLabelRecord,
)
from studio.errors import StudioError
from studio.trace import ABANDONED, Step, new_id, png_to_frame, tokens_from_list

SWAP = {"left": "right", "right": "left", "tie": "tie", "both_bad": "both_bad"}
INSERT_BATCH = 2000


def precise_now() -> str:
    """Microsecond timestamps: an annotator's judgements are ordered by them (undo)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalize_choice(choice: str) -> str:
    value = str(choice).strip().lower().replace("-", "_").replace(" ", "_")
    if value not in CHOICES:
        raise StudioError(f"Unknown choice {choice!r}: use left, right, tie or both-bad.")
    return value


def normalize_annotator(name: str) -> str:
    value = " ".join(str(name or "").split())
    if not value:
        raise StudioError("An annotator name is needed (any name that identifies you).")
    if len(value) > 200:
        raise StudioError("An annotator name can have at most 200 characters.")
    return value


def _check_filter(value: str | None, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise StudioError(f"Unknown {what} {value!r}: use one of {', '.join(allowed)}.")


def _pair_key(left: SideRef, right: SideRef) -> str:
    """The same two sides in either order give the same key (no duplicate pairs)."""
    return "|".join(sorted((left.key(), right.key())))


def _pair_record(row: PairRow) -> PairRecord:
    return PairRecord(
        id=row.id,
        kind=row.kind,
        source=row.source,
        env=row.env,
        left=SideRef(row.left_episode_id, row.step_index, row.left_candidate_id),
        right=SideRef(row.right_episode_id, row.step_index, row.right_candidate_id),
        swapped=row.swapped,
        created_at=row.created_at,
        step_index=row.step_index,
    )


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


class PreferenceStore:
    """Pairs, the annotation queue, annotations, step labels and agreement."""

    def __init__(self, database: Database, episodes: EpisodeStore) -> None:
        self.db = database
        self.episodes = episodes
        self._random = random.Random()

    # -- making pairs --------------------------------------------------------------------------
    def _insert_pairs(self, rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Insert pairs whose key is new; return (created, already there)."""
        created = existing = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal created, existing
            with self.db.writing() as session:
                keys = [r["key"] for r in batch]
                there = set(session.scalars(select(PairRow.key).where(PairRow.key.in_(keys))))
                fresh = {r["key"]: r for r in batch if r["key"] not in there}  # also dedupes the batch
                if fresh:
                    session.execute(insert(PairRow), list(fresh.values()))
                created += len(fresh)
                existing += len(batch) - len(fresh)
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                flush()
        if batch:
            flush()
        return created, existing

    def _pair_row(self, kind: str, source: str, env: str, left: SideRef, right: SideRef) -> dict[str, Any]:
        return {
            "id": new_id(),
            "key": _pair_key(left, right),
            "kind": kind,
            "source": source,
            "env": env,
            "step_index": left.step_index,
            "left_episode_id": left.episode_id,
            "left_candidate_id": left.candidate_id,
            "right_episode_id": right.episode_id,
            "right_candidate_id": right.candidate_id,
            "swapped": self._random.random() < 0.5,
            "shuffle": self._random.randrange(2**31),
            "created_at": precise_now(),
        }

    def pairs_from_candidates(
        self,
        env: str | None = None,
        episode_ids: list[str] | None = None,
        different_actions: bool = False,
        step_index: int | None = None,
    ) -> PairsMade:
        """Step pairs from every step with candidates: all two-way pairs of its outputs.

        The outputs of a step are the one actually taken and each candidate. Two outputs with
        the same text (or, with ``different_actions``, the same action) make no pair.
        """
        made = PairsMade()

        def rows() -> Iterator[dict[str, Any]]:
            for env_name, outputs in self._step_outputs(env, episode_ids, step_index):
                for (ref_a, text_a, action_a), (ref_b, text_b, action_b) in combinations(outputs, 2):
                    if text_a == text_b or (different_actions and action_a == action_b):
                        made.identical += 1
                        continue
                    yield self._pair_row("step", "candidates", env_name, ref_a, ref_b)

        made.created, made.already_there = self._insert_pairs(rows())
        return made

    def _step_outputs(
        self, env: str | None, episode_ids: list[str] | None, step_index: int | None = None
    ) -> Iterator[tuple[str, list[tuple[SideRef, str, str | None]]]]:
        """For each step with candidates: its environment and outputs (side, text, action)."""
        with self.db.reading() as session:
            query = (
                select(StepRow.id, StepRow.episode_id, StepRow.index, StepRow.raw, StepRow.action, EpisodeRow.env)
                .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
                .where(exists().where(CandidateRow.step_id == StepRow.id))
                .order_by(EpisodeRow.started_at, StepRow.episode_id, StepRow.index)
            )
            if env:
                query = query.where(EpisodeRow.env == env)
            if episode_ids:
                query = query.where(StepRow.episode_id.in_(episode_ids))
            if step_index is not None:
                query = query.where(StepRow.index == step_index)
            steps = session.execute(query).all()
            candidates: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
            step_ids = [s.id for s in steps]
            for start in range(0, len(step_ids), 500):
                chunk = step_ids[start : start + 500]
                query = select(CandidateRow.step_id, CandidateRow.id, CandidateRow.raw, CandidateRow.action).where(
                    CandidateRow.step_id.in_(chunk)
                )
                for row in session.execute(query.order_by(CandidateRow.step_id, CandidateRow.position)):
                    candidates[row.step_id].append((row.id, row.raw, row.action))
        for step in steps:
            outputs = [(SideRef(step.episode_id, step.index), step.raw, step.action)]
            outputs += [
                (SideRef(step.episode_id, step.index, cid), raw, action) for cid, raw, action in candidates[step.id]
            ]
            yield step.env, outputs

    def pairs_from_episodes(self, env: str | None = None) -> PairsMade:
        """Trajectory pairs: every two finished episodes with the same environment, options and seed.

        Forks are left out (they share their parent's first steps); pair them by hand. So are
        episodes their user abandoned (reset, forked or closed the tab before the end).
        """
        with self.db.reading() as session:
            query = select(EpisodeRow.id, EpisodeRow.env, EpisodeRow.env_options, EpisodeRow.seed).where(
                EpisodeRow.ended_at.is_not(None),
                EpisodeRow.forked_at.is_(None),
                or_(EpisodeRow.end_reason.is_(None), ~EpisodeRow.end_reason.startswith(ABANDONED)),
            )
            if env:
                query = query.where(EpisodeRow.env == env)
            groups: dict[tuple[str, str, int | None], list[str]] = defaultdict(list)
            for row in session.execute(query.order_by(EpisodeRow.started_at, EpisodeRow.id)):
                groups[(row.env, json.dumps(row.env_options, sort_keys=True), row.seed)].append(row.id)
        made = PairsMade()
        rows = (
            self._pair_row("trajectory", "episodes", group[0], SideRef(a), SideRef(b))
            for group, ids in groups.items()
            for a, b in combinations(ids, 2)
        )
        made.created, made.already_there = self._insert_pairs(rows)
        return made

    def add_pair(self, left: str, right: str) -> PairRecord:
        """A pair picked by hand: two episode ids, or two outputs at a step.

        An output is a candidate id, or ``EPISODE_ID:STEP`` for the output taken at that step.
        Two outputs must come from the same situation (environment and observation).
        """
        with self.db.reading() as session:
            left_ref, left_env, left_obs = self._resolve_ref(session, left)
            right_ref, right_env, right_obs = self._resolve_ref(session, right)
        if (left_ref.step_index is None) != (right_ref.step_index is None):
            raise StudioError("Pair two episodes, or two outputs at a step, not one of each.")
        if left_ref == right_ref:
            raise StudioError("Both sides of the pair are the same thing.")
        if left_env != right_env:
            raise StudioError(f"Cannot compare episodes of different environments ({left_env} and {right_env}).")
        if left_ref.step_index is not None and (left_obs != right_obs or left_ref.step_index != right_ref.step_index):
            raise StudioError(
                "These two outputs were produced at different steps or observations; they cannot share a context."
            )
        kind = "trajectory" if left_ref.step_index is None else "step"
        row = self._pair_row(kind, "manual", left_env, left_ref, right_ref)
        created, _ = self._insert_pairs([row])
        with self.db.reading() as session:
            stored = session.scalars(select(PairRow).where(PairRow.key == row["key"])).one()
            return _pair_record(stored)

    @staticmethod
    def _resolve_ref(session: Session, text: str) -> tuple[SideRef, str, str | None]:
        ref = str(text).strip()
        match = re.fullmatch(r"([0-9a-f]{32}):(\d+)", ref)
        if match:
            episode_id, index = match.group(1), int(match.group(2))
            row = session.execute(
                select(StepRow.observation, EpisodeRow.env)
                .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
                .where(StepRow.episode_id == episode_id, StepRow.index == index)
            ).first()
            if row is None:
                raise StudioError(f"No stored step {index} in episode {episode_id}.")
            return SideRef(episode_id, index), row.env, row.observation
        episode = session.get(EpisodeRow, ref)
        if episode is not None:
            return SideRef(ref), episode.env, None
        row = session.execute(
            select(StepRow.episode_id, StepRow.index, StepRow.observation, EpisodeRow.env)
            .join(CandidateRow, CandidateRow.step_id == StepRow.id)
            .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
            .where(CandidateRow.id == ref)
        ).first()
        if row is None:
            raise StudioError(
                f"No stored episode or candidate with id {ref!r} (an output at a step is EPISODE_ID:STEP)."
            )
        return SideRef(row.episode_id, row.index, ref), row.env, row.observation

    def pair(self, pair_id: str) -> PairRecord:
        with self.db.reading() as session:
            row = session.get(PairRow, pair_id)
            if row is None:
                raise StudioError(f"No pair with id {pair_id!r}.")
            return _pair_record(row)

    def pairs(self, kind: str | None = None, env: str | None = None, source: str | None = None) -> list[PairRecord]:
        with self.db.reading() as session:
            return [
                _pair_record(r)
                for r in session.scalars(
                    self._filtered(select(PairRow), kind, env, source).order_by(PairRow.created_at, PairRow.id)
                )
            ]

    @staticmethod
    def _filtered(query, kind: str | None, env: str | None, source: str | None):  # noqa: ANN001, ANN205
        _check_filter(kind, PAIR_KINDS, "pair kind")
        _check_filter(source, PAIR_SOURCES, "pair source")
        if kind:
            query = query.where(PairRow.kind == kind)
        if env:
            query = query.where(PairRow.env == env)
        if source:
            query = query.where(PairRow.source == source)
        return query

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
    ) -> AnnotationRecord:
        """Judge a pair; judging it again replaces the judgement (and the old one can be restored by undo).

        ``choice`` is left / right / tie / both-bad. With ``as_shown`` (the default) left and
        right mean the sides as the queue showed them; the store maps them to the stored pair.
        """
        value = normalize_choice(choice)
        if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
            raise StudioError(f"Confidence must be between 0 and 1, got {confidence}.")
        tag_list = [str(t).strip() for t in tags if str(t).strip()]

        def judge(session: Session) -> AnnotationRecord:
            pair = session.get(PairRow, pair_id)
            if pair is None:
                raise StudioError(f"No pair with id {str(pair_id)[:64]!r}.")
            stored = SWAP[value] if as_shown and pair.swapped else value
            annotator_id = self._annotator_id(session, annotator, create=True)
            row = session.scalars(
                select(AnnotationRow).where(
                    AnnotationRow.pair_id == pair_id, AnnotationRow.annotator_id == annotator_id
                )
            ).first()
            now = precise_now()
            fields = {
                "choice": stored,
                "rationale": str(rationale or ""),
                "tags": tag_list,
                "confidence": confidence,
                "seconds": seconds,
                "updated_at": now,
            }
            if row is None:
                row = AnnotationRow(pair_id=pair_id, annotator_id=annotator_id, created_at=now, previous=None, **fields)
                session.add(row)
            else:
                row.previous = {name: getattr(row, name) for name in fields}
                for name, new in fields.items():
                    setattr(row, name, new)
            session.flush()
            return self._annotation_record(row, normalize_annotator(annotator))

        return self.db.write(judge)

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

    # -- numbers -------------------------------------------------------------------------------
    def votes(self) -> dict[str, dict[str, str]]:
        """pair id -> annotator -> choice (of the stored pair)."""
        query = select(AnnotationRow.pair_id, AnnotatorRow.name, AnnotationRow.choice).join(
            AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id
        )
        votes: dict[str, dict[str, str]] = defaultdict(dict)
        with self.db.reading() as session:
            for pair_id, name, choice in session.execute(query):
                votes[pair_id][name] = choice
        return dict(votes)

    def stats(self) -> dict[str, Any]:
        """Counts of pairs, annotations and labels, per annotator, and agreement between annotators.

        ``choices`` counts left/right of the stored pair; ``choices_as_shown`` as the annotators
        saw them (what they pressed)."""
        with self.db.reading() as session:
            pairs_by_kind = dict(session.execute(select(PairRow.kind, func.count()).group_by(PairRow.kind)).all())
            per_annotator = dict(
                session.execute(
                    select(AnnotatorRow.name, func.count())
                    .join(AnnotationRow, AnnotationRow.annotator_id == AnnotatorRow.id)
                    .group_by(AnnotatorRow.name)
                ).all()
            )
            by_side = session.execute(
                select(AnnotationRow.choice, PairRow.swapped, func.count())
                .join(PairRow, AnnotationRow.pair_id == PairRow.id)
                .group_by(AnnotationRow.choice, PairRow.swapped)
            ).all()
            labels = session.scalar(select(func.count()).select_from(StepLabelRow)) or 0
        choices: Counter[str] = Counter()
        shown: Counter[str] = Counter()  # the side the annotator saw and pressed (blind views swap half the pairs)
        for choice, swapped, count in by_side:
            choices[choice] += count
            shown[SWAP.get(choice, choice) if swapped else choice] += count
        return {
            "pairs": sum(pairs_by_kind.values()),
            "pairs_by_kind": pairs_by_kind,
            "annotations": sum(per_annotator.values()),
            "annotations_by_annotator": per_annotator,
            "choices": {c: choices.get(c, 0) for c in CHOICES},
            "choices_as_shown": {c: shown.get(c, 0) for c in CHOICES},
            "step_labels": labels,
            "agreement": agreement_report(self.votes()),
        }


def majority(choices: Iterable[str]) -> str | None:
    """The choice most annotators made; None when the top choices tie (no majority)."""
    ranked = Counter(choices).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


class CandidatePairSink:
    """A runner sink that queues the pairs of each step with candidates as soon as it is stored.

    Put it after the store's own sink. Sampling K candidates in the studio is then enough for
    their pairs to appear in the annotation queue.
    """

    def __init__(self, preferences: PreferenceStore) -> None:
        self.preferences = preferences

    def handle(self, event: Any) -> None:
        if event.kind == "step" and event.step is not None and event.step.candidates:
            try:
                self.preferences.pairs_from_candidates(
                    episode_ids=[event.episode.id], step_index=event.step.index
                )  # this step only
            except SQLAlchemyError as exc:  # the step itself is stored: say so, and how to make its pairs later
                raise StudioError(
                    f"Step {event.step.index} is stored, but its candidate pairs could not be queued ({first_line(exc)}); "
                    "`pairs --from candidates` makes them later."
                ) from None
