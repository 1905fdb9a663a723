"""Evaluation sweeps: models x environments x seeds, run as ordinary episodes tagged with the sweep.

A :class:`SweepSpec` names what to run; its :meth:`~SweepSpec.cells` are the (model, environment,
seed) combinations in a fixed order, so a cell's index names it for good. :func:`run_sweep` runs the
cells not yet done: one model at a time (a model is loaded once), its cells side by side through
:func:`studio.episodes.rollouts.run_parallel` (one batched model call per token across live episodes). Each
episode carries ``sweep`` and ``sweep_cell``, so a sweep killed half-way resumes with exactly the
cells it lacks (the store says which are complete). :class:`SweepJob` runs one in a background thread
with a progress count and Stop, for the web app.

No store and no UI here: the caller gives the sinks, the set of cells to skip and a model loader.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from studio.errors import StudioError
from studio.internals.vectors import parse_steer, steer_variant
from studio.models.base import Backend
from studio.episodes.rollouts import LockedSink, run_parallel
from studio.episodes.runner import EpisodeRunner, RunnerConfig, Sink
from studio.settings import EpisodeSettings, default_temperature, schema, settings_from
from studio.trace import Episode
from studio.training.registry import trained_in
from studio.validation import MAX_NAME, MAX_SEED

#: Policies a sweep runs without a model; any other name is a model acting through the ReAct policy.
SCRIPTED_MODELS = ("expert", "random")
#: Limits a sweep's spec is held to (a web client may send one).
MAX_MODELS, MAX_ENVS, MAX_SEEDS, MAX_CELLS = 8, 16, 1_000, 10_000
#: Settings a sweep takes for its model-driven cells (the rest are the environment's or the sweep's); the
#: verifier's among them (``--vary verifier=likelihood,model:q``: best-of-K arms over the same seeds).
SWEEP_SETTINGS = tuple(
    spec.name
    for spec, setting in schema()
    if setting.cli and not setting.custom and setting.group in ("policy", "sampling", "verifier")
)
#: How a stopped episode of a sweep ends (it is not complete: a resume runs its cell again).
STOPPED = "stopped: the sweep was stopped"
_SEED_PART = re.compile(r"^(\d{1,10})(?:-(\d{1,10}))?$")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from ``"0-49"``, ``"3"`` or ``"0-9,20,30-31"``: sorted, without repeats; one line if malformed."""
    seeds: set[int] = set()
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise StudioError("Give seeds as a range or a list, e.g. 0-49 or 0-9,20.")
    for part in parts:
        match = _SEED_PART.match(part)
        if match is None:
            raise StudioError(f"Seeds are whole numbers or ranges such as 0-49, not {part[:30]!r}.")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low or high > MAX_SEED:
            raise StudioError(f"The seed range {part[:30]} must go upwards and stay within 0 to {MAX_SEED}.")
        if high - low + 1 + len(seeds) > MAX_SEEDS:
            raise StudioError(f"A sweep takes at most {MAX_SEEDS} seeds.")
        seeds.update(range(low, high + 1))
    return tuple(sorted(seeds))


#: At most this many combinations of varied settings.
MAX_VARIANTS = 16


