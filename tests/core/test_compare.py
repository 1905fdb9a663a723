"""Paired comparison statistics against known values and scipy, and the results table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from agent_studio.storage import open_store

from studio.agents.scripted import ExpertPolicy, RandomPolicy
from studio.evaluation.compare import comparison, paired_comparison, results_rows
from studio.evaluation.stats import mcnemar_exact, paired_bootstrap
from studio.evaluation.stats import wilson_interval
from studio.episodes.runner import EpisodeRunner, RunnerConfig


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
    assert same == {"mean_difference": 0.0, "low": 0.0, "high": 0.0, "p": 1.0, "p_text": "1"}
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
    rows = {row["model"].split(" (")[0]: row for row in results_rows(expert + walker)}
    assert rows["expert"]["success_rate"] == 1.0 and (
        rows["expert"]["success_low"],
        rows["expert"]["success_high"],
    ) == wilson_interval(8, 8)
    assert rows["random"]["episodes"] == 8 and rows["random"]["invalid_rate"] == 0.0
    assert paired_comparison(expert, [])["pairs"] == 0 and paired_comparison(expert, [])["returns"] is None


ROOT = Path(__file__).resolve().parents[2]


def _cli(db: str):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", *args, "--db", db], cwd=ROOT, capture_output=True, text=True, timeout=300
        )

    return cli


def test_the_cli_compares_stored_runs(tmp_path) -> None:
    cli = _cli(str(tmp_path / "s.db"))
    assert cli("run", "--env", "gridworld", "--policy", "expert", "--episodes", "4").returncode == 0
    assert cli("run", "--env", "gridworld", "--policy", "random", "--episodes", "4", "--max-steps", "5").returncode == 0
    result = cli("compare", "--models", "expert,random", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (paired,) = data["paired"]
    # The two ran under different step limits: the names say so wherever they are paired.
    assert (paired["first"], paired["second"]) == ("expert (max_steps=100)", "random (max_steps=5)")
    assert paired["pairs"] == 4 and paired["mcnemar_p"] == mcnemar_exact(paired["only_first"], paired["only_second"])
    assert [row["model"] for row in data["results"]] == ["expert (max_steps=100)", "random (max_steps=5)"]
    text = cli("compare", "--models", "expert,random").stdout
    assert "paired on 4 (env, options, seed)" in text and "McNemar exact p = " in text
    missing = cli("compare", "--models", "expert,nobody")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: No finished episode of 'nobody'."


def _scipy_paired(first: dict, second: dict) -> tuple[int, float]:
    """McNemar's exact p of two {(env, seed): success} maps, as scipy's binomial test gives it."""
    keys = sorted(set(first) & set(second))
    b = sum(first[k] and not second[k] for k in keys)
    c = sum(second[k] and not first[k] for k in keys)
    return len(keys), 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue


def test_a_sweeps_env_filter_applies_to_the_paired_tests(tmp_path) -> None:
    cli = _cli(str(tmp_path / "s.db"))
    ran = cli("sweep", "--models", "expert,random", "--envs", "gridworld,household", "--seeds", "0-4",
              "--max-steps", "30", "--name", "t1")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    data = json.loads(cli("compare", "t1", "--env", "gridworld", "--json").stdout)
    assert {row["env"] for row in data["results"]} == {"gridworld"}
    assert sum(row["episodes"] for row in data["results"]) == 10 and data["complete"] == 10 and data["cells"] == 10
    with open_store(str(tmp_path / "s.db")) as store:
        episodes = store.sweeps.episodes_of(store.sweeps.get("t1").id)
    outcome = {
        policy: {(e.env, e.seed): bool(e.success) for e in episodes if e.policy == policy and e.env == "gridworld"}
        for policy in ("expert", "random")
    }
    (paired,) = data["paired"]
    pairs, p = _scipy_paired(outcome["expert"], outcome["random"])
    assert (paired["pairs"], paired["mcnemar_p"]) == (pairs, pytest.approx(p, rel=1e-12)) and pairs == 5
    assert paired["mcnemar_p"] == pytest.approx(0.0625)  # not the 0.00195 of both environments
    # Every resampled mean difference is 1: the bootstrap cannot tell p from zero, and says so.
    assert paired["returns"]["p"] == 0.0 and paired["returns"]["p_text"] == "< 1e-4"
    text = cli("compare", "t1", "--env", "gridworld").stdout
    assert "paired on 5 (env, options, seed)" in text and "bootstrap p = < 1e-4" in text and "p = 0\n" not in text


def test_repeated_runs_count_once_the_latest_per_cell(tmp_path) -> None:
    db = str(tmp_path / "s.db")
    cli = _cli(db)
    for _ in range(2):  # the same cells run twice: each counts once, the latest
        ran = cli("run", "--env", "gym:FrozenLake-v1", "--policy", "random", "--episodes", "6", "--max-steps", "40")
        assert ran.returncode == 0, ran.stderr
    for _ in range(3):
        assert (
            cli("run", "--env", "gridworld", "--policy", "random", "--episodes", "5", "--max-steps", "40").returncode
            == 0
        )
    for seed in (0, 3):
        assert (
            cli("run", "--env", "gridworld", "--policy", "expert", "--seed", str(seed), "--max-steps", "40").returncode
            == 0
        )
    data = json.loads(cli("compare", "--models", "expert,random", "--json").stdout)
    rows = {(row["model"], row["env"]): row for row in data["results"]}
    assert rows[("random", "gym:FrozenLake-v1")]["episodes"] == 6  # not 12
    assert rows[("random", "gridworld")]["episodes"] == 5 and rows[("expert", "gridworld")]["episodes"] == 2
    with open_store(db) as store:
        latest: dict = {}
        for row in sorted(store.episodes.summaries(limit=1000), key=lambda r: r.started_at):
            latest[(row.policy, row.env, row.seed)] = bool(row.success)
    outcome = {
        policy: {(env, seed): ok for (who, env, seed), ok in latest.items() if who == policy}
        for policy in ("expert", "random")
    }
    (paired,) = data["paired"]
    pairs, p = _scipy_paired(outcome["expert"], outcome["random"])
    assert (paired["pairs"], paired["mcnemar_p"]) == (2, pytest.approx(p, rel=1e-12))


def _expert_run(env_options: dict, seed: int, max_steps: int):
    runner = EpisodeRunner("gridworld", ExpertPolicy(), env_options, config=RunnerConfig(max_steps=max_steps))
    runner.reset(seed=seed)
    return runner.run()


def test_settings_and_options_make_separate_labelled_rows_paired_only_on_the_same_options() -> None:
    easy = {"size": 5, "difficulty": "easy"}
    medium = {"size": 7, "difficulty": "medium"}
    expert = [_expert_run(medium, seed, 30) for seed in range(3)] + [_expert_run(easy, seed, 30) for seed in range(3)]
    expert += [_expert_run(medium, seed, 100) for seed in range(2)]
    walker = []
    for seed in range(3):
        runner = EpisodeRunner("gridworld", RandomPolicy(seed=seed), easy, config=RunnerConfig(max_steps=30))
        runner.reset(seed=seed)
        walker.append(runner.run())
    result = comparison(expert + walker, order=["expert", "random"])
    rows = [(row["model"], row["env_label"], row["episodes"]) for row in result["results"]]
    assert rows == [
        ("expert (max_steps=100)", "gridworld (difficulty=medium, size=7)", 2),
        ("expert (max_steps=30)", "gridworld (difficulty=easy, size=5)", 3),
        ("expert (max_steps=30)", "gridworld (difficulty=medium, size=7)", 3),
        ("random (max_steps=30)", "gridworld (difficulty=easy, size=5)", 3),
    ]
    paired = {(p["first"], p["second"]): p["pairs"] for p in result["paired"]}
    # Random ran only on the easy 5x5 grid: it pairs with the expert's easy runs, never its medium ones.
    assert paired[("expert (max_steps=30)", "random (max_steps=30)")] == 3
    assert paired[("expert (max_steps=100)", "random (max_steps=30)")] == 0
    assert paired[("expert (max_steps=100)", "expert (max_steps=30)")] == 2
    assert comparison(expert + walker, env="household")["results"] == []


def test_a_model_is_found_by_its_name_and_by_the_id_it_resolves_to(tmp_path) -> None:
    from studio.models.resolve import DEFAULT_REPO

    db = str(tmp_path / "s.db")
    episode = _expert_run({}, 0, 40)
    episode.policy, episode.model = "react", {"id": DEFAULT_REPO, "source": "converted-gguf"}
    episode.policy_config = {"action_mode": "generate", "candidates": 1, "temperature": 0.0, "model": DEFAULT_REPO}
    with open_store(db) as store:
        store.episodes.save(episode)
    cli = _cli(db)
    assert cli("run", "--env", "gridworld", "--policy", "expert", "--max-steps", "40").returncode == 0
    compared = cli("compare", "--models", "default,expert", "--json")
    assert compared.returncode == 0, compared.stderr
    (paired,) = json.loads(compared.stdout)["paired"]
    assert (paired["first"], paired["second"], paired["pairs"]) == ("default", "expert", 1)
