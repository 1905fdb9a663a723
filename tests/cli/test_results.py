"""``results``: a sweep's metrics and a campaign's statistics to CSV and Parquet (read back with pandas,
checked against the stored episodes), and to MLflow, W&B (offline) and trackio (read back from each
one's local store)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from agent_studio.cli.main import main
from agent_studio.storage import open_store
from tests.support.store_helpers import run_react

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("results") / "studio.db"
    assert (
        main(
            [
                "sweep",
                "--models",
                "expert,random",
                "--envs",
                "gridworld",
                "--seeds",
                "0-4",
                "--name",
                "s1",
                "--db",
                str(db),
            ]
        )
        == 0
    )
    return db


def _expected_rates(db: Path) -> dict[str, float]:
    """Success per model, straight from the stored episodes."""
    with open_store(db) as store:
        record = store.sweeps.get("s1")
        episodes = store.sweeps.episodes_of(record.id)
        models = {cell.index: cell.model for cell in record.spec.cells()}
    by_model: dict[str, list[bool]] = {}
    for episode in episodes:
        by_model.setdefault(models[episode.sweep_cell], []).append(bool(episode.success))
    return {model: sum(v) / len(v) for model, v in by_model.items()}


def _cli(*args: str, env: dict[str, str] | None = None) -> dict:
    import os

    done = subprocess.run(
        [sys.executable, "-m", "agent_studio", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # stdout is the command's one JSON line


def test_sweep_tables_load_in_pandas_and_match_the_stored_episodes(swept: Path, tmp_path: Path, capsys) -> None:
    csv_file, parquet_file = tmp_path / "episodes.csv", tmp_path / "arms.parquet"
    assert main(["results", "--sweep", "s1", "--out", str(csv_file), "--studio-url", URL, "--db", str(swept)]) == 0
    assert main(["results", "--sweep", "s1", "--out", str(parquet_file), "--table", "arms", "--db", str(swept)]) == 0
    episodes, arms = pd.read_csv(csv_file), pd.read_parquet(parquet_file)
    assert len(episodes) == 10 and set(episodes["model"]) == {"expert", "random"}
    assert (episodes["link"] == URL + "/?open=" + episodes["episode_id"]).all()
    expected = _expected_rates(swept)
    assert episodes.groupby("model")["success"].mean().to_dict() == pytest.approx(expected)
    assert dict(zip(arms["model"], arms["success_rate"])) == pytest.approx(expected)
    assert ((arms["success_low"] <= arms["success_rate"]) & (arms["success_rate"] <= arms["success_high"])).all()


def test_refusals_are_one_line_and_write_nothing(swept: Path, tmp_path: Path, capsys) -> None:
    for args, said in [
        (["--out", str(tmp_path / "x.txt")], "a .csv or .parquet file"),
        (["--out", str(tmp_path / "x.csv"), "--studio-url", "javascript:alert(1)"], "http:// or https://"),
        (["--tracker", "nope"], "Unknown tracker"),
        ([], "Say where the results go"),
    ]:
        assert main(["results", "--sweep", "s1", *args, "--db", str(swept)]) == 2
        assert said in capsys.readouterr().err
    assert main(["results", "--sweep", "nope", "--out", str(tmp_path / "y.csv"), "--db", str(swept)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_campaign_statistics_to_csv_equal_the_store(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with open_store(db) as store:
        run_react(store, seed=0, steps=3)
        store.preferences.pairs_from_candidates()
        store.campaigns.create("c1", overlap=2, annotators=["ada", "bob"])
        for who, choice in (("ada", "left"), ("bob", "right")):
            for n, item in enumerate(store.campaigns.queue("c1", who, limit=100)):
                store.campaigns.judge("c1", who, item.pair_id, choice if n % 2 else "left", seconds=2.0)
        quality = store.campaigns.quality("c1")["annotators"]
    out = tmp_path / "c1.csv"
    assert main(["results", "--campaign", "c1", "--out", str(out), "--db", str(db)]) == 0
    table = pd.read_csv(out).set_index("annotator")
    for who in ("ada", "bob"):
        assert table.loc[who, "judged"] == quality[who]["judged"] == 9
        assert table.loc[who, "agreement_with_others"] == pytest.approx(quality[who]["agreement_with_others"])
        assert table.loc[who, "median_seconds"] == 2.0


def test_trackers_keep_the_results_in_their_local_stores(swept: Path, tmp_path: Path) -> None:
    expected = _expected_rates(swept)
    common = ["results", "--sweep", "s1", "--studio-url", URL, "--db", str(swept), "--tracker-dir"]
    # MLflow: an SQLite store; the run's metrics and the episodes table as an artifact.
    said = _cli(*common, str(tmp_path / "mlflow"), "--tracker", "mlflow")
    assert said["tracker"]["name"] == "mlflow"
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["agent-studio"], output_format="list")
    assert run.info.run_name == "s1"
    for model, rate in expected.items():
        assert run.data.metrics[f"success_rate/{model}/gridworld"] == pytest.approx(rate)
    table = json.loads((Path(run.info.artifact_uri.removeprefix("file://")) / "episodes.json").read_text())
    assert len(table["data"]) == 10 and all(row[-1].startswith(URL + "/?open=") for row in table["data"])
    # W&B offline: a run folder with the tables as JSON; nothing uploaded.
    said = _cli(*common, str(tmp_path / "wandb"), "--tracker", "wandb")
    (episodes,) = Path(said["tracker"]["where"]).glob("files/media/table/episodes_*.table.json")
    wandb_table = json.loads(episodes.read_text())
    assert len(wandb_table["data"]) == 10 and wandb_table["columns"][-1] == "link"
    # trackio: its SQLite store, the metrics and the table in one logged step.
    _cli(*common, str(tmp_path / "trackio"), "--tracker", "trackio")
    with sqlite3.connect(tmp_path / "trackio" / "agent-studio.db") as connection:
        ((run_name, logged),) = connection.execute("SELECT run_name, metrics FROM metrics").fetchall()
    logged = json.loads(logged)
    assert run_name == "s1" and len(logged["episodes"]["_value"]) == 10
    for model, rate in expected.items():
        assert logged[f"success_rate/{model}/gridworld"] == pytest.approx(rate)