def parse_vary(text: str) -> dict[str, list[str]]:
    """Varied settings from ``"temperature=0,0.7; candidates=1,4"`` (values checked later, by the spec)."""
    vary: dict[str, list[str]] = {}
    for part in (p.strip() for p in str(text or "").split(";")):
        if not part:
            continue
        name, separator, values = part.partition("=")
        if not separator or not name.strip() or not values.strip():
            raise StudioError(f"Vary a setting as NAME=VALUE,VALUE (e.g. temperature=0,0.7), not {part[:40]!r}.")
        vary[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return vary


def _checked_vary(vary: dict[str, Iterable[Any]]) -> dict[str, tuple[Any, ...]]:
    """Each varied setting's values checked by its Setting (typed), without repeats; one line if not."""
    checked: dict[str, tuple[Any, ...]] = {}
    for name, values in vary.items():
        if name not in SWEEP_SETTINGS:
            raise StudioError(f"A sweep cannot vary {str(name)[:40]!r}: vary one of {', '.join(SWEEP_SETTINGS)}.")
        parsed = tuple(dict.fromkeys(getattr(settings_from({name: value}), name) for value in values))
        if len(parsed) < 2:
            raise StudioError(f"Vary {name} over at least two different values.")
        checked[name] = parsed
    combinations = 1
    for values in checked.values():
        combinations *= len(values)
    if combinations > MAX_VARIANTS:
        raise StudioError(f"The varied settings make {combinations} combinations; at most {MAX_VARIANTS} are allowed.")
    return checked


def _check_verifiers(names: Iterable[Any], registered: bool = False) -> None:
    """Each verifier a sweep uses needs no judge model (a sweep has none); with ``registered``, each trained
    one (``model:NAME``) is registered too (before a sweep runs: a stored sweep stays readable without it)."""
    from studio.scaling.verifier_registry import get_verifier

    for name in dict.fromkeys(str(n) for n in names):
        if name.startswith("model:") and not registered:
            continue
        if get_verifier(name).needs_judge:
            raise StudioError(
                f"A sweep has no judge model: the {name} verifier cannot run in one (use run --judge-model)."
            )


def _names(values: Iterable[Any], what: str, most: int) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(str(v).strip() for v in values if isinstance(v, str) and v.strip()))
    if not names:
        raise StudioError(f"A sweep needs at least one {what}.")
    if len(names) > most:
        raise StudioError(f"A sweep takes at most {most} {what}s, got {len(names)}.")
    for name in names:
        if len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise StudioError(f"The {what} name {name[:40]!r} is too long or has control characters.")
    return names


