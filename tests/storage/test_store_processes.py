"""Several processes on one SQLite file at once, and processes killed mid-write (SIGKILL)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent_studio.storage import open_store
from tests.support.store_helpers import new_store, run_react

ROOT = Path(__file__).resolve().parents[2]

ANNOTATE = """
import sys, time
from agent_studio.storage import open_store
store = open_store(sys.argv[1])
name, pair_ids, start = sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # every worker starts writing at the same moment
for pair_id in pair_ids:
    store.preferences.annotate(pair_id, name, "left", rationale=name, as_shown=False)
    store.preferences.annotate(pair_id, "shared", "right", rationale=name, as_shown=False)  # everyone judges as 'shared' too
print("done", flush=True)
"""


def test_processes_annotating_at_once_lose_nothing_and_duplicate_nothing(store_url: str) -> None:
    store = open_store(store_url)
    for seed in range(3):
        run_react(store, seed=seed, steps=4)
    store.preferences.pairs_from_candidates()
    pair_ids = [p.id for p in store.preferences.pairs()]
    assert len(pair_ids) == 36
    workers = 4
    start = time.time() + 4.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ANNOTATE, store_url, f"worker{n}", ",".join(pair_ids), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * workers, [err[-2000:] for _, err in outputs]
    records = store.preferences.annotations()
    per_annotator = {name: [r for r in records if r.annotator == name] for name in {r.annotator for r in records}}
    for n in range(workers):
        mine = per_annotator[f"worker{n}"]
        assert sorted(r.pair_id for r in mine) == sorted(pair_ids) and {r.choice for r in mine} == {"left"}
    shared = per_annotator["shared"]
    assert sorted(r.pair_id for r in shared) == sorted(pair_ids)  # one judgement per pair, however many wrote it
    assert len(records) == (workers + 1) * len(pair_ids)
    with store.db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM annotators WHERE name = 'shared'").scalar() == 1


WORK_UNTIL_KILLED = """
import sys
from agent_studio.storage import open_store
from studio.agents.scripted import make_policy
from studio.episodes.runner import EpisodeRunner, RunnerConfig
store = open_store(sys.argv[1])
pair_ids = sys.argv[2].split(",")
runner = EpisodeRunner("gym:FrozenLake-v1", make_policy("random"), sinks=[store.episodes.sink()], config=RunnerConfig(max_steps=100000, record_frames=True))
episode = runner.reset(seed=0)
print("episode", episode.id, flush=True)
n = 0
while True:
    step = runner.step() if not runner.episode.done else None
    if step is not None:
        print("step", step.index, flush=True)
    else:
        episode = runner.reset(seed=n)
        print("episode", episode.id, flush=True)
    choice = ("left", "right", "tie", "both_bad")[n % 4]
    store.preferences.annotate(pair_ids[n % len(pair_ids)], f"ann{n // len(pair_ids)}", choice)
    print("annotation", pair_ids[n % len(pair_ids)], f"ann{n // len(pair_ids)}", flush=True)
    n += 1
"""


def test_a_process_killed_mid_work_loses_no_committed_step_or_judgement(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    run_react(store, seed=0, steps=3)
    store.preferences.pairs_from_candidates()
    pair_ids = [p.id for p in store.preferences.pairs()]
    store.close()
    process = subprocess.Popen(
        [sys.executable, "-c", WORK_UNTIL_KILLED, str(tmp_path / "studio.db"), ",".join(pair_ids)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    committed: list[list[str]] = []
    deadline = time.monotonic() + 120
    while sum(line[0] == "annotation" for line in committed) < 60 and time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        committed.append(line.split())
    os.kill(process.pid, signal.SIGKILL)  # wherever it is: most likely inside a write
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with sqlite3.connect(tmp_path / "studio.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    reopened = open_store(tmp_path / "studio.db")
    judged = {(r.pair_id, r.annotator) for r in reopened.preferences.annotations()}
    assert {(pair, name) for kind, pair, name in (l for l in committed if l[0] == "annotation")} <= judged
    steps_seen: dict[str, int] = {}
    current = None
    for line in committed:
        if line[0] == "episode":
            current = line[1]
        elif line[0] == "step":
            steps_seen[current] = int(line[1]) + 1
    for episode_id, count in steps_seen.items():
        stored = reopened.episodes.get(episode_id)
        assert stored.length >= count  # every step it reported is there (maybe one more, killed before printing)
        assert [s.index for s in stored.steps] == list(range(stored.length))
