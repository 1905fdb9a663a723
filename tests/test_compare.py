"""Paired comparison statistics against known values and scipy, and the results table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from studio.agents.scripted import ExpertPolicy, RandomPolicy
from studio.compare import mcnemar_exact, paired_bootstrap, paired_comparison, results_rows
from studio.coverage import wilson_interval
from studio.runner import EpisodeRunner, RunnerConfig


def test_mcnemar_exact_of_known_cases() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)  # 2 * (1 + 7) / 128
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


@pytest.mark.parametrize(("b", "c"), [(3, 11), (7, 2), (20, 31), (0, 4), (12, 12), (40, 18)])
def test_mcnemar_exact_equals_scipys_binomial_test(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def test_the_paired_bootstrap_finds_a_shift_and_no_shift() -> None:
    rng = np.random.default_rng(1)
    second = rng.normal(0, 1, 200)
    first = second + 0.5 + rng.normal(0, 0.2, 200)
    shifted = paired_bootstrap(list(first), list(second))
    assert shifted["low"] < 0.5 < shifted["high"] and shifted["p"] < 1e-3
    assert shifted["mean_difference"] == pytest.approx(float(np.mean(first - second)))
    # Its interval agrees with scipy's percentile bootstrap of the same mean difference.
    reference = stats.bootstrap((first - second,), np.mean, n_resamples=10_000, method="percentile", rng=0)
    assert shifted["low"] == pytest.approx(reference.confidence_interval.low, abs=0.01)
    assert shifted["high"] == pytest.approx(reference.confidence_interval.high, abs=0.01)
    same = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same == {"mean_difference": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [])


def _episodes(policy_for_seed, seeds, max_steps: int):
    out = []
    for seed in seeds:
        runner = EpisodeRunner("gridworld", policy_for_seed(seed), config=RunnerConfig(max_steps=max_steps))
        runner.reset(seed=seed)
        out.append(runner.run())
    return out


def test_two_policies_on_the_same_seeds() -> None:
    seeds = range(8)
    expert = _episodes(lambda seed: ExpertPolicy(), seeds, max_steps=40)
    walker = _episodes(lambda seed: RandomPolicy(seed=seed), seeds, max_steps=6)
    result = paired_comparison(expert, walker)
    assert result["pairs"] == 8 and result["only_first"] + result["both_succeeded"] == 8
    assert result["mcnemar_p"] == pytest.approx(mcnemar_exact(result["only_first"], result["only_second"]))
    assert result["returns"]["mean_difference"] > 0
    rows = {row["model"]: row for row in results_rows(expert + walker)}
    assert rows["expert"]["success_rate"] == 1.0 and (
        rows["expert"]["success_low"],
        rows["expert"]["success_high"],
    ) == wilson_interval(8, 8)
    assert rows["random"]["episodes"] == 8 and rows["random"]["invalid_rate"] == 0.0
    assert paired_comparison(expert, [])["pairs"] == 0 and paired_comparison(expert, [])["returns"] is None


def test_the_cli_compares_stored_runs(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root, db = Path(__file__).resolve().parent.parent, str(tmp_path / "s.db")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", *args, "--db", db], cwd=root, capture_output=True, text=True, timeout=120
        )

    assert cli("run", "--env", "gridworld", "--policy", "expert", "--episodes", "4").returncode == 0
    assert cli("run", "--env", "gridworld", "--policy", "random", "--episodes", "4", "--max-steps", "5").returncode == 0
    result = cli("compare", "--models", "expert,random", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (paired,) = data["paired"]
    assert (paired["first"], paired["second"]) == ("expert", "random")
    assert paired["pairs"] == 4 and paired["mcnemar_p"] == mcnemar_exact(paired["only_first"], paired["only_second"])
    assert [row["model"] for row in data["results"]] == ["expert", "random"]
    text = cli("compare", "--models", "expert,random").stdout
    assert "paired on 4 (env, seed)" in text and "McNemar exact p = " in text
    missing = cli("compare", "--models", "expert,nobody")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: No finished episode of 'nobody'."
