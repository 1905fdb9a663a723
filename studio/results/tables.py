"""Results as plain rows: one per episode of a sweep (with a link back to it in the studio), one per
arm and environment (the Compare tab's table), one per annotator of a campaign; written as CSV or Parquet."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from studio.errors import StudioError
from studio.evaluation.sweep import SweepSpec, sweep_results
from studio.trace import Episode

FORMATS = (".csv", ".parquet")


def episode_link(studio_url: str | None, episode_id: str) -> str:
    """Where the studio shows this episode (``/?open=ID``); empty without a studio address."""
    if not studio_url:
        return ""
    return f"{studio_url.rstrip('/')}/?open={quote(episode_id)}"


def check_studio_url(text: str | None) -> str | None:
    """An http(s) address of a studio, or None: links are written into files others open."""
    if not text:
        return None
    value = str(text).strip()
    if not value.startswith(("http://", "https://")) or any(c in value for c in "\"'<> \n"):
        raise StudioError(f"--studio-url must be an http:// or https:// address, got {value[:60]!r}.")
    return value


def sweep_episode_rows(
    name: str, spec: SweepSpec, episodes: Iterable[Episode], studio_url: str | None = None
) -> list[dict[str, Any]]:
    """One row per complete episode of the sweep: its cell (model with varied settings, environment,
    seed), outcome, length, and a link back to it."""
    cells = {cell.index: cell for cell in spec.cells()}
    rows = []
    for episode in episodes:
        cell = cells.get(episode.sweep_cell) if episode.sweep_cell is not None else None
        if cell is None or not episode.complete:
            continue
        rows.append(
            {
                "sweep": name,
                "cell": cell.index,
                "model": cell.label,
                "env": cell.env,
                "seed": cell.seed,
                "success": episode.success,
                "total_return": episode.total_return,
                "steps": episode.length,
                "invalid_steps": sum(not s.valid for s in episode.steps),
                "end_reason": episode.end_reason or "",
                "episode_id": episode.id,
                "link": episode_link(studio_url, episode.id),
            }
        )
    return sorted(rows, key=lambda row: row["cell"])


def sweep_arm_rows(name: str, spec: SweepSpec, episodes: Iterable[Episode]) -> list[dict[str, Any]]:
    """One row per arm and environment: the Compare tab's results (success with its Wilson interval,
    mean return and steps, invalid-action rate), flat (options as JSON text)."""
    results = sweep_results(spec, list(episodes))["results"]
    return [
        {"sweep": name, **{k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()}}
        for row in results
    ]


def campaign_rows(progress: dict[str, Any], quality: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per annotator: assigned, judged, agreement with the others, with adjudicated decisions,
    gold accuracy, median seconds per item."""
    people = sorted(set(progress["annotators"]) | set(quality["annotators"]))
    rows = []
    for who in people:
        done = progress["annotators"].get(who, {"assigned": 0, "judged": 0})
        q = quality["annotators"].get(who, {})
        rows.append(
            {
                "campaign": progress["campaign"],
                "annotator": who,
                "assigned": done["assigned"],
                "judged": done["judged"],
                "agreement_with_others": q.get("agreement_with_others"),
                "agreement_with_adjudicated": q.get("agreement_with_adjudicated"),
                "gold_accuracy": q.get("gold_accuracy"),
                "gold_items": q.get("gold_items", 0),
                "median_seconds": q.get("median_seconds"),
            }
        )
    return rows


def write_table(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """``rows`` as ``.csv`` (standard library) or ``.parquet`` (pyarrow); the columns are the first row's keys
    (every row has the same). A failed write leaves no half file under the name."""
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise StudioError(f"Write results to a .csv or .parquet file, not {target.name!r}.")
    if not rows:
        raise StudioError("No results to write (nothing complete yet).")
    columns = list(rows[0])
    partial = target.with_name(target.name + ".partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            with partial.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows({k: _cell(row.get(k)) for k in columns} for row in rows)
        else:
            _parquet(rows, columns, partial)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StudioError(f"Cannot write {target}: {exc.strerror or exc}.") from None
    return target


def _cell(value: Any) -> Any:
    """A spreadsheet-safe cell: text that starts like a formula is quoted, so a model's output named
    ``=HYPERLINK(...)`` stays text when the file is opened in a spreadsheet."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, float) and math.isnan(value):
        return ""
    return "" if value is None else value


def _parquet(rows: Sequence[dict[str, Any]], columns: list[str], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StudioError("Parquet needs pyarrow: pip install pyarrow (or write .csv).") from None
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    pq.write_table(table, path)
