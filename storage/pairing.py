"""Making preference pairs: from the candidates of a step, from finished episodes on the same
situation, or by hand. Every pair gets, once, a random ``swapped`` bit (blind views show its sides
the other way round) and a random ``shuffle`` key that orders every annotator's queue."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import combinations
from typing import Any

from sqlalchemy import exists, insert, or_, select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.episodes import EpisodeStore
from agent_studio.storage.orm import CandidateRow, EpisodeRow, PairRow, StepRow
from agent_studio.storage.records import (
    PAIR_KINDS,
    PAIR_SOURCES,
    PairRecord,
    PairsMade,
    SideRef,
)
from agent_studio.storage.vocab import check_filter, precise_now
from studio.errors import StudioError
from studio.trace import ABANDONED, new_id

INSERT_BATCH = 2000


def _pair_key(left: SideRef, right: SideRef) -> str:
    """The same two sides in either order give the same key (no duplicate pairs)."""
    return "|".join(sorted((left.key(), right.key())))


def pair_record(row: PairRow) -> PairRecord:
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


class PairMaking:
    """Part of :class:`~storage.preferences.PreferenceStore`: making and listing pairs."""

    db: Database
    episodes: EpisodeStore
    _random: random.Random

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
        """Trajectory pairs: every two finished episodes with the same environment, options and seed
        whose trajectories differ (two runs that wrote the same outputs at every step are not queued:
        ``identical`` counts them).

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
        groups = {group: ids for group, ids in groups.items() if len(ids) > 1}
        trajectories = self._trajectories([i for ids in groups.values() for i in ids])
        made = PairsMade()
        chosen = []
        for group, ids in groups.items():
            for a, b in combinations(ids, 2):
                if trajectories[a] == trajectories[b]:  # the same outputs, step for step: nothing to judge
                    made.identical += 1
                else:
                    chosen.append(self._pair_row("trajectory", "episodes", group[0], SideRef(a), SideRef(b)))
        made.created, made.already_there = self._insert_pairs(chosen)
        return made

    def _trajectories(self, episode_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """Each episode's outputs step by step (what a trajectory pair shows as its side)."""
        outputs: dict[str, list[str]] = {episode_id: [] for episode_id in episode_ids}
        with self.db.reading() as session:
            for start in range(0, len(episode_ids), 500):
                query = (
                    select(StepRow.episode_id, StepRow.raw, StepRow.action)
                    .where(StepRow.episode_id.in_(episode_ids[start : start + 500]))
                    .order_by(StepRow.episode_id, StepRow.index)
                )
                for row in session.execute(query):
                    outputs[row.episode_id].append(row.raw or row.action or "")
        return {episode_id: tuple(steps) for episode_id, steps in outputs.items()}

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
        if kind == "trajectory":
            trajectories = self._trajectories([left_ref.episode_id, right_ref.episode_id])
            if trajectories[left_ref.episode_id] == trajectories[right_ref.episode_id]:
                raise StudioError("These two episodes wrote the same outputs at every step: there is nothing to judge.")
        row = self._pair_row(kind, "manual", left_env, left_ref, right_ref)
        created, _ = self._insert_pairs([row])
        with self.db.reading() as session:
            stored = session.scalars(select(PairRow).where(PairRow.key == row["key"])).one()
            return pair_record(stored)

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
            return pair_record(row)

    def pairs(
        self, kind: str | None = None, env: str | None = None, source: str | None = None, episode_id: str | None = None
    ) -> list[PairRecord]:
        """Stored pairs, oldest first: of a kind, environment, source, or with a side in one episode."""
        query = self._filtered(select(PairRow), kind, env, source)
        if episode_id is not None:
            query = query.where(or_(PairRow.left_episode_id == episode_id, PairRow.right_episode_id == episode_id))
        with self.db.reading() as session:
            return [pair_record(r) for r in session.scalars(query.order_by(PairRow.created_at, PairRow.id))]

    @staticmethod
    def _filtered(query, kind: str | None, env: str | None, source: str | None):  # noqa: ANN001, ANN205
        check_filter(kind, PAIR_KINDS, "pair kind")
        check_filter(source, PAIR_SOURCES, "pair source")
        if kind:
            query = query.where(PairRow.kind == kind)
        if env:
            query = query.where(PairRow.env == env)
        if source:
            query = query.where(PairRow.source == source)
        return query
