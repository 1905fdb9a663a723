"""Comparing models: ``sweep`` and ``sweeps`` (models x environments x seeds, resumable), ``compare`` (results and paired tests) and ``crossscore`` (an episode under another model)."""

from __future__ import annotations

import argparse
import json
import time
import sys
from typing import Any

from agent_studio.cli.options import (
    Command,
    add_db_argument,
    add_executor_arguments,
    add_model_load_arguments,
    add_setting_flags,
    cli_executor,
    load_cli_model,
    open_cli_store,
    plural,
    positive_int,
    sweep_env_option,
)
from agent_studio.cli.run import print_episode_line
from studio.errors import StudioError


def sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    """``sweep``'s flags."""
    sweep.add_argument(
        "--models", default=None, metavar="A,B", help="expert, random, default, hub ids... (comma-separated)"
    )
    sweep.add_argument("--envs", default=None, metavar="E1,E2", help="registered environments (comma-separated)")
    sweep.add_argument("--seeds", default=None, metavar="0-49", help="seeds: a range, a list, or both (0-9,20)")
    sweep.add_argument(
        "--env-opt",
        type=sweep_env_option,
        action="append",
        default=[],
        metavar="ENV:NAME=VALUE",
        help="an option of one of the environments (repeatable), e.g. gridworld:difficulty=medium",
    )
    sweep.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="compare values of a model setting (repeatable: every combination), e.g. temperature=0,0.7",
    )
    sweep.add_argument("--name", default=None, help="the sweep's name (default: sweep- and its id's start)")
    sweep.add_argument("--resume", default=None, metavar="NAME", help="run the cells a stopped or killed sweep lacks")
    sweep.add_argument(
        "--parallel", type=positive_int, default=4, help="episodes of one model side by side (default 4)"
    )
    sweep.add_argument(
        "--max-invalid", type=positive_int, default=10, help="invalid actions before an episode is cut (default 10)"
    )
    sweep.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    sweep_model = sweep.add_argument_group("models (for the model-driven cells)")
    from studio.evaluation.sweep import SWEEP_SETTINGS

    add_setting_flags(sweep, sweep_model, only=SWEEP_SETTINGS)
    add_model_load_arguments(sweep_model)
    add_executor_arguments(sweep)
    add_db_argument(sweep)


def sweeps_arguments(sweeps: argparse.ArgumentParser) -> None:
    """``sweeps``'s flags."""
    sweeps.add_argument("--json", action="store_true", help="one JSON object per sweep")
    add_db_argument(sweeps)


def compare_arguments(compare: argparse.ArgumentParser) -> None:
    """``compare``'s flags."""
    compare.add_argument(
        "sweep", nargs="?", default=None, metavar="SWEEP", help="a sweep's name: its results and paired tests"
    )
    compare.add_argument("--models", default=None, metavar="A,B", help="two model ids or policy names, as stored")
    compare.add_argument("--env", default=None, help="only this environment")
    compare.add_argument("--json", action="store_true", help="one JSON object")
    add_db_argument(compare)


def crossscore_arguments(cross: argparse.ArgumentParser) -> None:
    """``crossscore``'s flags."""
    cross.add_argument("episode", metavar="EPISODE", help="a stored episode's id")
    cross.add_argument("--model", required=True, help="the scoring model (default, a hub id, a folder, scheme:NAME)")
    add_model_load_arguments(cross)
    cross.add_argument("--json", action="store_true", help="one JSON object per step (with every token)")
    add_db_argument(cross)


#: Stored episodes a comparison reads at most per model.
COMPARE_LIMIT = 10_000


