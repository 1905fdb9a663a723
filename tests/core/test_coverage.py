"""Best-of-K coverage: success rate vs K over seeds, from the CLI and from stored episodes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from studio.scaling.coverage import CoveragePoint, coverage_points, wilson_interval
from studio.trace import Episode, Step
from studio.viz.plots import coverage_figure
from tests.cli.test_cli import cli
from tests.core.test_verifiers import EVERY_ACTION


def test_the_wilson_interval_matches_its_closed_forms() -> None:
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 4) == pytest.approx((0.0, z2 / (4 + z2)))  # 0/n: the upper end is z²/(n+z²)
    assert wilson_interval(4, 4) == pytest.approx((4 / (4 + z2), 1.0))
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)


def finished(k: int, verifier: str, success: bool) -> Episode:
    step = Step(
        index=0, observation="o", action="go east", reward=float(success), terminated=success, truncated=not success
    )
    config = {"candidates": k} | ({"verifier": verifier} if verifier != "first" else {})
    return Episode(env="gridworld", seed=0, policy="react", policy_config=config, steps=[step], success=success)


def test_points_group_finished_episodes_by_verifier_and_k() -> None:
    episodes = [finished(1, "first", False), finished(4, "oracle", True), finished(4, "oracle", False),
                finished(1, "first", True), Episode(env="gridworld", seed=0, policy_config={"candidates": 4})]  # fmt: skip
    points = coverage_points(episodes)
    assert points == [CoveragePoint("first", 1, 1, 2), CoveragePoint("oracle", 4, 1, 2)]  # unfinished: left out
    figure = coverage_figure(points)
    assert [trace.name for trace in figure.data] == ["first", "oracle"]
    assert list(figure.data[1].y) == [0.5]
    assert coverage_figure([]) is None


def test_the_coverage_command_runs_each_k_on_the_same_seeds(tmp_path: Path) -> None:
    script = tmp_path / "every.json"
    script.write_text(json.dumps({"outputs": EVERY_ACTION}))
    db, plot = tmp_path / "cov.db", tmp_path / "coverage.html"
    done = cli(
        "coverage", "--env", "gridworld", "--policy", "react", "--model", f"scripted:{script}", "--ks", "1,6",
        "--episodes", "3", "--verifiers", "first,oracle", "--max-steps", "30", "--json", "--db", str(db),
        "--plot", str(plot),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    points = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(p["verifier"], p["k"]) for p in points] == [("first", 1), ("first", 6), ("oracle", 1), ("oracle", 6)]
    rates = {(p["verifier"], p["k"]): p["rate"] for p in points}
    assert rates[("oracle", 6)] == 1.0 and rates[("first", 6)] == 0.0  # the script's first output goes north
    assert all(p["episodes"] == 3 and p["low"] <= p["rate"] <= p["high"] for p in points)
    html = plot.read_text()
    assert "Best-of-K coverage" in html and "plotly" in html
    with sqlite3.connect(db) as connection:  # every K on the same seeds, all stored
        seeds = connection.execute("select seed, count(*) from episodes group by seed").fetchall()
    assert sorted(seeds) == [(0, 4), (1, 4), (2, 4)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ks", "0,2"], "each K is a whole number from 1 to 16"),
        (["--ks", "a"], "use whole numbers separated by commas"),
        (["--verifiers", "first,best"], "use verifiers from first"),
        (["--plot", "x.png"], "give a file ending in .html"),
        (["--select", "best-of-99"], "best-of-K with K from 1 to 16"),
    ],
)
def test_coverage_flags_are_checked_in_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    done = cli("coverage", "--env", "gridworld", "--policy", "react", "--db", str(tmp_path / "x.db"), *flags)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
