"""Sweeps in the store: the spec of each, and which of its cells have a complete episode.

A sweep's episodes are ordinary episodes with ``sweep_id`` and ``sweep_cell`` set. A cell is
complete when its episode ended with an outcome (``success`` not None); an episode a crash cut
off, or a Stop ended, is not, and :meth:`SweepStore.discard_incomplete` removes it before a
resume runs its cell again, so a resumed sweep holds one episode per cell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.db import Database
from storage.episodes import EpisodeStore
from storage.orm import EpisodeRow, PairRow, StepLabelRow, StepRow, StepValueRow, SweepRow
from studio.errors import StudioError
from studio.sweep import SweepSpec
from studio.trace import Episode, new_id, utc_now

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

    def __init__(self, database: Database, episodes: EpisodeStore) -> None:
        self.db = database
        self.episodes = episodes

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
        """The cells with an episode that ended with an outcome."""
        with self.db.reading() as session:
            return set(
                session.scalars(
                    select(EpisodeRow.sweep_cell).where(
                        EpisodeRow.sweep_id == sweep_id,
                        EpisodeRow.success.is_not(None),
                        EpisodeRow.sweep_cell.is_not(None),
                    )
                )
            )

    def discard_incomplete(self, sweep_id: str) -> int:
        """Remove the sweep's episodes without an outcome (a crash or a Stop cut them off) so that a
        resume runs their cells again; the number removed. One that something refers to (a pair, a
        step label, a step value: somebody's judgement) is kept, ended and untagged instead."""

        def work(session: Session) -> int:
            ids = list(
                session.scalars(
                    select(EpisodeRow.id).where(EpisodeRow.sweep_id == sweep_id, EpisodeRow.success.is_(None))
                )
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
        """The sweep's complete episodes, in cell order (the latest if a cell somehow has two)."""
        with self.db.reading() as session:
            rows = session.execute(
                select(EpisodeRow.id, EpisodeRow.sweep_cell)
                .where(EpisodeRow.sweep_id == sweep_id, EpisodeRow.success.is_not(None))
                .order_by(EpisodeRow.sweep_cell, EpisodeRow.started_at)
            ).all()
        latest = {cell: episode_id for episode_id, cell in rows}
        return [self.episodes.get(latest[cell]) for cell in sorted(latest)]


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