@dataclass(frozen=True)
class SweepCell:
    """One episode of a sweep: who acts (with which varied settings), where, on which seed."""

    index: int
    model: str
    env: str
    seed: int
    variant: tuple[tuple[str, Any], ...] = ()
    """The values of the sweep's varied settings in this cell (empty when nothing varies)."""

    @property
    def label(self) -> str:
        """The model as results name it: with its varied settings, e.g. ``default (temperature=0.7)``."""
        if not self.variant:
            return self.model
        return f"{self.model} ({', '.join(f'{name}={value}' for name, value in self.variant)})"


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: every model on every environment on every seed, with shared settings."""

    models: tuple[str, ...]
    """``expert``, ``random``, or a model name (``default``, a hub id, ``scripted:...``) for the ReAct policy."""
    envs: tuple[str, ...]
    """Registered environment names (family members too: ``gym:FrozenLake-v1``), made with their defaults."""
    seeds: tuple[int, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    """Values of :data:`SWEEP_SETTINGS` for the model-driven cells (``max_steps`` applies to all)."""
    max_invalid: int = 10
    env_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options per environment name (checked against the environment's own); the others use defaults."""
    vary: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Settings of :data:`SWEEP_SETTINGS` to compare, each with its values: every model-driven model
    runs once per combination (``{"temperature": (0.0, 0.7)}``); scripted policies run once."""

    @classmethod
    def build(
        cls,
        models: Iterable[str],
        envs: Iterable[str],
        seeds: str | Iterable[int],
        settings: dict[str, Any] | None = None,
        max_invalid: int = 10,
        env_options: dict[str, dict[str, Any]] | None = None,
        vary: dict[str, Iterable[Any]] | None = None,
    ) -> SweepSpec:
        """A checked spec: one line naming the first thing wrong (it may come from a web client)."""
        seed_list = parse_seeds(seeds) if isinstance(seeds, str) else tuple(sorted(set(seeds)))
        for seed in seed_list:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise StudioError(f"Seeds are whole numbers from 0 to {MAX_SEED}.")
        if not seed_list or len(seed_list) > MAX_SEEDS:
            raise StudioError(f"A sweep takes from 1 to {MAX_SEEDS} seeds.")
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(SWEEP_SETTINGS))
        if unknown:
            raise StudioError(
                f"A sweep does not take the setting {unknown[0][:40]!r}: use {', '.join(SWEEP_SETTINGS)}."
            )
        settings_from(settings)  # each value checked by its Setting: one line if it does not fit
        if isinstance(max_invalid, bool) or not isinstance(max_invalid, int) or not 1 <= max_invalid <= 1_000:
            raise StudioError("The invalid actions allowed per episode must be a whole number from 1 to 1000.")
        env_names = _names(envs, "environment", MAX_ENVS)
        env_options = dict(env_options or {})
        for name, options in env_options.items():
            if name not in env_names:
                raise StudioError(
                    f"Options were given for {str(name)[:60]!r}, which is not one of the sweep's environments."
                )
            if not isinstance(options, dict):
                raise StudioError(f"The options of {name[:60]} must be a JSON object.")
        spec = cls(
            models=_names(models, "model", MAX_MODELS),
            envs=env_names,
            seeds=seed_list,
            settings=settings,
            max_invalid=max_invalid,
            env_options={name: dict(options) for name, options in env_options.items() if options},
            vary=_checked_vary(vary or {}),
        )
        if spec.size > MAX_CELLS:
            raise StudioError(f"This sweep has {spec.size} episodes; at most {MAX_CELLS} are allowed.")
        parse_steer(str(settings.get("steer", "")))
        for value in spec.vary.get("steer", ()):  # each varied steering spelled right (vectors load when run)
            parse_steer(steer_variant(str(settings.get("steer", "")), str(value)))
        _check_verifiers([settings.get("verifier", "first"), *spec.vary.get("verifier", ())])
        return spec

    @property
    def size(self) -> int:
        """The number of cells (episodes) in the sweep."""
        return sum(len(self.variants(model)) for model in self.models) * len(self.envs) * len(self.seeds)

    def variants(self, model: str) -> list[tuple[tuple[str, Any], ...]]:
        """The combinations of varied settings ``model`` runs with (one, empty, for scripted policies)."""
        if model in SCRIPTED_MODELS or not self.vary:
            return [()]
        names = list(self.vary)
        return [tuple(zip(names, values)) for values in itertools.product(*(self.vary[n] for n in names))]

    def cells(self) -> list[SweepCell]:
        """Every cell, model by model (each variant in turn), then environment, then seed (the order
        cell indexes follow)."""
        combos = [(m, v, e, s) for m in self.models for v in self.variants(m) for e in self.envs for s in self.seeds]
        return [SweepCell(index, m, e, s, v) for index, (m, v, e, s) in enumerate(combos)]

    def episode_settings(self, variant: tuple[tuple[str, Any], ...] = ()) -> EpisodeSettings:
        """The settings of the sweep's model-driven cells (with a variant's values); no temperature
        means greedy for one output and sampling for several, as in ``run``."""
        values = {**self.settings, **dict(variant)}
        if "steer" in dict(variant):  # a bare number is an ALPHA for the sweep's own vector
            values["steer"] = steer_variant(str(self.settings.get("steer", "")), str(dict(variant)["steer"]))
        settings = settings_from(values)
        if "temperature" not in values:
            settings = settings_from({"temperature": default_temperature(settings.candidates)}, base=settings)
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "envs": list(self.envs),
            "seeds": list(self.seeds),
            "settings": dict(self.settings),
            "max_invalid": self.max_invalid,
            "env_options": {name: dict(options) for name, options in self.env_options.items()},
            "vary": {name: list(values) for name, values in self.vary.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        if not isinstance(data, dict):
            raise StudioError("A sweep's spec must be a JSON object.")
        return cls.build(
            data.get("models") or [],
            data.get("envs") or [],
            data.get("seeds") or [],
            data.get("settings") or {},
            data.get("max_invalid", 10),
            data.get("env_options") or {},
            data.get("vary") or {},
        )

    def step_budget(self) -> int:
        """The most environment steps the sweep can take: every cell's step limit (its variant's, the
        sweep's, else its environment's), summed; what a server's budget for web-started work checks."""
        from studio.envs.registry import default_max_steps

        limits = {env: default_max_steps(env) for env in self.envs}
        total = 0
        for cell in self.cells():
            chosen = dict(cell.variant).get("max_steps") or self.settings.get("max_steps")
            total += int(chosen) if chosen else limits[cell.env]
        return total

    def check_envs(self) -> None:
        """Make each environment once: an unknown name or a missing package is one line before anything runs."""
        from studio.envs.registry import make_env

        for env in self.envs:
            made = make_env(env, self.options_of(env))
            made.close()

    def check_verifiers(self) -> None:
        """Every verifier the sweep uses can run now (a trained one is registered): one line before anything runs."""
        _check_verifiers([self.settings.get("verifier", "first"), *self.vary.get("verifier", ())], registered=True)

    def options_of(self, env: str) -> dict[str, Any]:
        """The options ``env`` is made with in this sweep."""
        return dict(self.env_options.get(env, {}))


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did."""

    completed: int = 0
    """Cells run to the end in this call."""
    failed: list[str] = field(default_factory=list)
    """One line per cell that could not run (the others went on)."""
    stopped: bool = False


#: Loads a model by name (the registry's load with its progress), for the model-driven cells.
ModelLoader = Callable[[str], Backend]
#: Hears each finished cell: the cell, and its episode or one-line error.
CellListener = Callable[[SweepCell, "Episode | StudioError"], None]


def _policy_factory(model: str, settings: EpisodeSettings, load_model: ModelLoader) -> tuple[Backend | None, Callable]:
    """The backend a model's cells share (None for scripted policies) and what makes one cell's policy."""
    from studio.policies import policy_from_settings

    if model in SCRIPTED_MODELS:
        return None, lambda _acting: policy_from_settings(settings, scripted=model)
    return load_model(model), lambda acting: policy_from_settings(settings, acting)


def cell_config(spec: SweepSpec, settings: EpisodeSettings) -> RunnerConfig:
    """How a sweep's episodes run (its step and invalid-action limits; no frames)."""
    return RunnerConfig(max_steps=settings.max_steps, max_invalid_actions=spec.max_invalid, record_frames=False)


