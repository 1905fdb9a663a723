"""Comparing two models on the same seeds: paired tests, and a results table with confidence intervals.

Pure functions of finished episodes (no store, no UI):

- :func:`mcnemar_exact`: the exact (binomial) McNemar test of paired successes;
- :func:`paired_bootstrap`: a percentile bootstrap of the mean paired difference (returns);
- :func:`results_rows`: per (model, environment): success rate with its Wilson 95% interval,
  mean return, steps, invalid-action rate, progress rate (where the environment has subgoals),
  tokens and seconds per step;
- :func:`paired_comparison`: two models' episodes paired by (environment, seed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from studio.coverage import wilson_interval
from studio.trace import Episode

BOOTSTRAP_RESAMPLES = 10_000


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: ``only_first`` pairs where only the
    first model succeeded, ``only_second`` where only the second did. Under the null each discordant
    pair goes either way with probability 1/2: p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2).
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("counts of pairs cannot be negative")
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_bootstrap(
    first: list[float], second: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """The mean of ``first - second`` over paired items, its 95% percentile bootstrap interval, and a
    two-sided bootstrap p-value (twice the share of resampled means on the far side of zero, at most 1)."""
    if len(first) != len(second) or not first:
        raise ValueError("the bootstrap needs the same, non-zero number of paired values on both sides")
    differences = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    if np.all(differences == 0):
        p = 1.0
    else:
        p = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"mean_difference": float(differences.mean()), "low": float(low), "high": float(high), "p": p}


def _acted_by(episode: Episode) -> str:
    return episode.acted_by


def episode_progress(episode: Episode) -> float | None:
    """AgentBoard's progress rate of an episode: the largest share of the environment's subgoals
    (``info["subgoals"]``) reached at any step, 1.0 for a success; None where the environment
    defines no subgoals."""
    shares = []
    for step in episode.steps:
        subgoals = step.info.get("subgoals") if isinstance(step.info, dict) else None
        if isinstance(subgoals, dict) and subgoals:
            shares.append(sum(bool(v) for v in subgoals.values()) / len(subgoals))
    if not shares:
        return None
    return 1.0 if episode.success else max(shares)


def results_rows(episodes: Iterable[Episode], who: Callable[[Episode], str] | None = None) -> list[dict[str, Any]]:
    """One row per (model, environment) over the finished episodes, sorted by model then environment;
    ``who`` names an episode's model (default: :attr:`Episode.acted_by`)."""
    groups: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for episode in episodes:
        if episode.done and episode.steps:
            groups[((who or _acted_by)(episode), episode.env)].append(episode)
    rows = []
    for (model, env), group in sorted(groups.items()):
        successes = sum(bool(e.success) for e in group)
        low, high = wilson_interval(successes, len(group))
        steps = [s for e in group for s in e.steps]
        tokens = [len(s.tokens) for s in steps if s.tokens is not None]
        seconds = [s.timing.get("policy_s") for s in steps if isinstance(s.timing.get("policy_s"), (int, float))]
        progress = [p for p in (episode_progress(e) for e in group) if p is not None]
        rows.append(
            {
                "model": model,
                "env": env,
                "episodes": len(group),
                "successes": successes,
                "success_rate": successes / len(group),
                "success_low": low,
                "success_high": high,
                "mean_return": float(np.mean([e.total_return for e in group])),
                "mean_steps": float(np.mean([e.length for e in group])),
                "invalid_rate": sum(not s.valid for s in steps) / len(steps),
                "progress_rate": float(np.mean(progress)) if progress else None,
                "tokens_per_step": float(np.mean(tokens)) if tokens else None,
                "seconds_per_step": float(np.mean(seconds)) if seconds else None,
            }
        )
    return rows


def paired_comparison(first: Iterable[Episode], second: Iterable[Episode], seed: int = 0) -> dict[str, Any]:
    """Two models' finished episodes paired by (environment, seed) (the latest of each, if repeated):
    success counts, McNemar's exact test, and the paired bootstrap of returns."""

    def latest(episodes: Iterable[Episode]) -> dict[tuple[str, int | None], Episode]:
        chosen: dict[tuple[str, int | None], Episode] = {}
        for episode in sorted((e for e in episodes if e.done and e.steps), key=lambda e: e.started_at):
            chosen[(episode.env, episode.seed)] = episode
        return chosen

    a, b = latest(first), latest(second)
    keys = sorted(set(a) & set(b), key=lambda key: (key[0], -1 if key[1] is None else key[1]))
    only_first = sum(bool(a[k].success) and not b[k].success for k in keys)
    only_second = sum(bool(b[k].success) and not a[k].success for k in keys)
    both = sum(bool(a[k].success) and bool(b[k].success) for k in keys)
    result: dict[str, Any] = {
        "pairs": len(keys),
        "both_succeeded": both,
        "only_first": only_first,
        "only_second": only_second,
        "neither": len(keys) - both - only_first - only_second,
        "mcnemar_p": mcnemar_exact(only_first, only_second),
        "returns": None,
    }
    if keys:
        result["returns"] = paired_bootstrap(
            [a[k].total_return for k in keys], [b[k].total_return for k in keys], seed=seed
        )
    return result
