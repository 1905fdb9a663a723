"""The store at scale: importing a large chat log, and the Episodes tab's queries at 100,000 episodes.

Prints one JSON object:

- ``import``: a chat JSONL of ``--log-mb`` MB (generated: tool-calling conversations) imported with
  ``agent-studio import --from chat`` in a child process: ``steps_per_s``, ``mb_per_s`` and the
  child's ``peak_rss_mb`` (streamed: bounded whatever the file's size);
- ``sqlite`` and ``postgresql`` (side by side, same data): ``--episodes`` episodes of ``--steps`` steps
  each, bulk-loaded; then the median of 5 of: ``page_ms`` (the newest 50 episodes with their total),
  ``filtered_page_ms`` (an environment and an outcome), ``deep_page_ms`` (offset 50,000),
  ``search_rare_ms`` / ``search_common_ms`` (full-text search for a word in 0.01% / 10% of steps),
  ``text_filter_page_ms`` (a page of episodes whose steps have a rare word), ``open_ms`` (one whole
  episode, as the Episode tab opens it) and ``aggregates_ms``; targets on SQLite: page <= 100 ms,
  search <= 500 ms, open <= 300 ms.

    python bench/scale.py [--episodes 100000] [--steps 50] [--log-mb 1024] [--no-postgres] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from agent_studio.storage import open_store  # noqa: E402
from agent_studio.storage.aggregates import aggregates  # noqa: E402
from agent_studio.storage.orm import EpisodeRow, StepRow  # noqa: E402
from agent_studio.storage.search import EpisodeFilter  # noqa: E402

WORDS = [f"w{n}" for n in range(2000)]  # a Zipf-like vocabulary
RARE, COMMON = "zebra", "kitchen"
ENVS = ["gridworld", "household", "wikihop", "imported:chat"]


def sentence(rng: random.Random, length: int = 12) -> str:
    return " ".join(WORDS[min(int(rng.paretovariate(1.1)) - 1, len(WORDS) - 1)] for _ in range(length))


def chat_log(path: Path, megabytes: int, seed: int = 0) -> int:
    """A JSONL of tool-calling conversations of about ``megabytes`` MB; the number of records."""
    rng = random.Random(seed)
    target, written, records = megabytes << 20, 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            messages = [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": sentence(rng, 30)},
            ]
            for turn in range(rng.randint(3, 8)):
                call = {
                    "id": f"c{turn}",
                    "type": "function",
                    "function": {"name": "search", "arguments": json.dumps({"q": sentence(rng, 4)})},
                }
                messages.append({"role": "assistant", "content": sentence(rng, 40), "tool_calls": [call]})
                messages.append({"role": "tool", "name": "search", "content": sentence(rng, 120)})
            messages.append({"role": "assistant", "content": sentence(rng, 20)})
            line = json.dumps({"id": f"r{records}", "messages": messages, "score": rng.random()}) + "\n"
            handle.write(line)
            written += len(line.encode("utf-8"))
            records += 1
    return records


def measure_import(folder: Path, megabytes: int) -> dict:
    log = folder / "chat.jsonl"
    records = chat_log(log, megabytes)
    code = (
        "import resource, sys, time, json\n"
        "from agent_studio.storage import open_store\n"
        "from studio.importers.registry import read_episodes\n"
        "store = open_store(sys.argv[2]); start = time.perf_counter()\n"
        "counts = store.episodes.save_stream(read_episodes('chat', sys.argv[1]))\n"
        "print(json.dumps({**counts, 'seconds': time.perf_counter() - start, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(log), str(folder / "import.db")], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    size = log.stat().st_size / (1 << 20)
    return {
        "log_mb": round(size, 1),
        "records": records,
        "steps": result["steps"],
        "seconds": round(result["seconds"], 1),
        "steps_per_s": round(result["steps"] / result["seconds"]),
        "mb_per_s": round(size / result["seconds"], 2),
        "peak_rss_mb": round(result["peak_rss_mb"]),
    }


def bulk_load(store, episodes: int, steps: int, seed: int = 0) -> float:
    """``episodes`` x ``steps`` rows written with bulk inserts (what a large import leaves behind); seconds."""
    rng = random.Random(seed)
    started = time.perf_counter()
    batch = 2000
    for first in range(0, episodes, batch):
        rows, step_rows = [], []
        for number in range(first, min(first + batch, episodes)):
            episode_id = f"{number:032x}"
            success = rng.random() < 0.4
            rows.append(
                dict(
                    id=episode_id,
                    env=ENVS[number % len(ENVS)],
                    seed=number,
                    env_options={},
                    instruction=sentence(rng, 10),
                    policy="react",
                    policy_config={"temperature": 0.7},
                    model_id=None,
                    success=success,
                    end_reason="done",
                    parent_id=None,
                    forked_at=None,
                    started_at=f"2026-{1 + number * 11 // episodes:02d}-01T00:00:{number % 60:02d}.{number % 1000:03d}+00:00",
                    ended_at="2026-12-01T00:00:00.000+00:00",
                    schema_version=4,
                    sweep_id=None,
                    sweep_cell=None,
                    max_steps=steps,
                    runner=None,
                    length=steps,
                    total_return=float(success),
                    source=None,
                    source_format=None,
                )
            )
            for index in range(steps):
                words = sentence(rng, 20)
                if rng.random() < 0.0001:
                    words += f" {RARE}"
                if rng.random() < 0.1:
                    words += f" {COMMON}"
                repeat = index % 7 == 3
                step_rows.append(
                    dict(
                        episode_id=episode_id,
                        index=index,
                        observation=f"You see {words}.",
                        action="go north" if repeat else f"go {WORDS[index % 50]}",
                        actor="react",
                        raw="",
                        thought=sentence(rng, 15),
                        valid=rng.random() > 0.05,
                        invalid_reason=None,
                        reward=0.0,
                        terminated=index == steps - 1,
                        truncated=False,
                        next_observation="",
                        prompt=None,
                        info={},
                        timing={},
                        tokens=None,
                        action_logprobs=None,
                        extra={},
                        frame=None,
                        state=None,
                    )
                )
        with store.db.writing() as session:
            session.execute(insert(EpisodeRow), rows)
            session.execute(insert(StepRow), step_rows)
    return time.perf_counter() - started


def median_ms(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def measure_queries(store, episodes: int) -> dict:
    search = store.search
    some_id = f"{episodes // 2:032x}"
    if not store.db.is_sqlite:
        with store.db.writing() as session:
            session.execute(text("ANALYZE"))
    return {
        "page_ms": median_ms(lambda: (search.page(limit=50), search.count())),
        "filtered_page_ms": median_ms(
            lambda: (
                search.page(EpisodeFilter(env="household", outcome="success")),
                search.count(EpisodeFilter(env="household", outcome="success")),
            )
        ),
        "deep_page_ms": median_ms(lambda: search.page(limit=50, offset=min(50_000, episodes // 2))),
        "search_rare_ms": median_ms(lambda: search.search(RARE)),
        "search_common_ms": median_ms(lambda: search.search(COMMON)),
        "text_filter_page_ms": median_ms(lambda: search.page(EpisodeFilter(text=RARE))),
        "open_ms": median_ms(lambda: store.episodes.get(some_id)),
        "aggregates_ms": median_ms(lambda: aggregates(store.db, EpisodeFilter(env="gridworld")), repeats=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--log-mb", type=int, default=1024)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the files here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="agent-studio-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"episodes": args.episodes, "steps": args.episodes * args.steps}
    try:
        if args.log_mb:
            report["import"] = measure_import(folder, args.log_mb)
        with open_store(folder / "scale.db") as store:
            report["sqlite"] = {
                "load_s": round(bulk_load(store, args.episodes, args.steps), 1),
                **measure_queries(store, args.episodes),
            }
        if not args.no_postgres:
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            try:
                with open_store(cluster.new_database()) as store:
                    report["postgresql"] = {
                        "load_s": round(bulk_load(store, args.episodes, args.steps), 1),
                        **measure_queries(store, args.episodes),
                    }
            finally:
                cluster.stop()
        report["peak_rss_mb_bench"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
