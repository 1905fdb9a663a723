"""Comparing models on the same seeds: which episodes count, paired tests, and a results table.

Pure functions of finished episodes (no store, no UI):

- :func:`select_latest`: the one selection rule every view shares (the CLI's ``compare``, sweeps, the
  Compare tab, reports): the latest finished episode per (model as named, environment, its options,
  seed, settings that matter); runs of one model under different settings are different *arms*;
- :func:`comparison`: the results table and the paired tests of such a selection;
- :func:`mcnemar_exact`: the exact (binomial) McNemar test of paired successes;
- :func:`paired_bootstrap`: a percentile bootstrap of the mean paired difference (returns);
- :func:`results_rows`: per (arm, environment and options): success rate with its Wilson 95% interval,
  mean return, steps, invalid-action rate, progress rate (where the environment has subgoals),
  tokens and seconds per step;
- what went wrong (:mod:`studio.evaluation.diagnostics`): invalid actions, failed actions and cut-off
  episodes counted by reason per arm and environment, with example steps;
- :func:`paired_comparison`: two arms' episodes paired by (environment, options, seed).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.evaluation.diagnostics import diagnostics
from studio.evaluation.stats import mcnemar_exact, p_text, paired_bootstrap, wilson_interval
from studio.trace import Episode


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


# -- which episodes count ---------------------------------------------------------------------------
#: Policy settings that do not make another arm: the model is matched by the name it ran under, and
#: a policy's random seed (the random policy's) is a draw, as a model's sampling seed is.
_NOT_SETTINGS = frozenset({"model", "seed"})


#: The setting that names an episode's step limit in arms' settings and labels.
STEP_LIMIT = "max_steps"


def comparison_settings(episode: Episode) -> dict[str, Any]:
    """The settings that make two runs of one model different arms: the step limit and the policy's
    own settings (candidates K, temperature, top-p, action mode, verifier and its settings, ...)."""
    settings = {key: value for key, value in episode.policy_config.items() if key not in _NOT_SETTINGS}
    settings[STEP_LIMIT] = episode.max_steps
    return dict(sorted(settings.items()))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class Cell:
    """What pairs two arms' episodes: the same environment, with the same options, on the same seed."""

    env: str
    options: str
    """The environment's options as canonical JSON (defaults filled in, as episodes record them)."""
    seed: int | None

    @classmethod
    def of(cls, episode: Episode) -> Cell:
        return cls(episode.env, _canonical(episode.env_options), episode.seed)

    def sort_key(self) -> tuple[str, str, int]:
        return (self.env, self.options, -1 if self.seed is None else self.seed)


@dataclass(frozen=True)
class Selected:
    """One episode that counts: the arm it belongs to (name and settings) and its cell."""

    name: str
    """The model as the comparison names it (``default``, ``expert``, a sweep's ``default (temperature=0.7)``)."""
    settings: str
    """:func:`comparison_settings` as canonical JSON."""
    cell: Cell
    episode: Episode


def select_latest(episodes: Iterable[Episode], name_of: Callable[[Episode], str] | None = None) -> list[Selected]:
    """The rule every comparison shares: of the finished episodes, the latest (by start time) per
    (name, settings, environment, options, seed). ``name_of`` names an episode's model (default:
    :attr:`Episode.acted_by`). Only complete episodes count (:attr:`Episode.complete`: not running,
    stopped or abandoned), with at least one step."""
    name_of = name_of or (lambda episode: episode.acted_by)
    chosen: dict[tuple[str, str, Cell], Selected] = {}
    for episode in sorted((e for e in episodes if e.complete and e.steps), key=lambda e: (e.started_at, e.id)):
        item = Selected(name_of(episode), _canonical(comparison_settings(episode)), Cell.of(episode), episode)
        chosen[(item.name, item.settings, item.cell)] = item
    return list(chosen.values())


