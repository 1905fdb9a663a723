"""Sweeps and Monte Carlo values on a real Ray cluster (two workers on loopback) store what this process
would: the same episodes cell for cell, the same values; a killed worker loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.errors import StudioError
from studio.evaluation.sweep import SweepSpec
from studio.executors import ExecutorOptions, make_executor
from studio.executors.sweeps import run_sweep_with
from studio.models.registry import ModelRegistry
from tests.conftest import ROOT
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.cluster


def _behaviour(store, sweep_id: str) -> dict[int, tuple]:
    """Per cell: what was done and how it ended (ids and timings differ between runs)."""
    return {
        e.sweep_cell: (e.env, e.seed, e.policy, [s.action for s in e.steps], e.success, e.end_reason)
        for e in store.sweeps.episodes_of(sweep_id)
    }


def _run(store, spec: SweepSpec, executor=None, **kwargs):
    record = store.sweeps.create(spec)
    registry = ModelRegistry()
    outcome = run_sweep_with(executor, spec, record.id, [store.episodes.sink()], registry.load, **kwargs)
    return record, outcome


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-policy") / "tiny"
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, seed=3).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def ray_executor(ray_cluster: str):
    executor = make_executor("ray", ExecutorOptions(address=ray_cluster, workers=2))
    yield executor
    executor.close()


def test_a_sweep_on_ray_stores_the_episodes_the_local_executor_stores(
    ray_executor, tiny_model_folder, tmp_path: Path
) -> None:
    spec = SweepSpec.build(
        ["expert", "random", tiny_model_folder],
        ["gridworld"],
        "0-2",
        {"max_steps": 3, "temperature": 0.0, "max_new_tokens": 24},
    )
    with open_store(str(tmp_path / "local.db")) as local, open_store(str(tmp_path / "ray.db")) as remote:
        local_record, local_outcome = _run(local, spec)
        ray_record, ray_outcome = _run(remote, spec, ray_executor)
        assert ray_outcome.failed == [] and ray_outcome.completed == local_outcome.completed == spec.size
        expected = _behaviour(local, local_record.id)
        assert len(expected) == spec.size
        assert _behaviour(remote, ray_record.id) == expected
        with open_store(str(tmp_path / "threads.db")) as threads:  # the local executor runs the same tasks
            tasks_record, _ = _run(threads, spec, make_executor("local", ExecutorOptions(workers=2)))
            assert _behaviour(threads, tasks_record.id) == expected
        # the episodes came from the workers (other processes), and each is stored once
        episodes = remote.sweeps.episodes_of(ray_record.id)
        assert sorted(e.sweep_cell for e in episodes) == list(range(spec.size))
        assert remote.sweeps.complete_cells(ray_record.id) == set(range(spec.size))


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(ray_executor, postgres, tmp_path: Path) -> None:
    """A worker is killed while it runs a cell (a model that takes about a second a step): Ray restarts it
    and runs the cell again. The driver's store is PostgreSQL (the shared store of a cluster's runs)."""
    slow = f"scripted:{ROOT / 'tests' / 'data' / 'slow_model.json'}"
    spec = SweepSpec.build([slow], ["gridworld"], "0-2", {"max_steps": 2})
    pids = ray_executor.ray.get([actor.pid.remote() for actor in ray_executor.workers()])
    killed: list[int] = []

    def kill_one_worker() -> None:
        time.sleep(1.0)
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])

    threading.Thread(target=kill_one_worker, daemon=True).start()
    with open_store(postgres.new_database()) as store:
        record, outcome = _run(store, spec, ray_executor)
        assert killed, "the worker was not killed"
        assert outcome.failed == [], outcome.failed
        episodes = store.sweeps.episodes_of(record.id)
        assert sorted(e.sweep_cell for e in episodes) == list(range(spec.size)), "a cell lost or stored twice"
        with open_store(str(tmp_path / "local.db")) as local:
            local_record, _ = _run(local, spec)
            assert _behaviour(store, record.id) == _behaviour(local, local_record.id)


def test_failed_cells_name_the_worker_and_the_others_are_stored(ray_executor, tmp_path: Path) -> None:
    spec = SweepSpec.build(["expert", str(tmp_path / "no-such-model")], ["gridworld"], "0-1", {"max_steps": 3})
    with open_store(str(tmp_path / "ray.db")) as store:
        record, outcome = _run(store, spec, ray_executor)
        assert outcome.completed == 2
        assert len(outcome.failed) == 2
        assert all("seed" in line and " pid " in line for line in outcome.failed), outcome.failed
        assert {e.sweep_cell for e in store.sweeps.episodes_of(record.id)} == {0, 1}


def test_stop_cancels_running_cells_and_a_resume_runs_only_what_is_missing(ray_executor, tmp_path: Path) -> None:
    spec = SweepSpec.build(["random"], ["gridworld"], "0-7", {"max_steps": 40})
    stop = threading.Event()
    seen: list[int] = []

    def after_two(cell, result) -> None:
        seen.append(cell.index)
        if len(seen) == 2:
            stop.set()

    with open_store(str(tmp_path / "ray.db")) as store:
        record, outcome = _run(store, spec, ray_executor, stop=stop, on_done=after_two)
        assert outcome.stopped
        done = store.sweeps.complete_cells(record.id)
        assert 2 <= len(done) < spec.size
        removed, done_again = store.sweeps.resume(record.id)
        assert removed == 0 and done_again == done  # nothing half-stored
        registry = ModelRegistry()
        rest = run_sweep_with(ray_executor, spec, record.id, [store.episodes.sink()], registry.load, skip=done)
        assert rest.completed == spec.size - len(done)
        assert sorted(e.sweep_cell for e in store.sweeps.episodes_of(record.id)) == list(range(spec.size))


def test_unknown_tasks_and_addresses_are_one_line(ray_executor) -> None:
    failures: list = []
    ray_executor.run_tasks("rm -rf", [{}], stop=threading.Event(), on_done=lambda i, r: failures.append(r))
    assert isinstance(failures[0], StudioError) and "Unknown task" in str(failures[0])
    with pytest.raises(StudioError, match="Unknown executor"):
        make_executor("dask")
    with pytest.raises(StudioError, match="Workers must be"):
        ExecutorOptions(workers=0)


def test_mc_values_through_ray_equal_the_local_values(ray_executor) -> None:
    from studio.agents.scripted import make_policy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig
    from studio.executors.values import step_values_with

    runner = EpisodeRunner("gridworld", make_policy("random", seed=4), config=RunnerConfig(max_steps=5))
    episode = runner.reset(seed=2)
    for _ in runner.steps():
        pass
    items = [(episode, index) for index in range(episode.length)]
    options = {"rollout_policy": "random", "rollouts": 3, "horizon": 6, "seed": 7, "discount": 0.9}
    found: dict[str, dict] = {"here": {}, "local": {}, "ray": {}}
    local = make_executor("local", ExecutorOptions(workers=2))  # the same tasks, in this process's threads
    for where, executor in (("here", None), ("local", local), ("ray", ray_executor)):

        def keep(_episode, index, values, where=where) -> None:
            assert not isinstance(values, StudioError), values
            found[where][index] = [(v.output, v.q, v.returns, v.successes, v.lengths, v.seeds) for v in values]

        step_values_with(executor, items, options, keep)
    assert set(found["here"]) == set(range(episode.length))
    assert found["ray"] == found["local"] == found["here"]


def test_the_cli_runs_a_sweep_on_the_cluster_and_refuses_an_absent_one_before_storing(
    ray_cluster, tmp_path: Path
) -> None:
    import subprocess
    import sys

    db = tmp_path / "cli.db"
    base = [
        sys.executable,
        "-m",
        "agent_studio",
        "sweep",
        "--models",
        "expert",
        "--envs",
        "gridworld",
        "--seeds",
        "0-2",
    ]
    done = subprocess.run(
        [*base, "--executor", "ray", "--ray-address", ray_cluster, "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "running on Ray cluster" in done.stderr
    with open_store(str(db)) as store:
        (record,) = store.sweeps.list()
        assert store.sweeps.complete_cells(record.id) == {0, 1, 2}
    absent = tmp_path / "absent.db"
    refused = subprocess.run(
        [*base, "--executor", "ray", "--ray-address", "127.0.0.1:9", "--db", str(absent)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: Cannot reach a Ray cluster at 127.0.0.1:9")
    if absent.exists():
        with open_store(str(absent)) as store:
            assert store.sweeps.list() == []


def test_a_worker_that_dies_past_its_restarts_fails_its_cells_in_one_line_each(ray_cluster, monkeypatch) -> None:
    """With no restarts left, the cell the worker was running fails naming the death, and the cells still
    queued fail saying no worker is left (rather than waiting for ever)."""
    import studio.executors.ray_cluster as ray_cluster_module

    monkeypatch.setattr(ray_cluster_module, "RESTARTS", 0)
    monkeypatch.setattr(ray_cluster_module, "TASK_RETRIES", 0)
    executor = make_executor("ray", ExecutorOptions(address=ray_cluster, workers=1))
    try:
        (pid,) = executor.ray.get([actor.pid.remote() for actor in executor.workers()])
        slow = f"scripted:{ROOT / 'tests' / 'data' / 'slow_model.json'}"
        spec = SweepSpec.build([slow], ["gridworld"], "0-2", {"max_steps": 3})
        payloads = [{"spec": spec.to_dict(), "sweep_id": "a" * 32, "cell": index} for index in range(3)]
        outcomes: dict[int, object] = {}
        threading.Timer(1.0, lambda: os.kill(pid, signal.SIGKILL)).start()
        executor.run_tasks("sweep-cell", payloads, stop=threading.Event(), on_done=outcomes.__setitem__)
    finally:
        executor.close()
    assert sorted(outcomes) == [0, 1, 2]
    assert all(isinstance(outcome, StudioError) for outcome in outcomes.values())
    assert "the worker died" in str(outcomes[0])
    assert all("no worker is left" in str(outcomes[i]) for i in (1, 2))
