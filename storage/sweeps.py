"""Sweeps in the store: the spec of each, and which of its cells have a complete episode.

A sweep's episodes are ordinary episodes with ``sweep_id`` and ``sweep_cell`` set. A cell is
complete when its episode ran to its end (:attr:`studio.trace.Episode.complete`; its success may be
unknown where the environment has no notion of success); an episode a crash cut off, or a Stop
ended, is not, and :meth:`SweepStore.discard_incomplete` removes it before a resume runs its cell
again, so a resumed sweep holds one episode per cell.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from agent_studio.storage.db import Database, process_gone, process_name
from agent_studio.storage.episode_rows import episode_record, step_record
from agent_studio.storage.episodes import HEAVY_STEP_COLUMNS, complete_clause
from agent_studio.storage.orm import EpisodeRow, ModelRow, PairRow, StepLabelRow, StepRow, StepValueRow, SweepRow
from studio.errors import StudioError
from studio.evaluation.sweep import SweepSpec
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

    def create(self, spec: SweepSpec, name: str | None = None, lease: SweepLease | None = None) -> SweepRecord:
        """Store a new sweep; ``name`` (letters, digits, ``_ . -``) defaults to ``sweep-`` and its id's start.
        With ``lease``, the sweep is stored already held by it (no other process can resume it in between)."""
        sweep_id = new_id()
        name = name or f"sweep-{sweep_id[:8]}"
        if not _NAME.match(name):
            raise StudioError(
                f"A sweep's name is up to 100 letters, digits, '_', '.' or '-', starting with a letter or digit, "
                f"not {name[:40]!r}."
            )
        now = utc_now()
        row = SweepRow(
            id=sweep_id,
            name=name,
            spec=spec.to_dict(),
            cells=spec.size,
            created_at=now,
            lease_owner=lease.owner if lease else None,
            lease_heartbeat=now if lease else None,
        )
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

    # -- leases: one runner at a time ----------------------------------------------------------------
    def acquire(self, sweep_id: str, owner: str, stale_seconds: float) -> None:
        """Make ``owner`` the sweep's runner: refused (one line) while another owner's heartbeat is
        younger than ``stale_seconds``; a stale lease (a killed process) is taken over. One conditional
        UPDATE: two processes asking at once cannot both get it (SQLite and PostgreSQL alike)."""
        now = utc_now()
        stale_before = _seconds_before(now, stale_seconds)
        with self.db.writing() as session:
            taken = session.execute(
                update(SweepRow)
                .where(
                    SweepRow.id == sweep_id,
                    or_(
                        SweepRow.lease_owner.is_(None),
                        SweepRow.lease_owner == owner,
                        SweepRow.lease_heartbeat.is_(None),
                        SweepRow.lease_heartbeat < stale_before,
                    ),
                )
                .values(lease_owner=owner, lease_heartbeat=now)
            ).rowcount
            if taken != 1:
                row = session.get(SweepRow, sweep_id)
                if row is None:
                    raise StudioError("That sweep is not in this database.")
                if process_gone(row.lease_owner):  # its runner was on this machine and is gone: take over now
                    taken = session.execute(
                        update(SweepRow)
                        .where(SweepRow.id == sweep_id, SweepRow.lease_owner == row.lease_owner)
                        .values(lease_owner=owner, lease_heartbeat=now)
                    ).rowcount
                    if taken == 1:
                        return
                seen = _age_seconds(row.lease_heartbeat, now)
                raise StudioError(
                    f"Sweep {row.name} is running in another process ({_owner_words(row.lease_owner)}, "
                    f"last heard {seen:.0f} s ago): wait for it or stop it there; a runner silent for "
                    f"{stale_seconds:.0f} s is taken over."
                )

    def heartbeat(self, sweep_id: str, owner: str) -> bool:
        """Say ``owner`` still runs the sweep; False when the lease is no longer theirs (taken over)."""
        with self.db.writing() as session:
            return (
                session.execute(
                    update(SweepRow)
                    .where(SweepRow.id == sweep_id, SweepRow.lease_owner == owner)
                    .values(lease_heartbeat=utc_now())
                ).rowcount
                == 1
            )

    def release(self, sweep_id: str, owner: str) -> None:
        """``owner`` stops running the sweep (a lease that is no longer theirs is left alone)."""
        with self.db.writing() as session:
            session.execute(
                update(SweepRow)
                .where(SweepRow.id == sweep_id, SweepRow.lease_owner == owner)
                .values(lease_owner=None, lease_heartbeat=None)
            )

    def runner(self, sweep_id: str, stale_seconds: float = 0) -> str | None:
        """Who runs the sweep now (their lease's owner), or None; with ``stale_seconds``, a lease not
        heard from for that long counts as nobody."""
        with self.db.reading() as session:
            row = session.get(SweepRow, sweep_id)
            if row is None or row.lease_owner is None:
                return None
            if stale_seconds and _age_seconds(row.lease_heartbeat, utc_now()) > stale_seconds:
                return None
            return row.lease_owner

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
        to skip); the number of episodes removed and those cells. Call it holding the sweep's lease
        (:class:`SweepLease`): removing another runner's live episodes is what the lease prevents."""
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


#: How often a runner says it is alive, and after how long without a word its lease is taken over.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0


def lease_owner() -> str:
    """A new runner's name: this host and process, and a random part (two runs in one process differ)."""
    return f"{process_name()} run {new_id()[:8]}"


def _owner_words(owner: str | None) -> str:
    return (owner or "unknown").rsplit(" run ", 1)[0]


def _seconds_before(now: str, seconds: float) -> str:
    """The ISO time ``seconds`` before ``now`` (the store's times sort as text)."""
    moment = datetime.fromisoformat(now) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds")


def _age_seconds(then: str | None, now: str) -> float:
    if then is None:
        return float("inf")
    return (datetime.fromisoformat(now) - datetime.fromisoformat(then)).total_seconds()


class SweepLease:
    """This process's hold on one sweep while it runs its cells: taken (or refused) on :meth:`acquire`,
    kept alive by a heartbeat thread, given back on :meth:`release`. When the heartbeat finds the lease
    taken over (this process was silent past :data:`STALE_SECONDS`), it sets :attr:`lost` and calls
    ``on_lost``: the run must stop, so that no cell is run twice."""

    def __init__(
        self,
        sweeps: SweepStore,
        sweep_id: str | None = None,
        stale_seconds: float = STALE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.sweeps, self.sweep_id = sweeps, sweep_id
        self.owner = lease_owner()
        self.stale_seconds, self.heartbeat_seconds = stale_seconds, heartbeat_seconds
        self.on_lost = on_lost
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, sweep_id: str | None = None) -> SweepLease:
        """Take the sweep (refused in one line while another runner is alive), then keep it alive."""
        self.sweep_id = sweep_id or self.sweep_id
        assert self.sweep_id is not None
        self.sweeps.acquire(self.sweep_id, self.owner, self.stale_seconds)
        return self.hold()

    def hold(self, sweep_id: str | None = None) -> SweepLease:
        """Start the heartbeat of a lease already held (a sweep created with this lease)."""
        self.sweep_id = sweep_id or self.sweep_id
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.sweep_id}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._done.wait(self.heartbeat_seconds):
            try:
                alive = self.sweeps.heartbeat(self.sweep_id, self.owner)  # type: ignore[arg-type]
            except StudioError:
                continue  # a busy or briefly unreachable database: try again at the next beat
            if not alive:
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return

    def release(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_seconds + 5)
        if self.sweep_id is not None and not self.lost.is_set():
            self.sweeps.release(self.sweep_id, self.owner)

    def __enter__(self) -> SweepLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
