"""How a fork of an environment comes back, found by trying it: ``exact``, ``replay`` or ``none``.

A fork restores the snapshot a step stored into a *new* environment and goes on from there. For
the built-in environments that is exact by construction (``check_env`` tests it). An environment
from another package keeps its state where the studio may not see it — an emulator's memory, a
physics engine, a C library — so the snapshot of a ``gym:`` id may come back different, with no
error. :func:`probe_fork_mode` finds out the first time such an environment is made in a process:

1. reset a fresh instance on a seed, take a few actions, snapshot it, take a few more and record
   every observation, reward, end flag and frame;
2. restore the snapshot into another fresh instance and take the same actions: if everything is
   equal, forks are ``exact``;
3. else reset a third instance on the seed and replay the actions from the start: if everything is
   equal, the environment is deterministic under its seed and forks ``replay`` the actions (as
   TextWorldExpress's always do);
4. else forks are refused (``none``), with the reason, rather than silently wrong.

No store, no UI: the caller gives a factory of fresh instances in a given snapshot mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from studio.errors import StudioError

#: How a snapshot comes back: restored as it was, replayed from the seed and the actions, or not at all.
ForkMode = Literal["exact", "replay", "none"]
FORK_MODES: tuple[ForkMode, ...] = ("exact", "replay", "none")
#: Actions taken before the probe's snapshot, and after it (the ones compared).
PROBE_PREFIX, PROBE_STEPS = 3, 5
PROBE_SEED = 0


@dataclass(frozen=True)
class ForkProbe:
    """What :func:`probe_fork_mode` found."""

    mode: ForkMode
    note: str
    """In words: how a fork is made, or why it cannot be."""


#: A fresh, not yet reset instance of the environment whose snapshots are in the given mode.
Factory = Callable[[ForkMode], Any]


def _outcome(env: Any, action: str) -> tuple[Any, ...]:
    """What one step shows: the text, reward, end flags and the frame (as a digest)."""
    observation, reward, terminated, truncated, _info = env.step(action)
    frame = np.ascontiguousarray(env.render())
    return observation, float(reward), bool(terminated), bool(truncated), hashlib.sha1(frame.tobytes()).hexdigest()


def _future(env: Any, actions: list[str]) -> list[tuple[Any, ...]]:
    outcomes = []
    for action in actions:
        outcomes.append(_outcome(env, action))
        if outcomes[-1][2] or outcomes[-1][3]:
            break
    return outcomes


def _first_difference(original: list[tuple[Any, ...]], other: list[tuple[Any, ...]]) -> str:
    names = ("observation", "reward", "terminated flag", "truncated flag", "frame")
    for index, (left, right) in enumerate(zip(original, other)):
        for name, a, b in zip(names, left, right):
            if a != b:
                return f"the {name} {index + 1} step{'s' * (index > 0)} after the snapshot differed"
    return "the episode ended at another step"


def _continued(make: Factory, mode: ForkMode, snapshot: dict[str, Any], actions: list[str]) -> list[tuple[Any, ...]]:
    """A fresh instance in snapshot ``mode``, restored to ``snapshot``, taking ``actions``: what it shows."""
    env = make(mode)
    try:
        env.reset(seed=PROBE_SEED)
        env.set_state(snapshot)
        return _future(env, actions)
    finally:
        env.close()


def _snapshot_after(make: Factory, mode: ForkMode, prefix: list[str]) -> dict[str, Any]:
    """The snapshot (in ``mode``, through JSON as stored) of a fresh instance after ``prefix``."""
    env = make(mode)
    try:
        env.reset(seed=PROBE_SEED)
        for action in prefix:
            env.step(action)
        return json.loads(json.dumps(env.get_state()))
    finally:
        env.close()


def probe_fork_mode(make: Factory) -> ForkProbe:
    """Try a fork of the environment ``make`` builds (see the module docstring) and say how forks
    come back. Exceptions of the environment itself are the caller's (one line each)."""
    rng = np.random.default_rng(PROBE_SEED)
    source = make("exact")
    try:
        source.reset(seed=PROBE_SEED)
        prefix: list[str] = []
        for _ in range(PROBE_PREFIX):
            prefix.append(source.sample_action(rng))
            _obs, _reward, terminated, truncated, _info = source.step(prefix[-1])
            if terminated or truncated:  # too short to probe past the prefix: fork from the reset instead
                source.reset(seed=PROBE_SEED)
                prefix = []
                break
        snapshot = json.loads(json.dumps(source.get_state()))
        actions = [source.sample_action(rng) for _ in range(PROBE_STEPS)]
        original = _future(source, actions)
    finally:
        source.close()
    try:
        again = _continued(make, "exact", snapshot, actions)
        if again == original:
            return ForkProbe("exact", "forks restore the snapshot")
        why = _first_difference(original, again)
    except StudioError as exc:  # its snapshot cannot even be restored (state the checker refuses)
        why = "restoring its snapshot was refused: " + str(exc).split("cannot be restored: ")[-1].rstrip(".")
    replay = _continued(make, "replay", _snapshot_after(make, "replay", prefix), actions)
    if replay == original:
        return ForkProbe("replay", f"forks replay the actions from the seed; a restored snapshot was not exact: {why}")
    return ForkProbe(
        "none",
        f"a restored snapshot was not exact ({why}), and replaying the actions from the seed gave another "
        f"episode ({_first_difference(original, replay)})",
    )
