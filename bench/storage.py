"""Store speed on a real SQLite file with 100k preference pairs.

Prints one JSON object:

- ``inserts_per_s``: pairs made and inserted per second by ``pairs_from_candidates`` (the
  ``pairs --from candidates`` command) over ~16.7k stored steps with 4 outputs each
  (target >= 5,000);
- ``queue_page_ms``: median time to fetch the next page (10 pairs, with their shared
  context) of an annotator's queue while half of the 100k pairs are judged by them, and
  for a new annotator (target <= 50);
- ``export_records_per_s``: ``dpo`` records written per second with every pair judged
  (target >= 20,000; the median of ``--repeats`` runs), and the same for ``kto``;
- ``step_writes_per_s``: steps written one transaction each by the runner's store sink
  (what keeps a crash from losing a step), for context;
- ``open_ms``: opening the finished database, which first checks it read-only (header,
  ``PRAGMA quick_check``, tables) so a damaged or foreign file is refused untouched, against
  ``open_ms_without_integrity_check`` (median of 5 each, side by side).

    python bench/storage.py [--pairs N] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from sqlalchemy import insert, select  # noqa: E402

from agent_studio.storage import open_store  # noqa: E402
from agent_studio.storage.export import export  # noqa: E402
from agent_studio.storage.orm import AnnotationRow, AnnotatorRow, PairRow  # noqa: E402
from studio.agents.react import ReActConfig, ReActPolicy  # noqa: E402
from studio.models.scripted import ScriptedBackend  # noqa: E402
from studio.episodes.runner import EpisodeRunner, RunnerConfig  # noqa: E402
from studio.trace import Episode, new_id  # noqa: E402

OUTPUTS = [
    "Thought: The mug should be in the cabinet; I will look there first.\nAction: go to cabinet 1",
    "Thought: I have not checked the countertop yet.\nAction: go to countertop 1",
    "Thought: Opening the fridge might reveal the mug.\nAction: open fridge 1",
    "Thought: Let me check what I am carrying.\nAction: inventory",
]
STEPS_PER_EPISODE = 10
PAIRS_PER_STEP = 6  # 4 outputs -> C(4, 2)


def template_episode(store) -> tuple[Episode, float]:
    """One real ReAct episode (scripted model, 4 outputs per step) written step by step."""
    policy = ReActPolicy(ScriptedBackend(OUTPUTS), ReActConfig(candidates=4))
    runner = EpisodeRunner(
        "household",
        policy,
        sinks=[store.episodes.sink()],
        config=RunnerConfig(max_steps=STEPS_PER_EPISODE, record_frames=False),
    )
    runner.reset(seed=0)
    started = time.perf_counter()
    episode = runner.run()
    return episode, episode.length / (time.perf_counter() - started)


def clone(template: Episode) -> Episode:
    copy = Episode.from_dict(template.to_dict())
    copy.id = new_id()
    for step in copy.steps:
        for candidate in step.candidates:
            candidate.id = new_id()
    return copy


def judge_all(store, fraction: float, annotator: str) -> None:
    """Bulk judgements (setup only: the annotate API is measured by the queue loop)."""
    with store.db.writing() as session:
        session.execute(insert(AnnotatorRow).values(name=annotator, created_at="2026-01-01T00:00:00+00:00"))
        annotator_id = session.scalar(select(AnnotatorRow.id).where(AnnotatorRow.name == annotator))
        pair_ids = session.scalars(select(PairRow.id).order_by(PairRow.id)).all()
        chosen = pair_ids[: int(len(pair_ids) * fraction)]
        rows = [
            {
                "pair_id": p,
                "annotator_id": annotator_id,
                "choice": "left" if i % 3 else "right",
                "rationale": "",
                "tags": [],
                "created_at": f"2026-01-01T00:00:{i % 60:02d}",
                "updated_at": f"2026-01-01T00:00:{i % 60:02d}.{i:06d}",
            }
            for i, p in enumerate(chosen)
        ]
        for start in range(0, len(rows), 5000):
            session.execute(insert(AnnotationRow), rows[start : start + 5000])


def queue_page_ms(store, annotator: str, pages: int) -> float:
    times = []
    for _ in range(pages):
        started = time.perf_counter()
        page = store.preferences.queue(annotator, limit=10)
        times.append((time.perf_counter() - started) * 1000)
        store.preferences.annotate(page[0].pair_id, annotator, "left")  # the next page moves on
    return statistics.median(times)


def open_times(path: Path, repeats: int = 5) -> tuple[float, float]:
    """Median ms to open the store (the read-only header + quick_check + schema check first) and
    to open it with the integrity check skipped, side by side (the file is in the page cache)."""
    from agent_studio.storage import store as store_module

    def timed() -> float:
        started = time.perf_counter()
        open_store(path, create=False).close()
        return 1000 * (time.perf_counter() - started)

    checked = [timed() for _ in range(repeats)]
    real = store_module.check_sqlite_file
    store_module.check_sqlite_file = lambda _path: None
    try:
        plain = [timed() for _ in range(repeats)]
    finally:
        store_module.check_sqlite_file = real
    return statistics.median(checked), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="exports timed per format (the median is printed)")
    parser.add_argument("--keep", default=None, help="write the database here instead of a temporary folder")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="agent-studio-bench-")
    path = Path(args.keep or Path(folder) / "bench.db")
    store = open_store(path)

    template, step_writes_per_s = template_episode(store)
    episodes = -(-args.pairs // (PAIRS_PER_STEP * template.length))
    for _ in range(episodes - 1):
        store.episodes.start(clone(template))

    started = time.perf_counter()
    made = store.preferences.pairs_from_candidates()
    insert_seconds = time.perf_counter() - started

    judge_all(store, 0.5, "half")
    queue_half = queue_page_ms(store, "half", pages=20)
    queue_new = queue_page_ms(store, "newcomer", pages=20)

    judge_all(store, 1.0, "everyone")
    results = {}
    for fmt in ("dpo", "kto"):
        rates = []
        for repeat in range(args.repeats):  # the median of a few runs: disk writeback makes single runs noisy
            started = time.perf_counter()
            summary = export(store, fmt, Path(folder) / f"{fmt}-{repeat}.jsonl")
            rates.append(summary.records / (time.perf_counter() - started))
            (Path(folder) / f"{fmt}-{repeat}.jsonl").unlink()
        results[fmt] = (summary.records, statistics.median(rates))
    store.close()
    open_ms, plain_ms = open_times(path)

    print(
        json.dumps(
            {
                "pairs": made.created,
                "episodes": episodes,
                "steps": episodes * template.length,
                "inserts_per_s": round(made.created / insert_seconds),
                "queue_page_ms": round(max(queue_half, queue_new), 2),
                "queue_page_ms_half_judged": round(queue_half, 2),
                "queue_page_ms_new_annotator": round(queue_new, 2),
                "export_records_per_s": round(results["dpo"][1]),
                "export_dpo_records": results["dpo"][0],
                "export_kto_records_per_s": round(results["kto"][1]),
                "step_writes_per_s": round(step_writes_per_s),
                "database_mb": round(path.stat().st_size / 2**20, 1),
                "open_ms": round(open_ms, 1),
                "open_ms_without_integrity_check": round(plain_ms, 1),
                "targets": {"inserts_per_s": ">= 5000", "queue_page_ms": "<= 50", "export_records_per_s": ">= 20000"},
            }
        )
    )


if __name__ == "__main__":
    main()