def cmd_compare(args: argparse.Namespace) -> int:
    """A sweep's results (``compare SWEEP``), or two models' stored episodes (``--models A,B``); either
    way the latest finished episode per model, environment, options, seed and settings counts, and
    ``--env`` filters the table and the paired tests alike."""
    from studio.evaluation.compare import comparison
    from studio.models.resolve import model_ids

    if args.sweep is not None:
        if args.models is not None:
            raise StudioError("Give a sweep or --models, not both.")
        from studio.evaluation.sweep import sweep_results

        store = open_cli_store(args, create=False)
        record = store.sweeps.get(args.sweep)
        results = sweep_results(record.spec, store.sweeps.episodes_of(record.id), env=args.env)
        print_results({"sweep": record.name, **results}, args.json)
        return 0
    names = [name.strip() for name in (args.models or "").split(",") if name.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise StudioError(
            "Give a sweep's name, or --models with two different names separated by a comma, e.g. --models default,expert."
        )
    store = open_cli_store(args, create=False)
    episodes, named = [], {}
    for name in names:
        # A model is found by the name it ran under and by the id that name resolves to (default:
        # HuggingFaceTB/SmolLM2-135M-Instruct); a scripted policy by its name.
        found: dict[str, Any] = {}
        for model_id in model_ids(name):
            for row in store.episodes.summaries(env=args.env, model=model_id, limit=COMPARE_LIMIT):
                found[row.id] = row
        if not found:
            found = {row.id: row for row in store.episodes.summaries(env=args.env, policy=name, limit=COMPARE_LIMIT)}
        ids = [row.id for row in found.values() if row.ended_at is not None and row.id not in named]
        finished = [e for e in (store.episodes.get(episode_id) for episode_id in ids) if e.complete]
        if not finished:
            raise StudioError(f"No finished episode of {name[:80]!r}" + (f" on {args.env}." if args.env else "."))
        named.update((episode.id, name) for episode in finished)
        episodes += finished
    results = comparison(episodes, lambda episode: named[episode.id], env=args.env, order=names)
    print_results({"models": names, **results}, args.json)
    return 0


def print_results(results: dict[str, Any], as_json: bool) -> None:
    """``compare``'s and ``sweep``'s output: a line per model (arm) and environment, then the paired tests."""
    if as_json:
        print(json.dumps(results))
        return
    for row in results["results"]:
        progress = "" if row["progress_rate"] is None else f"  progress {row['progress_rate']:.0%}"
        if row["success_rate"] is None:
            success = "success n/a (the environment has no notion of success)"
        else:
            success = (
                f"success {row['successes']}/{row['success_known']} = {row['success_rate']:.0%} "
                f"[{row['success_low']:.0%}, {row['success_high']:.0%}]"
            )
        print(
            f"{row['model']}  {row['env_label']}  {success}  episodes {row['episodes']}  "
            f"return {row['mean_return']:.3g}  steps {row['mean_steps']:.1f}  invalid {row['invalid_rate']:.0%}{progress}"
        )
    for row in results.get("diagnostics") or []:
        print(f"what went wrong: {row['model']}  {row['env_label']}  ({row['steps']} steps)")
        for reason in row["reasons"]:
            where = ", ".join(f"{e['episode'][:8]}@{e['step']}" for e in reason["examples"])
            print(f"  {reason['count']:>4}  {reason['kind']:<7} {reason['reason']}  (e.g. {where})")
        if row["other"]:
            print(f"  {row['other']:>4}  other reasons")
    for label, trained in (results.get("trained") or {}).items():
        print(f"{label}: {trained['line']}")
    for paired in results["paired"]:
        first, second = paired["first"], paired["second"]
        if not paired["pairs"]:
            print(f"{first} vs {second}: no (env, options, seed) run by both: nothing to pair")
            continue
        print(
            f"{first} vs {second}, paired on {paired['pairs']} (env, options, seed): only {first} succeeded "
            f"{paired['only_first']}, only {second} {paired['only_second']}, McNemar exact p = {paired['mcnemar_p_text']}"
        )
        if paired["returns"] is not None:
            r = paired["returns"]
            print(
                f"  return difference {r['mean_difference']:.3g} [{r['low']:.3g}, {r['high']:.3g}], "
                f"bootstrap p = {r['p_text']}"
            )


def sweep_spec_from_args(args: argparse.Namespace) -> Any:
    """The spec ``sweep`` was given (one line for what is missing or wrong)."""
    from studio.evaluation.sweep import SWEEP_SETTINGS, SweepSpec, parse_vary

    missing = [
        flag for flag, value in (("--models", args.models), ("--envs", args.envs), ("--seeds", args.seeds)) if not value
    ]
    if missing:
        raise StudioError(f"A new sweep needs {', '.join(missing)} (or --resume NAME to go on with a stored one).")
    settings = {name: getattr(args, name) for name in SWEEP_SETTINGS if getattr(args, name, None) is not None}
    env_options: dict[str, dict[str, Any]] = {}
    for env, name, value in args.env_opt:
        env_options.setdefault(env, {})[name] = value
    vary = parse_vary(";".join(args.vary))
    return SweepSpec.build(
        args.models.split(","), args.envs.split(","), args.seeds, settings, args.max_invalid, env_options, vary
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a new sweep, or the cells a stored one lacks (``--resume``); a line per episode, then the results."""
    import threading

    from studio.models.registry import ModelRegistry

    store = open_cli_store(args)
    registry = ModelRegistry()
    stop = threading.Event()
    with cli_executor(args) as executor:
        return _sweep_with(args, store, registry, stop, executor)


def _sweep_with(args: argparse.Namespace, store: Any, registry: Any, stop: Any, executor: Any) -> int:
    """``sweep`` once its store and executor are open."""
    from agent_studio.storage.sweeps import SweepLease
    from studio.evaluation.sweep import SCRIPTED_MODELS

    # One runner per sweep: a resume while another process runs it is refused, a dead runner's taken over.
    lease = SweepLease(store.sweeps, on_lost=stop.set)
    if args.resume is not None:
        if args.models or args.envs or args.seeds or args.name or args.vary:
            raise StudioError(
                "--resume goes on with the stored sweep as it was made: leave out --models, --envs, --seeds, --vary and --name."
            )
        record = store.sweeps.get(args.resume)
        lease.acquire(record.id)
    else:
        spec = sweep_spec_from_args(args)
        spec.check_envs()  # a bad environment or model name fails before anything is stored or loaded
        spec.check_verifiers()
        for model in spec.models:
            if model not in SCRIPTED_MODELS:
                registry.check(model)
        record = store.sweeps.create(spec, args.name, lease=lease)
        lease.hold(record.id)
    try:
        return run_sweep_cells(args, store, registry, record, stop, executor=executor)
    finally:
        lease.release()


class Pace:
    """Cells finished of those to run, and the time left at the pace so far: a line every tenth (or
    every cell of a short run)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = time.monotonic()
        self.every = max(1, total // 10)

    def tick(self) -> str:
        self.done += 1
        if self.done % self.every and self.done != self.total:
            return ""
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        return f"{self.done}/{self.total} episodes run, about {left:.0f} s left"


def run_sweep_cells(
    args: argparse.Namespace,
    store: Any,
    registry: Any,
    record: Any,
    stop: Any,
    show_results: bool = True,
    executor: Any = None,
) -> int:
    """The part of ``sweep`` that runs once the sweep's lease is held: remove what an interrupted run
    left, run the missing cells (on ``executor``; None: here), print the results (unless ``show_results``
    is False: the caller does)."""
    from studio.evaluation.sweep import sweep_results
    from studio.executors.sweeps import run_sweep_with

    spec = record.spec
    removed, done = store.sweeps.resume(record.id)
    if removed:
        print(f"removed {plural(removed, 'incomplete episode')} of the interrupted run", file=sys.stderr)
    print(
        f"sweep {record.name}: {len(done)} of {spec.size} episodes already done; running {spec.size - len(done)}",
        file=sys.stderr,
    )

    def load(name: str) -> Any:
        return load_cli_model(registry, name, args)

    pace = Pace(spec.size - len(done))

    def show(cell: Any, result: Any) -> None:
        if isinstance(result, StudioError):
            print(f"{cell.label} {cell.env} seed={cell.seed}: failed: {result}", file=sys.stderr, flush=True)
        elif not args.json:
            print_episode_line(result, False)
        line = pace.tick()
        if line:
            print(f"sweep {record.name}: {line}", file=sys.stderr, flush=True)

    outcome = run_sweep_with(
        executor, spec, record.id, [store.episodes.sink()], load, done, args.parallel, stop, on_done=show
    )
    if stop.is_set():
        raise StudioError(
            f"Sweep {record.name} stopped: another process took it over (this one was silent past the lease's limit)."
        )
    if show_results:
        print_results({"sweep": record.name, **sweep_results(spec, store.sweeps.episodes_of(record.id))}, args.json)
        print(f"stored in {store.url} as sweep {record.name}", file=sys.stderr)
    if outcome.failed:
        raise StudioError(
            f"{len(outcome.failed)} episodes of the sweep failed (the others are stored); {outcome.failed[0]}"
        )
    return 0


def cmd_crossscore(args: argparse.Namespace) -> int:
    """Score an episode's outputs under ``--model``, store the scores, and print a line (or an object) per step."""
    from studio.evaluation.crossscore import check_scorable, cross_score
    from studio.models.registry import ModelRegistry

    store = open_cli_store(args, create=False)
    episode = store.episodes.get(
        args.episode
    )  # a missing episode, or one with nothing to score, fails before a model loads
    check_scorable(episode)
    backend = load_cli_model(ModelRegistry(), args.model, args)
    scores = cross_score(episode, backend)
    store.cross_scores.save(scores)
    for score in scores:
        if args.json:
            print(json.dumps(score.to_dict()))
            continue
        own = "" if score.own_total is None else f"  A {score.own_total:.2f}  B - A {score.difference:+.2f}"
        prefers = "" if score.preferred is None else f"  A took {score.action!r}, B prefers {score.preferred!r}"
        print(f"step {score.step_index}: B log P {score.total:.2f}{own}{prefers}")
    print(f"stored {plural(len(scores), 'step score')} of {backend.card.id} in {store.url}", file=sys.stderr)
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    for record in store.sweeps.list():
        done = len(store.sweeps.complete_cells(record.id))
        if args.json:
            print(json.dumps({**record.to_dict(), "complete": done}))
        else:
            spec = record.spec
            print(
                f"{record.name}  {done}/{record.cells} episodes  models {','.join(spec.models)}  "
                f"envs {','.join(spec.envs)}  {len(spec.seeds)} seeds  ({record.created_at})"
            )
    return 0


SWEEP = Command(
    "sweep",
    "models x environments x seeds as stored episodes tagged with the sweep; resumable (--resume NAME)",
    sweep_arguments,
    cmd_sweep,
)
SWEEPS = Command("sweeps", "list the stored sweeps and how far each got", sweeps_arguments, cmd_sweeps)
COMPARE = Command(
    "compare",
    "two models (or policies) on the same seeds: a results table and paired tests",
    compare_arguments,
    cmd_compare,
)
CROSSSCORE = Command(
    "crossscore",
    "score a stored episode's outputs under another model: its logprob of every token, and the action it prefers",
    crossscore_arguments,
    cmd_crossscore,
)
