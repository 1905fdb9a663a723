"""Sweeps in the store: the spec of each, and which of its cells have a complete episode.

A sweep's episodes are ordinary episodes with ``sweep_id`` and ``sweep_cell`` set. A cell is
complete when its episode ran to its end (:attr:`studio.trace.Episode.complete`; its success may be
unknown where the environment has no notion of success); an episode a crash cut off, or a Stop ended, is not, and :meth:`SweepStore.discard_incomplete` removes it before a
resume runs its cell again, so a resumed sweep holds one episode per cell.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from storage.db import Database
from storage.episodes import HEAVY_STEP_COLUMNS, complete_clause, episode_record, step_record
from storage.orm import EpisodeRow, ModelRow, PairRow, StepLabelRow, StepRow, StepValueRow, SweepRow
from studio.errors import StudioError
from studio.sweep import SweepSpec
from studio.trace import Episode, Step, new_id, utc_now

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class SweepRecord:
    """A stored sweep."""

    id: str
    name: str
    spec: SweepSpec
    cells: int
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "spec": self.spec.to_dict(),
            "cells": self.cells,
            "created_at": self.created_at,
        }


def _record(row: SweepRow) -> SweepRecord:
    return SweepRecord(row.id, row.name, SweepSpec.from_dict(row.spec), row.cells, row.created_at)


class SweepStore:
    """Sweeps (``store.sweeps``): created once, then read by their name or id."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def create(self, spec: SweepSpec, name: str | None = None) -> SweepRecord:
        """Store a new sweep; ``name`` (letters, digits, ``_ . -``) defaults to ``sweep-`` and its id's start."""
        sweep_id = new_id()
        name = name or f"sweep-{sweep_id[:8]}"
        if not _NAME.match(name):
            raise StudioError(
                f"A sweep's name is up to 100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"not {name[:40]!r}."
            )
        row = SweepRow(id=sweep_id, name=name, spec=spec.to_dict(), cells=spec.size, created_at=utc_now())
        try:
            with self.db.writing() as session:
                session.add(row)
        except IntegrityError:
            raise StudioError(f"A sweep named {name!r} already exists: resume it, or choose another name.") from None
        return _record(row)

    def get(self, name_or_id: str) -> SweepRecord:
        """The sweep with this name (or id); one line when there is none."""
        with self.db.reading() as session:
            row = session.scalars(
                select(SweepRow).where(or_(SweepRow.name == name_or_id, SweepRow.id == name_or_id))
            ).first()
            if row is None:
                raise StudioError(
                    f"No sweep named {str(name_or_id)[:60]!r} in this database (agent-studio sweeps lists them)."
                )
            return _record(row)

    def list(self) -> list[SweepRecord]:
        """Every sweep, newest first."""
        with self.db.reading() as session:
            return [_record(row) for row in session.scalars(select(SweepRow).order_by(SweepRow.created_at.desc()))]

    def complete_cells(self, sweep_id: str) -> set[int]:
        """The cells with an episode that ran to its end."""
        with self.db.reading() as session:
            return set(
                session.scalars(
                    select(EpisodeRow.sweep_cell).where(
                        EpisodeRow.sweep_id == sweep_id, complete_clause(), EpisodeRow.sweep_cell.is_not(None)
                    )
                )
            )

    def resume(self, sweep_id: str) -> tuple[int, set[int]]:
        """Ready the sweep to go on: :meth:`discard_incomplete`, then :meth:`complete_cells` (the ones
        to skip); the number of episodes removed and those cells."""
        removed = self.discard_incomplete(sweep_id)
        return removed, self.complete_cells(sweep_id)

    def discard_incomplete(self, sweep_id: str) -> int:
        """Remove the sweep's episodes that did not run to their end (a crash or a Stop cut them off) so that a
        resume runs their cells again; the number removed. One that something refers to (a pair, a
        step label, a step value: somebody's judgement) is kept, ended and untagged instead."""

        def work(session: Session) -> int:
            ids = list(
                session.scalars(select(EpisodeRow.id).where(EpisodeRow.sweep_id == sweep_id, ~complete_clause()))
            )
            if not ids:
                return 0
            kept = _referenced(session, ids)
            if kept:
                session.execute(
                    update(EpisodeRow)
                    .where(EpisodeRow.id.in_(kept), EpisodeRow.ended_at.is_(None))
                    .values(end_reason="stopped: its sweep was interrupted", ended_at=utc_now())
                )
                session.execute(
                    update(EpisodeRow).where(EpisodeRow.id.in_(kept)).values(sweep_id=None, sweep_cell=None)
                )
            removed = [episode_id for episode_id in ids if episode_id not in kept]
            if removed:
                session.execute(delete(EpisodeRow).where(EpisodeRow.id.in_(removed)))
            return len(removed)

        return self.db.write(work)

    def episodes_of(self, sweep_id: str) -> list[Episode]:
        """The sweep's complete episodes in cell order, as results read them: in two queries, without
        the steps' prompts, snapshots, frames and candidates (``store.episodes.get`` has the whole
        episode). The latest, should a cell have two."""
        with self.db.reading() as session:
            rows = session.scalars(
                select(EpisodeRow)
                .where(EpisodeRow.sweep_id == sweep_id, complete_clause())
                .order_by(EpisodeRow.sweep_cell, EpisodeRow.started_at)
            ).all()
            latest = {row.sweep_cell: row for row in rows}
            ids = {row.id for row in latest.values()}
            models = {
                model.id: model.description
                for model in session.scalars(select(ModelRow).where(ModelRow.id.in_({r.model_id for r in rows})))
            }
            steps: dict[str, list[Step]] = defaultdict(list)
            query = (
                select(StepRow)
                .join(EpisodeRow, StepRow.episode_id == EpisodeRow.id)
                .where(EpisodeRow.sweep_id == sweep_id, complete_clause())
                .order_by(StepRow.episode_id, StepRow.index)
                .options(*(defer(getattr(StepRow, column)) for column in HEAVY_STEP_COLUMNS))
            )
            for step in session.scalars(query):
                if step.episode_id in ids:
                    steps[step.episode_id].append(step_record(step, heavy=False))
            return [
                episode_record(row, models.get(row.model_id), steps[row.id]) for _cell, row in sorted(latest.items())
            ]


def _referenced(session: Session, episode_ids: list[str]) -> set[str]:
    """Those of ``episode_ids`` that a pair, a step label or a step value refers to."""
    kept = set(session.scalars(select(PairRow.left_episode_id).where(PairRow.left_episode_id.in_(episode_ids)))) | set(
        session.scalars(select(PairRow.right_episode_id).where(PairRow.right_episode_id.in_(episode_ids)))
    )
    for table in (StepLabelRow, StepValueRow):
        kept |= set(
            session.scalars(
                select(StepRow.episode_id)
                .join(table, table.step_id == StepRow.id)
                .where(StepRow.episode_id.in_(episode_ids))
            )
        )
    return kept
