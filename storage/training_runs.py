"""Training runs in the store (``store.training``): each run's spec, the data snapshot it read (row counts
per source, the rows' hash, the held-out seeds), its status and, when done, its record (loss curve,
held-out pair accuracy, time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from agent_studio.storage.db import Database
from agent_studio.storage.orm import TrainingRunRow
from studio.errors import StudioError
from studio.trace import new_id, utc_now
from studio.training.spec import TrainingData, TrainingSpec

#: A run's statuses: running until it ends done, stopped (nothing registered) or failed (with the reason).
STATUSES = ("running", "done", "stopped", "failed")


@dataclass(frozen=True)
class TrainingRun:
    """A stored training run."""

    id: str
    name: str
    kind: str
    base: str
    spec: dict[str, Any]
    status: str
    data: dict[str, Any] | None
    record: dict[str, Any] | None
    error: str | None
    started_at: str
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _run(row: TrainingRunRow) -> TrainingRun:
    return TrainingRun(
        row.id, row.name, row.kind, row.base, row.spec, row.status, row.data, row.record, row.error,
        row.started_at, row.finished_at,
    )  # fmt: skip


class TrainingStore:
    """Training runs (``store.training``)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def start(self, spec: TrainingSpec, data: TrainingData) -> str:
        """Record a run about to train; its id."""
        run_id = new_id()
        with self.db.writing() as session:
            session.add(
                TrainingRunRow(
                    id=run_id,
                    name=spec.name,
                    kind=spec.kind,
                    base=spec.base,
                    spec=spec.to_dict(),
                    status="running",
                    data=data.describe(),
                    started_at=utc_now(),
                )  # fmt: skip
            )
        return run_id

    def finish(self, run_id: str, status: str, record: dict[str, Any] | None = None, error: str | None = None) -> None:
        """How the run ended (``done`` with its record; ``stopped`` or ``failed`` with the reason)."""
        if status not in STATUSES[1:]:
            raise ValueError(f"not an end status: {status}")
        with self.db.writing() as session:
            row = session.get(TrainingRunRow, run_id)
            if row is None:
                raise StudioError(f"No training run {run_id!r}.")
            row.status, row.record, row.error, row.finished_at = status, record, error, utc_now()

    def runs(self, name: str | None = None) -> list[TrainingRun]:
        """Every run (of ``name``), newest first."""
        with self.db.reading() as session:
            query = select(TrainingRunRow).order_by(TrainingRunRow.started_at.desc(), TrainingRunRow.id)
            if name is not None:
                query = query.where(TrainingRunRow.name == name)
            return [_run(row) for row in session.scalars(query)]

    def latest_done(self, name: str) -> TrainingRun | None:
        """The run that registered ``name`` (None when no run of that name finished)."""
        return next((run for run in self.runs(name) if run.status == "done"), None)
