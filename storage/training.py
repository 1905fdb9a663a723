"""Training from the store: the rows a run trains on (exactly what ``export`` writes, split by episode
seed), and a run from those rows to a registered model, recorded in ``store.training``
(:mod:`storage.training_runs`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent_studio.storage.export import export_rows
from agent_studio.storage.export_data import AnnotatorSelection, ExportSummary, ImageWriter
from agent_studio.storage.orm import EpisodeRow, PairRow
from agent_studio.storage.store import Store
from studio.errors import StudioError
from studio.training.spec import TrainingData, TrainingSpec, annotators_of, held_out_seed


def _rows(
    store: Store, fmt: str, annotators: str, summary: ExportSummary | None = None, pairs: frozenset[str] | None = None
) -> Iterator[Any]:
    """The rows ``export --format fmt --annotators A`` writes (compact prompts, no images), of ``pairs`` only
    when given."""
    selection = AnnotatorSelection(annotators)
    summary = summary or ExportSummary(format=fmt, out="")
    summary.annotators, summary.selection, summary.pairs = selection.describe(), selection, pairs
    yield from export_rows(store, fmt, summary, ImageWriter(Path("training.jsonl"), images="none", prompt="compact"))


def _export(
    store: Store, fmt: str, annotators: str, pairs: frozenset[str] | None
) -> tuple[list[dict[str, Any]], list[bytes], ExportSummary]:
    """The records and lines of :func:`_rows`, and the summary (what it left out)."""
    summary = ExportSummary(format=fmt, out="")
    records, lines = [], []
    for row in _rows(store, fmt, annotators, summary, pairs):
        lines.append(row.line())
        records.append(row.record())
    summary.records = len(records)
    return records, lines, summary


def training_data(store: Store, spec: TrainingSpec) -> TrainingData:
    """The rows ``spec`` trains on: ``export --format KIND --annotators SOURCES`` (compact prompts), each
    held out or not by its episode's seed (:func:`studio.training.spec.held_out_seed`)."""
    pairs = sweep_pairs(store, spec.sweep) if spec.sweep else None
    records, lines, summary = _export(store, spec.export_format, spec.annotators, pairs)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line + b"\n")
    by_source = {}
    for source in spec.sources:
        alone = annotators_of([source])
        by_source[source] = (
            len(records)
            if alone == spec.annotators
            else sum(1 for _ in _rows(store, spec.export_format, alone, None, pairs))
        )
    seeds = _row_seeds(store, records)
    train, held, held_seeds = [], [], set()
    for record, seed in zip(records, seeds):
        if held_out_seed(seed, spec.held_out):
            held.append(record)
            held_seeds.add(seed)
        else:
            train.append(record)
    return TrainingData(
        train=train,
        held_out=held,
        rows=len(records),
        rows_by_source=by_source,
        data_hash=digest.hexdigest(),
        held_out_seeds=sorted(held_seeds),
        left_out=dict(summary.left_out),
    )


def sweep_pairs(store: Store, sweep: str) -> frozenset[str]:
    """The pairs whose episodes (both sides) belong to ``sweep``: what a run limited to it trains on."""
    record = store.sweeps.get(sweep)  # one line for a sweep the store lacks
    with store.db.reading() as session:
        mine = select(EpisodeRow.id).where(EpisodeRow.sweep_id == record.id)
        query = select(PairRow.id).where(PairRow.left_episode_id.in_(mine), PairRow.right_episode_id.in_(mine))
        return frozenset(session.scalars(query))


def _row_seeds(store: Store, records: list[dict[str, Any]]) -> list[int | None]:
    """The seed of the episode each export row came from (a pair: its left side's episode)."""
    pair_ids, episode_ids = set(), set()
    for record in records:
        source = str(record.get("source") or "")
        if "pair_id" in record:
            pair_ids.add(record["pair_id"])
        elif source.startswith("pair:"):
            pair_ids.add(source[5:])
        elif source.startswith("step:"):
            episode_ids.add(source.split(":")[1])
        elif "episode_id" in record:
            episode_ids.add(record["episode_id"])
    with store.db.reading() as session:
        pairs = {}
        ids = sorted(pair_ids)
        for start in range(0, len(ids), 500):
            query = select(PairRow.id, PairRow.left_episode_id).where(PairRow.id.in_(ids[start : start + 500]))
            pairs.update(dict(session.execute(query).all()))
        episode_ids |= set(pairs.values())
        seeds = {}
        ids = sorted(episode_ids)
        for start in range(0, len(ids), 500):
            query = select(EpisodeRow.id, EpisodeRow.seed).where(EpisodeRow.id.in_(ids[start : start + 500]))
            seeds.update(dict(session.execute(query).all()))

    def seed_of(record: dict[str, Any]) -> int | None:
        source = str(record.get("source") or "")
        if "pair_id" in record or source.startswith("pair:"):
            return seeds.get(pairs.get(record.get("pair_id") or source[5:]))
        if source.startswith("step:"):
            return seeds.get(source.split(":")[1])
        return seeds.get(record.get("episode_id"))

    return [seed_of(record) for record in records]


def run_training(
    store: Store,
    spec: TrainingSpec,
    *,
    progress: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
    models: Any = None,
) -> Any:
    """Read the rows, record the run, train, and record how it ended: the
    :class:`~studio.training.trainer.TrainingOutcome`. A run that cannot start (no rows, a taken name)
    is refused before anything is stored."""
    from studio.training.registry import TrainedModels
    from studio.training.trainer import TrainingStopped, train

    models = models or TrainedModels()
    if spec.name in models.names():
        raise StudioError(f"A trained model named {spec.name!r} exists already: choose another name.")
    data = training_data(store, spec)
    if not data.train:
        raise StudioError(
            f"No {spec.export_format} rows to train on from {', '.join(spec.sources)} ({data.rows} rows, "
            f"{len(data.held_out)} held out): judge some pairs, or make them from Monte Carlo values "
            "(values, then pairs --from values)."
        )
    run_id = store.training.start(spec, data)
    try:
        outcome = train(spec, data, models=models, progress=progress, should_stop=should_stop, device=device)
    except TrainingStopped as exc:
        store.training.finish(run_id, "stopped", error=str(exc))
        raise
    except BaseException as exc:
        store.training.finish(run_id, "failed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        raise
    store.training.finish(run_id, "done", record=outcome.record)
    return outcome