def _differing(values: list[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in all of ``values``, in first-seen order."""
    keys = list(dict.fromkeys(key for value in values for key in value))
    return [key for key in keys if len({_canonical(value.get(key)) for value in values}) > 1]


def _labelled(name: str, values: dict[str, Any], keys: list[str]) -> str:
    if not keys:
        return name
    parts = ", ".join(f"{key}={'unrecorded' if values.get(key) is None else values.get(key)}" for key in keys)
    return f"{name} ({parts})"


def arm_labels(selected: list[Selected]) -> dict[tuple[str, str], str]:
    """A label per arm (name, settings): the name, then the step limit where the arms do not all share
    one, and the settings that differ between the arms of that name (``default (max_steps=20,
    temperature=0.7)``), so that what a pair compares is in its names."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for item in selected:
        if item.settings not in by_name[item.name]:
            by_name[item.name].append(item.settings)
    limits = {json.loads(text)[STEP_LIMIT] for settings in by_name.values() for text in settings}
    labels = {}
    for name, settings in by_name.items():
        parsed = [json.loads(text) for text in settings]
        keys = [key for key in _differing(parsed) if key != STEP_LIMIT]
        if len(limits) > 1:
            keys = [STEP_LIMIT, *keys]
        for text, values in zip(settings, parsed):
            labels[(name, text)] = _labelled(name, values, keys)
    return labels


def env_labels(selected: list[Selected]) -> dict[tuple[str, str], str]:
    """A label per (environment, options): the name, and the options that differ between the
    selection's runs of that environment (``gridworld (difficulty=easy, size=5)``)."""
    by_env: dict[str, list[str]] = defaultdict(list)
    for item in selected:
        if item.cell.options not in by_env[item.cell.env]:
            by_env[item.cell.env].append(item.cell.options)
    labels = {}
    for env, options in by_env.items():
        parsed = [json.loads(text) for text in options]
        keys = _differing(parsed)
        for text, values in zip(options, parsed):
            labels[(env, text)] = _labelled(env, values, keys)
    return labels


def comparison(
    episodes: Iterable[Episode],
    name_of: Callable[[Episode], str] | None = None,
    env: str | None = None,
    seed: int = 0,
    order: list[str] | None = None,
) -> dict[str, Any]:
    """The results table and paired tests of the episodes :func:`select_latest` keeps (only those of
    ``env`` when given: every filter applies to everything shown). Each arm gets a results row per
    environment and options; every two arms are paired on the (environment, options, seed) cells they
    share. ``order`` lists names in the order arms are shown (others follow, sorted)."""
    selected = [item for item in select_latest(episodes, name_of) if env is None or item.cell.env == env]
    arms = arm_labels(selected)
    envs = env_labels(selected)
    rank = {name: position for position, name in enumerate(order or [])}
    arm_order = sorted(
        dict.fromkeys((item.name, item.settings) for item in selected),
        key=lambda arm: (rank.get(arm[0], len(rank)), arms[arm]),
    )
    members: dict[str, list[Selected]] = {arms[arm]: [] for arm in arm_order}
    for item in selected:
        members[arms[(item.name, item.settings)]].append(item)
    rows = []
    groups: dict[tuple[str, str], list[Episode]] = {}
    for label, items in members.items():
        by_env: dict[tuple[str, str], list[Episode]] = defaultdict(list)
        for item in items:
            by_env[(item.cell.env, item.cell.options)].append(item.episode)
        for (env_name, options), group in sorted(by_env.items(), key=lambda pair: envs[pair[0]]):
            rows.append(_row(label, env_name, json.loads(options), envs[(env_name, options)], group))
            groups[(label, envs[(env_name, options)])] = group
    labels = list(members)
    paired = [
        {
            "first": first,
            "second": second,
            **paired_comparison([i.episode for i in members[first]], [i.episode for i in members[second]], seed),
        }
        for position, first in enumerate(labels)
        for second in labels[position + 1 :]
    ]
    return {"results": rows, "paired": paired, "selected": len(selected), "diagnostics": diagnostics(groups)}


def _row(label: str, env: str, options: dict[str, Any], env_label: str, group: list[Episode]) -> dict[str, Any]:
    """One results row: an arm on one environment with one set of options."""
    known = [e for e in group if e.success is not None]
    successes = sum(bool(e.success) for e in known)
    low, high = wilson_interval(successes, len(known)) if known else (None, None)
    steps = [s for e in group for s in e.steps]
    tokens = [len(s.tokens) for s in steps if s.tokens is not None]
    seconds = [s.timing.get("policy_s") for s in steps if isinstance(s.timing.get("policy_s"), (int, float))]
    progress = [p for p in (episode_progress(e) for e in group) if p is not None]
    return {
        "model": label,
        "env": env,
        "env_options": options,
        "max_steps": group[0].max_steps,
        "env_label": env_label,
        "episodes": len(group),
        "successes": successes,
        "success_known": len(known),
        "success_rate": successes / len(known) if known else None,
        "success_low": low,
        "success_high": high,
        "mean_return": float(np.mean([e.total_return for e in group])),
        "mean_steps": float(np.mean([e.length for e in group])),
        "invalid_rate": sum(not s.valid for s in steps) / len(steps),
        "progress_rate": float(np.mean(progress)) if progress else None,
        "tokens_per_step": float(np.mean(tokens)) if tokens else None,
        "seconds_per_step": float(np.mean(seconds)) if seconds else None,
    }


def results_rows(episodes: Iterable[Episode], who: Callable[[Episode], str] | None = None) -> list[dict[str, Any]]:
    """:func:`comparison`'s rows alone: one per arm and environment (with options) over the selected episodes."""
    return comparison(episodes, who)["results"]


def paired_comparison(first: Iterable[Episode], second: Iterable[Episode], seed: int = 0) -> dict[str, Any]:
    """Two arms' finished episodes paired by (environment, options, seed) — the latest of each cell where
    a cell was run more than once: success counts, McNemar's exact test, and the paired bootstrap of
    returns. Pairs where either side's success is unknown count for the returns, not for McNemar."""

    def latest(episodes: Iterable[Episode]) -> dict[Cell, Episode]:  # the latest per cell, whatever its settings
        kept = sorted(select_latest(episodes, lambda _episode: ""), key=lambda i: (i.episode.started_at, i.episode.id))
        return {item.cell: item.episode for item in kept}

    a, b = latest(first), latest(second)
    keys = sorted(set(a) & set(b), key=Cell.sort_key)
    known = [k for k in keys if a[k].success is not None and b[k].success is not None]
    only_first = sum(bool(a[k].success) and not b[k].success for k in known)
    only_second = sum(bool(b[k].success) and not a[k].success for k in known)
    both = sum(bool(a[k].success) and bool(b[k].success) for k in known)
    mcnemar = mcnemar_exact(only_first, only_second)
    result: dict[str, Any] = {
        "pairs": len(keys),
        "success_pairs": len(known),
        "both_succeeded": both,
        "only_first": only_first,
        "only_second": only_second,
        "neither": len(known) - both - only_first - only_second,
        "mcnemar_p": mcnemar,
        "mcnemar_p_text": p_text(mcnemar),
        "returns": None,
    }
    if keys:
        result["returns"] = paired_bootstrap(
            [a[k].total_return for k in keys], [b[k].total_return for k in keys], seed=seed
        )
    return result
