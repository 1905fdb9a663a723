"""MLflow: a run in a local store (``--tracker-dir``, default ``./mlruns``: an SQLite database ``mlflow.db``
and an ``artifacts`` folder; ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` shows it), its
parameters, summary metrics, and each table as a JSON artifact the MLflow UI shows as a table.
MLflow 3 keeps its plain-folder store in maintenance mode, so the store is its SQLite one."""

from __future__ import annotations

from pathlib import Path

from studio.results.trackers import TrackedResults, flat_config, needs


def log(results: TrackedResults) -> str:
    mlflow = needs("mlflow", "mlflow")
    folder = Path(results.where or "mlruns").expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(results.project) is None:
        mlflow.create_experiment(results.project, artifact_location=(folder / "artifacts").as_uri())
    mlflow.set_experiment(results.project)
    with mlflow.start_run(run_name=results.run_name) as run:
        mlflow.log_params(flat_config(results.config))
        if results.metrics:
            mlflow.log_metrics(results.metrics)
        for name, rows in results.tables.items():
            if rows:
                mlflow.log_table({key: [row.get(key) for row in rows] for key in rows[0]}, artifact_file=f"{name}.json")
        return f"{folder} (experiment {results.project}, run {run.info.run_id})"