def run_cell(
    spec: SweepSpec,
    sweep_id: str,
    cell: SweepCell,
    policy: Any,
    sinks: list[Sink],
    config: RunnerConfig,
    stop: threading.Event,
) -> Episode:
    """One cell's episode, each step through ``sinks``, tagged with the sweep before its first step is
    stored; when ``stop`` is set it ends after its current step as :data:`STOPPED` (incomplete)."""
    runner = EpisodeRunner(cell.env, policy, spec.options_of(cell.env), sinks=sinks, config=config)
    episode = runner.reset(seed=cell.seed)
    episode.sweep, episode.sweep_cell = sweep_id, cell.index  # before its first step is stored
    for _step in runner.steps():
        if stop.is_set():
            break
    if not episode.done:
        runner.abandon(STOPPED)
    return episode


def cell_failure(cell: SweepCell, error: object) -> str:
    """The line a failed cell gets in a sweep's outcome."""
    return f"{cell.label} on {cell.env} seed {cell.seed}: {error}"


def run_sweep(
    spec: SweepSpec,
    sweep_id: str,
    sinks: list[Sink],
    load_model: ModelLoader,
    skip: set[int] | frozenset[int] = frozenset(),
    parallel: int = 1,
    stop: threading.Event | None = None,
    on_done: CellListener | None = None,
) -> SweepOutcome:
    """Run the cells of ``spec`` not in ``skip`` in this process, each stored through ``sinks`` tagged
    ``sweep_id`` (:mod:`studio.executors` runs them elsewhere).

    ``parallel`` episodes of one model run side by side. When ``stop`` is set, running episodes end
    after their current step as :data:`STOPPED` (incomplete: a resume runs them again) and no new
    cell starts.
    """
    stop = stop or threading.Event()
    outcome = SweepOutcome()
    shared = [LockedSink(sink) for sink in sinks]
    todo = [cell for cell in spec.cells() if cell.index not in skip]
    for model, variant in dict.fromkeys((cell.model, cell.variant) for cell in todo):
        if stop.is_set():
            break
        settings = spec.episode_settings(variant)
        config = cell_config(spec, settings)
        backend, make = _policy_factory(model, settings, load_model)

        def job_for(cell: SweepCell) -> Callable[[Backend | None], Episode | None]:
            def job(acting: Backend | None) -> Episode | None:
                if stop.is_set():
                    return None
                return run_cell(spec, sweep_id, cell, make(acting), shared, config, stop)

            return job

        cells = [cell for cell in todo if (cell.model, cell.variant) == (model, variant)]

        def finished(index: int, result: Episode | StudioError | None, cells: list[SweepCell] = cells) -> None:
            if result is None:
                return
            if isinstance(result, StudioError):
                outcome.failed.append(cell_failure(cells[index], result))
            elif result.complete:
                outcome.completed += 1
            if on_done is not None:
                on_done(cells[index], result)

        run_parallel([job_for(cell) for cell in cells], backend, parallel, on_done=finished)
    outcome.stopped = stop.is_set()
    return outcome


