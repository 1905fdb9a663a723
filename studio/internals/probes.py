"""Linear probes of what the agent represents about its world, layer by layer.

Environments say what is true of a state (:meth:`studio.envs.base.StudioEnv.probe_targets`:
gridworld's agent and goal cells, distance, key; household's room and held object; MiniGrid's
position and direction). Each step's snapshot is restored to read its targets; its residual stream
at the last prompt token (:mod:`studio.internals.activations`) is the probe's input. Per layer, a
ridge regression (numbers: R² on held-out steps) or a logistic regression (labels: accuracy), its
penalty chosen by cross-validation on the training steps, is fitted with scikit-learn on the steps of some episode seeds and scored on the steps of the others
(seeds never straddle the split), beside a **control**: the same probe fitted on shuffled training
labels (the mean of three shuffles). A layer that decodes the target beats its control; chance is what the majority label (or a
constant, R² 0) would get.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.importers.transcript import prompts_of
from studio.internals.activations import ActivationCache, step_activations
from studio.models.base import Backend
from studio.trace import Episode

#: Share of seeds held out.
TEST_SHARE = 0.3
#: Shuffles of the training labels the control averages over (one is a noisy baseline on few steps).
CONTROL_SHUFFLES = 3


@dataclass
class ProbeResult:
    """Held-out scores of one target's probes, per layer, beside the shuffled-label control."""

    target: str
    kind: str
    """``regression`` (R²) or ``classification`` (accuracy)."""
    layers: list[int]
    scores: list[float]
    control: list[float]
    chance: float
    train_steps: int
    test_steps: int
    test_seeds: list[int]

    @property
    def metric(self) -> str:
        return "R²" if self.kind == "regression" else "accuracy"

    @property
    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.scores))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "metric": self.metric,
            "layers": self.layers,
            "scores": [round(v, 6) for v in self.scores],
            "control": [round(v, 6) for v in self.control],
            "chance": round(self.chance, 6),
            "best_layer": self.best_layer,
            "train_steps": self.train_steps,
            "test_steps": self.test_steps,
            "test_seeds": self.test_seeds,
        }


def split_by_seed(groups: list[int], share: float = TEST_SHARE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices with no seed on both sides (at least one seed each)."""
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise StudioError("Probes are scored on held-out episode seeds: give episodes of at least two seeds.")
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(unique)[: max(1, round(len(unique) * share))].tolist())
    rows = np.arange(len(groups))
    test = np.array([g in held for g in groups])
    return rows[~test], rows[test]


def fit_probes(
    features: np.ndarray,
    targets: list[Any],
    groups: list[int],
    target: str = "target",
    layers: list[int] | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Probes of ``targets`` from ``features`` (steps, layers, hidden), one per layer, split by ``groups``."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(targets) != features.shape[0] or features.ndim != 3:
        raise StudioError("Probe features and targets do not line up.")
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in targets)
    kind = "regression" if numeric and len(set(targets)) > 2 else "classification"
    y = np.asarray(targets, dtype=np.float64) if kind == "regression" else np.asarray([str(v) for v in targets])
    train, test = split_by_seed(groups, seed=seed)
    if kind == "classification" and len(set(y[train])) < 2:
        raise StudioError(f"Target {target!r} takes one value on the training seeds: nothing to probe.")
    rng = np.random.default_rng(seed)
    shuffles = [y[train][rng.permutation(len(train))] for _ in range(CONTROL_SHUFFLES)]
    chosen = layers if layers is not None else list(range(features.shape[1]))

    def held_out(x: np.ndarray, labels: np.ndarray) -> float:
        # The penalty is chosen on the training steps (features outnumber steps: unpenalised probes overfit).
        model = make_pipeline(
            StandardScaler(),
            RidgeCV(alphas=np.logspace(-3, 6, 10))
            if kind == "regression"
            else LogisticRegressionCV(Cs=np.logspace(-3, 2, 6), cv=3, max_iter=2000),
        )
        model.fit(x[train], labels)
        predicted = model.predict(x[test])
        return (
            float(r2_score(y[test], predicted)) if kind == "regression" else float(accuracy_score(y[test], predicted))
        )

    scores, control = [], []
    for layer in chosen:
        x = features[:, layer, :].astype(np.float64)
        scores.append(held_out(x, y[train]))
        control.append(float(np.mean([held_out(x, labels) for labels in shuffles])))
    if kind == "regression":
        chance = 0.0
    else:
        values, counts = np.unique(y[train], return_counts=True)
        chance = float(np.mean(y[test] == values[int(np.argmax(counts))]))
    test_seeds = sorted({int(groups[i]) for i in test})
    return ProbeResult(target, kind, chosen, scores, control, chance, len(train), len(test), test_seeds)


@dataclass
class ProbeTargets:
    """What is true at each probed step: the steps (with their prompts), the target's values, their seeds."""

    rows: list[tuple[Episode, Any, Any]]
    values: list[Any]
    groups: list[int]


def probe_targets(episodes: list[Episode], target: str) -> ProbeTargets:
    """``target`` at every step with a snapshot and a prompt, read by restoring the snapshot (no model
    is needed: a target the environment does not declare is refused before any forward pass)."""
    from studio.envs.registry import make_env

    rows: list[tuple[Episode, Any, Any]] = []
    for episode in episodes:
        prompts = prompts_of(episode)
        rows += [(episode, s, prompts[s.index]) for s in episode.steps if s.state is not None and prompts[s.index]]
    if not rows:
        raise StudioError("None of these episodes has steps with a snapshot and a prompt (run them in the studio).")
    values, groups = [], []
    envs: dict[tuple[str, str], Any] = {}
    with contextlib.ExitStack() as stack:
        for episode, step, _prompt in rows:
            key = (episode.env, repr(sorted(episode.env_options.items())))
            if key not in envs:
                envs[key] = stack.enter_context(contextlib.closing(make_env(episode.env, episode.env_options)))
            envs[key].rewind(episode.seed, step.state)
            known = envs[key].probe_targets()
            if target not in known:
                names = ", ".join(sorted(known)) or "none"
                raise StudioError(f"{episode.env} has no probe target {target!r} (its targets: {names}).")
            values.append(known[target])
            groups.append(int(episode.seed or 0))
    return ProbeTargets(rows, values, groups)


def probe_features(
    backend: Backend,
    targets: ProbeTargets,
    cache: ActivationCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(steps, layers, hidden): each probed step's residual stream at its last prompt token."""
    features = []
    for done, (episode, step, prompt) in enumerate(targets.rows, start=1):
        features.append(step_activations(backend, episode, step, cache=cache, prompt=prompt).last)
        if progress is not None:
            progress(done, len(targets.rows))
    return np.stack(features)


def probe(
    backend: Backend,
    truth: ProbeTargets,
    target: str,
    layers: list[int] | None = None,
    cache: ActivationCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """Probes of ``target`` (read by :func:`probe_targets`) at each of ``layers`` (all by default)."""
    features = probe_features(backend, truth, cache, progress)
    count = features.shape[1]
    bad = [layer for layer in layers or [] if not 0 <= layer < count]
    if bad:
        raise StudioError(f"Layer {bad[0]} is not one of 0..{count - 1}.")
    return fit_probes(features, truth.values, truth.groups, target, layers)
