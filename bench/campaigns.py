"""Annotation campaigns, in one run: what making a big campaign costs, and how fast annotators in parallel
processes claim and judge items, on SQLite and (with ``--postgres``) PostgreSQL.

Prints one JSON object per database:

- ``create_s``: a round-robin campaign over every pair (``--pairs``), overlap 3, five annotators: each
  assignment is a conditional UPDATE of the item's claims plus an insert, in one transaction.
- ``claims``: an ``open`` campaign with overlap 2 judged to the end by ``--workers`` processes at once:
  judgements per second, and that every item got exactly two (the check the tests make, at this size).
- ``quality_s`` / ``disagreements_s``: reading the campaign's quality and its disagreements once.

    python bench/campaigns.py [--pairs 1800] [--workers 4] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_studio.storage import open_store  # noqa: E402
from tests.support.store_helpers import run_react  # noqa: E402

JUDGE = """
import random, sys, time
from agent_studio.storage import open_store
store = open_store(sys.argv[1])
name, start = sys.argv[2], float(sys.argv[3])
pick = random.Random(name)
time.sleep(max(0.0, start - time.time()))
done = 0
while True:
    queue = store.campaigns.queue("open", name, limit=1)
    if not queue:
        break
    store.campaigns.judge("open", name, queue[0].pair_id, pick.choice(("left", "right")))
    done += 1
print(done)
"""


def fill(url: str, pairs: int) -> int:
    """Episodes with candidates until the store holds about ``pairs`` pairs."""
    with open_store(url) as store:
        seed = 0
        while len(store.preferences.pairs()) < pairs:
            for _ in range(20):
                run_react(store, seed=seed, steps=3, candidates=3, frames=False)
                seed += 1
            store.preferences.pairs_from_candidates()
        return len(store.preferences.pairs())


def measure(url: str, pairs: int, workers: int) -> dict:
    made = fill(url, pairs)
    with open_store(url) as store:
        started = time.perf_counter()
        store.campaigns.create("dealt", overlap=3, annotators=[f"a{n}" for n in range(5)])
        create_s = time.perf_counter() - started
        store.campaigns.create("open", overlap=2, assignment="open")
    start = time.time() + 3.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", JUDGE, url, f"w{n}", str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for n in range(workers)
    ]
    counts = [int(p.communicate(timeout=3600)[0]) for p in processes]
    elapsed = time.time() - start
    with open_store(url) as store:
        per_item = Counter(pair for pair, labels in store.campaigns.votes("open").items() for _ in labels)
        started = time.perf_counter()
        store.campaigns.quality("open")
        quality_s = time.perf_counter() - started
        started = time.perf_counter()
        disputed = len(store.campaigns.disagreements("open"))
        disagreements_s = time.perf_counter() - started
    return {
        "pairs": made,
        "create_s": round(create_s, 3),
        "assignments_per_s": round(3 * made / create_s, 1),
        "claims": {
            "workers": workers,
            "judgements": sum(counts),
            "per_worker": counts,
            "judgements_per_s": round(sum(counts) / elapsed, 1),
            "every_item_twice": set(per_item.values()) == {2} and len(per_item) == made,
        },
        "quality_s": round(quality_s, 3),
        "disagreements_s": round(disagreements_s, 3),
        "disagreements": disputed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1800)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(str(Path(folder) / "bench.db"), args.pairs, args.workers)
    if args.postgres:
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster()
        try:
            results["postgresql"] = measure(cluster.new_database(), args.pairs, args.workers)
        finally:
            cluster.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