def policy_for_cell(spec: SweepSpec, cell: SweepCell, load_model: ModelLoader) -> tuple[Any, RunnerConfig]:
    """The policy one cell acts with (its model loaded by ``load_model``) and how its episode runs:
    what a worker elsewhere needs to run the cell as :func:`run_sweep` would."""
    settings = spec.episode_settings(cell.variant)
    backend, make = _policy_factory(cell.model, settings, load_model)
    return make(backend), cell_config(spec, settings)


@dataclass
class SweepProgress:
    """Where a background sweep stands (what a progress bar shows)."""

    sweep_id: str
    total: int
    done: int
    running: bool = True
    stopped: bool = False
    failed: list[str] = field(default_factory=list)
    message: str = ""
    error: str | None = None
    where: str = ""  # where the cells run when not in this process: a Ray cluster's description


class SweepJob:
    """One sweep running in a background thread: it outlives the page that started it; Stop ends it."""

    def __init__(self, sweep_id: str, total: int, done: int) -> None:
        self.progress = SweepProgress(sweep_id, total, done)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, work: Callable[[threading.Event, CellListener], SweepOutcome]) -> None:
        """Run ``work(stop, on_done)`` in a daemon thread, counting the cells it finishes."""

        def count(_cell: SweepCell, result: Episode | StudioError) -> None:
            with self._lock:
                if isinstance(result, Episode) and result.complete:
                    self.progress.done += 1
                self.progress.message = f"{_cell.label} on {_cell.env}, seed {_cell.seed}"

        def main() -> None:
            try:
                outcome = work(self._stop, count)
                with self._lock:
                    self.progress.failed, self.progress.stopped = outcome.failed, outcome.stopped
            except StudioError as exc:
                self.progress.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a background thread has no caller: the page shows it
                self.progress.error = f"The sweep failed: {type(exc).__name__}: {str(exc)[:200]}"
            finally:
                self.progress.running = False

        threading.Thread(target=main, name=f"sweep-{self.progress.sweep_id}", daemon=True).start()

    def stop(self) -> None:
        """Ask the sweep to stop: running episodes end after their current step, nothing new starts."""
        self._stop.set()

    def snapshot(self) -> SweepProgress:
        """A copy of the progress (read from another thread)."""
        with self._lock:
            return dataclasses.replace(self.progress, failed=list(self.progress.failed))


def sweep_results(
    spec: SweepSpec, episodes: Iterable[Episode], seed: int = 0, env: str | None = None
) -> dict[str, Any]:
    """A sweep's complete episodes as every view shows them (the CLI, the Compare tab, reports): a results
    row per model (with its varied settings) and environment, and the paired tests of every two models
    on the cells they share (:func:`studio.evaluation.compare.comparison`: the latest episode per cell counts).
    ``env`` keeps one environment, for the table and the tests alike."""
    from studio.evaluation.compare import comparison

    cells = spec.cells()
    models_of = {cell.index: cell.label for cell in cells}
    mine = [e for e in episodes if e.sweep_cell in models_of and e.complete]

    def model_of(episode: Episode) -> str:
        return models_of[episode.sweep_cell]  # type: ignore[index]

    labels = list(dict.fromkeys(cell.label for cell in cells))
    compared = comparison(mine, model_of, env=env, seed=seed, order=labels)
    total = spec.size if env is None else spec.size // len(spec.envs)
    verifiers = [spec.settings.get("verifier", "first"), *spec.vary.get("verifier", ())]
    trained = trained_in(list(spec.models), verifiers)  # what each trained arm was trained on
    return {"cells": total, "complete": compared["selected"], **compared, "trained": trained}
