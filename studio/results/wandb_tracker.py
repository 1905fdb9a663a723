"""Weights & Biases in offline mode: a run folder under ``--tracker-dir`` (default ``./wandb``) that
``wandb sync`` uploads later; nothing leaves this machine."""

from __future__ import annotations

import os
from pathlib import Path

from studio.results.trackers import TrackedResults, flat_config, needs


def log(results: TrackedResults) -> str:
    os.environ.setdefault("WANDB_SILENT", "true")
    wandb = needs("wandb", "wandb")
    folder = Path(results.where or ".").expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=results.project, name=results.run_name, config=flat_config(results.config), dir=str(folder),
        mode="offline", reinit="create_new",
    )  # fmt: skip
    try:
        run.log(dict(results.metrics))
        for name, rows in results.tables.items():
            if rows:
                columns = list(rows[0])
                run.log({name: wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
        where = run.dir
    finally:
        run.finish()
    return str(Path(where).parent)
