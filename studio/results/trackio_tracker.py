"""trackio: a run in its local SQLite store (``--tracker-dir`` sets ``TRACKIO_DIR``; default
``~/.cache/huggingface/trackio``), shown by ``trackio show``."""

from __future__ import annotations

import os
from pathlib import Path

from studio.results.trackers import TrackedResults, flat_config, needs


def log(results: TrackedResults) -> str:
    if results.where:  # trackio reads its folder once, when it is first imported
        os.environ["TRACKIO_DIR"] = str(Path(results.where).expanduser().absolute())
    trackio = needs("trackio", "trackio")
    trackio.init(
        project=results.project,
        name=results.run_name,
        config=flat_config(results.config),
        embed=False,
        auto_log_cpu=False,
    )
    try:
        metrics = dict(results.metrics)
        for name, rows in results.tables.items():
            if rows:
                columns = list(rows[0])
                metrics[name] = trackio.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        trackio.log(metrics)
    finally:
        trackio.finish()
    return f"{trackio.utils.TRACKIO_DIR} (project {results.project}, run {results.run_name})"
