"""One runner per sweep (a lease in the store, on SQLite and PostgreSQL), web-started work within the
operator's budgets, and the server's job queue: a concurrency limit, progress with an ETA, cancel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent_studio.components.compare_panel import SweepJobs
from agent_studio.storage import open_store
from agent_studio.storage.orm import SweepRow
from agent_studio.storage.sweeps import SweepLease
from studio.errors import StudioError
from studio.jobs import JobCancelled, JobQueue, WebLimits
from studio.evaluation.sweep import SweepSpec

ROOT = Path(__file__).resolve().parents[2]


def _spec(seeds: str = "0-3", **settings) -> SweepSpec:
    return SweepSpec.build(["expert", "random"], ["gridworld"], seeds, {"max_steps": 20, **settings})


def _set_lease(store, sweep_id: str, owner: str, heartbeat: str) -> None:
    with store.db.writing() as session:
        row = session.get(SweepRow, sweep_id)
        row.lease_owner, row.lease_heartbeat = owner, heartbeat


def test_a_lease_refuses_a_second_runner_and_a_stale_one_is_taken_over(store) -> None:
    record = store.sweeps.create(_spec(), "leased")
    first = SweepLease(store.sweeps, heartbeat_seconds=0.05).acquire(record.id)
    second = SweepLease(store.sweeps)
    with pytest.raises(StudioError, match=r"^Sweep leased is running in another process \(") as refused:
        second.acquire(record.id)
    assert "\n" not in str(refused.value) and store.sweeps.runner(record.id) == first.owner
    # Another machine's runner that went silent past the limit: taken over, and the old one learns it lost.
    _set_lease(store, record.id, "elsewhere pid 1 run abcd1234", "2026-01-01T00:00:00.000+00:00")
    second.acquire(record.id)
    assert store.sweeps.runner(record.id) == second.owner
    assert first.lost.wait(5) and store.sweeps.heartbeat(record.id, first.owner) is False
    first.release()  # a lease that is no longer its own is left alone
    assert store.sweeps.runner(record.id) == second.owner
    second.release()
    assert store.sweeps.runner(record.id) is None
    # A fresh heartbeat from another machine is respected.
    _set_lease(store, record.id, "elsewhere pid 1 run abcd1234", time_now())
    with pytest.raises(StudioError, match="running in another process \\(elsewhere pid 1, last heard"):
        SweepLease(store.sweeps).acquire(record.id)


def time_now() -> str:
    from studio.trace import utc_now

    return utc_now()


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "app.py", *args, "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(300)
def test_a_resume_while_the_sweep_runs_elsewhere_is_refused_and_nothing_runs_twice(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    args = ["sweep", "--models", "random", "--envs", "gridworld,household", "--seeds", "0-59", "--max-steps", "100"]
    process = subprocess.Popen(
        [sys.executable, "app.py", *args, "--name", "busy", "--parallel", "1", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout.readline()  # its first episode is stored: it runs
        for _ in range(2):
            resumed = _cli("sweep", "--resume", "busy", db=db)
            assert resumed.returncode == 2, resumed.stderr
            assert resumed.stderr.startswith("error: Sweep busy is running in another process (")
            assert resumed.stderr.count("\n") == 1
        with open_store(db) as store:  # the web's Resume is refused the same way, and deletes nothing
            record = store.sweeps.get("busy")
            before = store.episodes.count_episodes()
            with pytest.raises(StudioError, match="running in another process"):
                SweepJobs(store, registry=None, access=None).start(record)
            assert store.episodes.count_episodes() >= before
        process.wait(timeout=240)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    with open_store(db) as store:
        record = store.sweeps.get("busy")
        cells = Counter(row.sweep_cell for row in store.sweeps.episodes_of(record.id))
        assert cells == Counter(range(120)) and store.episodes.count_episodes() == 120
        assert store.sweeps.runner(record.id) is None  # the finished run gave its lease back


def _wait(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_web_sweeps_stay_within_the_budget_and_a_refused_start_stores_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        small = SweepJobs(store, registry=None, access=None, limits=WebLimits(max_steps=100))
        with pytest.raises(StudioError, match=r"^This sweep of 8 episodes may take up to 160 environment steps"):
            small.start_new(_spec(), "too-big")
        starved = SweepJobs(store, registry=None, access=None, limits=WebLimits(reserve_bytes=1 << 62))
        with pytest.raises(StudioError, match="GB free"):
            starved.start_new(_spec(), "no-room")
        assert store.sweeps.list() == []
        jobs = SweepJobs(store, registry=None, access=None)
        record = jobs.start_new(_spec("0-199", max_steps=200), "long")
        with pytest.raises(StudioError, match="A sweep is already running here"):
            jobs.start_new(_spec(), "second")
        assert [r.name for r in store.sweeps.list()] == ["long"]  # the refused one left nothing
        assert jobs.stop(record.id)
        _wait(lambda: not jobs.get(record.id).snapshot().running, 60)
        assert store.sweeps.runner(record.id) is None


def test_the_queue_runs_at_most_its_limit_and_cancels_queued_and_running_jobs() -> None:
    queue = JobQueue(concurrency=1)
    release = threading.Event()
    seen: list[str] = []

    def first() -> None:
        with queue.run("values", "first") as job:
            job.progress(1, 4, "a quarter")
            seen.append("first ran")
            release.wait(10)

    def second() -> None:
        try:
            with queue.run("attention", "second"):
                seen.append("second ran")
        except JobCancelled:
            seen.append("second cancelled while queued")

    a = threading.Thread(target=first)
    a.start()
    _wait(lambda: "first ran" in seen)
    b = threading.Thread(target=second)
    b.start()
    _wait(lambda: [j.state for j in queue.jobs()] == ["running", "queued"])
    running, queued = queue.jobs()
    assert (running.title, running.fraction, queued.title) == ("first", 0.25, "second")
    time.sleep(0.2)
    assert queue.jobs()[0].eta_s == pytest.approx(3 * queue.jobs()[0].running_s, rel=0.2)  # 1/4 done: 3x left
    assert queue.cancel(queued.id) and not queue.cancel("no-such-job")
    b.join(5)
    assert seen == ["first ran", "second cancelled while queued"]
    release.set()
    a.join(5)
    assert [(j.title, j.state) for j in queue.jobs()] == [("first", "done"), ("second", "cancelled")]  # newest first

    stop = threading.Event()
    with pytest.raises(StudioError, match="stopped early"):
        with queue.run("sweep", "cancelled while running", cancel=stop) as job:
            assert queue.cancel(job.id) and stop.is_set()  # the job's flag is the work's own Stop
            raise StudioError("stopped early")
    assert queue.jobs()[0].state == "cancelled"


def test_six_value_estimates_at_once_run_two_at_a_time(tmp_path: Path) -> None:
    """The Values view's estimates go through the queue: never more than its limit at once."""
    from studio.models.registry import ModelRegistry
    from studio.session import EpisodeSettings, StudioSession

    queue = JobQueue(concurrency=2)
    peak = []
    sessions = []
    for seed in range(6):
        session = StudioSession(ModelRegistry(), settings=EpisodeSettings(policy="expert"))
        session.reset(EpisodeSettings(env="gridworld", seed=seed, policy="expert"))
        session.step()
        sessions.append(session)

    def estimate(session: StudioSession) -> None:
        with queue.run("values", "estimate", cancel=session.values_stop):
            peak.append(sum(j.state == "running" for j in queue.jobs()))
            session.estimate_values(0, "expert", 8, 0)

    threads = [threading.Thread(target=estimate, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert max(peak) <= 2 and len(peak) == 6
    assert [j.state for j in queue.jobs()] == ["done"] * 6


def test_a_value_estimate_over_the_budget_is_refused_before_it_runs() -> None:
    from studio.models.registry import ModelRegistry
    from studio.session import EpisodeSettings, StudioSession

    session = StudioSession(ModelRegistry(), settings=EpisodeSettings(policy="expert"))
    session.reset(EpisodeSettings(env="gridworld", seed=0, policy="expert", max_steps=30))
    session.step()
    # One output, 64 rollouts, each to the episode's step limit (30) from step 0: 1,920 steps.
    assert session.value_steps(0, 64, 0) == 64 * 30
    with pytest.raises(StudioError, match="may take up to 1,920 environment steps; this server allows 1,000"):
        WebLimits(max_steps=1_000).check_steps(session.value_steps(0, 64, 0), "This estimate")
    with pytest.raises(StudioError, match="Rollouts must be"):
        session.value_steps(0, 0, 0)


def test_serve_takes_the_budget_flags() -> None:
    from agent_studio.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--max-web-steps", "5000", "--web-jobs", "3"])
    assert (args.max_web_steps, args.web_jobs) == (5000, 3)
    refused = subprocess.run(
        [sys.executable, "app.py", "serve", "--web-jobs", "0"], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "positive integer" in refused.stderr


def test_downloads_live_in_a_folder_of_the_server_cleaned_by_age_on_start_and_at_exit(tmp_path: Path) -> None:
    from agent_studio.components.downloads import DownloadFolder

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left_behind = tmp_path / f"{gone.stdout.strip()}-abc123"  # a folder of a server that is no longer running
    left_behind.mkdir()
    (left_behind / "old.html").write_text("x")
    folder = DownloadFolder(parent=tmp_path, max_age_s=60)
    assert not left_behind.exists() and folder.root.parent == tmp_path
    first = folder.new_path("../../report.html")  # only the name is used: it stays inside the folder
    first.write_text("report")
    assert first.parent.parent == folder.root and first.name == "report.html"
    old = time.time() - 120
    os.utime(first.parent, (old, old))
    second = folder.new_path("video.mp4")  # making a new one removes those past the age limit
    assert not first.exists() and second.parent.exists()
    other = DownloadFolder(parent=tmp_path)  # another live server's folder is left alone
    assert folder.root.exists() and other.root.exists()
    folder.close()
    assert not folder.root.exists() and other.root.exists()
    other.close()


def test_the_jobs_table_escapes_what_jobs_say_and_shows_their_eta() -> None:
    from agent_studio.components.jobs_panel import summary, table_html

    queue = JobQueue(concurrency=1)
    release = threading.Event()

    def work() -> None:
        with queue.run("values", "values of <img src=x onerror=alert(1)>") as job:
            job.progress(1, 2, "1 of 2 <b>rollouts</b>")
            release.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    _wait(lambda: queue.jobs() and queue.jobs()[0].done == 1)
    time.sleep(0.1)
    html = table_html(queue.jobs())
    assert "<img" not in html and "&lt;img src=x" in html and "&lt;b&gt;rollouts" in html
    assert 'data-state="running"' in html and "width:50.0%" in html and summary(queue) == " · jobs: 1 running"
    release.set()
    thread.join(10)
    assert summary(queue) == "" and 'data-state="done"' in table_html(queue.jobs())
    # A job that ended well reads as whole, not as where its last report left it.
    finished = table_html(queue.jobs())
    assert queue.jobs()[0].fraction == 1.0 and "width:100.0%" in finished and "rollouts" not in finished
