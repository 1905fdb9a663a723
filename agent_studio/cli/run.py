"""Episodes from the command line: ``run`` (headless, stored step by step) and ``coverage`` (best-of-K over seeds)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent_studio.cli.options import (
    Command,
    add_run_arguments,
    k_list,
    load_cli_model,
    open_cli_store,
    output_file,
    settings_from_args,
    verifier_list,
)
from studio.errors import StudioError


def run_arguments(run: argparse.ArgumentParser) -> None:
    """``run``'s flags."""
    add_run_arguments(run)


def coverage_arguments(coverage: argparse.ArgumentParser) -> None:
    """``coverage``'s flags."""
    add_run_arguments(coverage)
    coverage.add_argument(
        "--ks",
        type=k_list,
        default=[1, 2, 4, 8],
        metavar="K,K,...",
        help="the K values to compare (default 1,2,4,8; each from 1 to 16)",
    )
    coverage.add_argument(
        "--verifiers",
        type=verifier_list,
        default=None,
        metavar="V,V,...",
        help="compare these verifiers, a line each in the plot (default: --verifier), e.g. first,likelihood,oracle",
    )
    coverage.add_argument(
        "--plot",
        type=output_file,
        default=None,
        metavar="FILE.html",
        help="write the curve as a self-contained plotly page (.html) or an image (.png, .svg)",
    )


def cli_models(args: argparse.Namespace) -> tuple[Any, Any]:
    """The acting model and the judge (``--judge-model``, else the acting model, with ``--verifier
    judge``) of ``run``/``coverage``, loaded with progress on stderr; (None, None) without a model policy."""
    if args.policy != "react":
        return None, None
    from studio.models.registry import ModelRegistry

    registry = ModelRegistry()
    backend = load_cli_model(registry, args.model, args)
    judge = None
    if "judge" in (getattr(args, "verifiers", None) or [args.verifier]):
        judge = backend if args.judge_model is None else registry.load(args.judge_model, device=args.device)
    return backend, judge


def cli_policy_factory(args: argparse.Namespace, settings: Any, models: tuple[Any, Any]) -> Any:
    """What makes the policy of one episode, given the backend to act with (the loaded model, or
    its lockstep member)."""
    from studio.policies import policy_from_settings

    if args.policy != "react":
        return lambda _backend: policy_from_settings(settings, scripted=args.policy)
    judge = models[1]
    return lambda acting: policy_from_settings(settings, acting, judge=judge)


def open_run(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """``run``'s and ``coverage``'s environment, store and sinks (the store, ``--out``), shared by
    episodes side by side. A bad environment, then a bad database, fails before a model loads."""
    from studio.envs.registry import make_env
    from studio.episodes.rollouts import LockedSink
    from studio.episodes.runner import JsonlSink

    env = make_env(args.env, dict(args.env_opt))
    store = open_cli_store(args)
    sinks = [LockedSink(store.episodes.sink())] + ([LockedSink(JsonlSink(args.out))] if args.out else [])
    return env, store, sinks


def cmd_run(args: argparse.Namespace) -> int:
    env, store, sinks = open_run(args)
    settings = settings_from_args(args)
    models = cli_models(args)
    failures = run_episodes(args, env, settings, models, sinks, lambda episode: print_episode_line(episode, args.json))
    print(f"stored in {store.url}", file=sys.stderr)
    if failures:
        raise StudioError(f"{len(failures)} of {args.episodes} episodes failed (the others are stored); {failures[0]}")
    return 0


def run_episodes(
    args: argparse.Namespace, env: Any, settings: Any, models: tuple[Any, Any], sinks: list[Any], show: Any
) -> list[str]:
    """Run ``args.episodes`` episodes (seeds from ``settings.seed``) side by side (``--parallel``),
    calling ``show(episode)`` in seed order as soon as each can be; the failures, one line each."""
    from studio.episodes.rollouts import run_parallel
    from studio.episodes.runner import EpisodeRunner, RunnerConfig

    config = RunnerConfig(max_steps=settings.max_steps, max_invalid_actions=args.max_invalid, record_frames=args.frames)
    factory = cli_policy_factory(args, settings, models)
    backend = models[0]
    factory(backend).reset(env, settings.seed)  # a policy that cannot act in this environment fails once, here

    def episode_job(seed: int) -> Any:
        def job(acting: Any) -> Any:
            runner = EpisodeRunner(args.env, factory(acting), dict(args.env_opt), sinks=sinks, config=config)
            runner.reset(seed=seed)
            return runner.run()

        return job

    finished: dict[int, Any] = {}
    failures: list[str] = []
    next_line = 0

    def report(index: int, outcome: Any) -> None:  # lines in seed order, each as soon as it can be
        nonlocal next_line
        finished[index] = outcome
        while next_line in finished:
            done = finished.pop(next_line)
            if isinstance(done, StudioError):
                failures.append(f"seed {settings.seed + next_line}: {done}")
            else:
                show(done)
            next_line += 1

    jobs = [episode_job(settings.seed + offset) for offset in range(args.episodes)]
    run_parallel(jobs, backend, args.parallel, on_done=report)
    return failures


def cmd_coverage(args: argparse.Namespace) -> int:
    """Best-of-K coverage: ``run``'s episodes once per K over the same seeds, a line per K, a plot."""
    from studio.scaling.coverage import coverage_points
    from studio.settings import SAMPLING_FOR_CANDIDATES, settings_from

    if args.plot is not None and not args.plot.lower().endswith(".html"):
        raise StudioError(f"--plot writes a plotly page: give a file ending in .html (got {args.plot[-40:]!r}).")
    if args.policy != "react":
        raise StudioError("Coverage compares K sampled outputs a step: use --policy react.")
    env, store, sinks = open_run(args)
    base = settings_from_args(args)
    # Every K samples at one temperature (K = 1 too): greedy K = 1 against sampled K > 1 would mix
    # two effects in one curve.
    temperature = args.temperature if args.temperature is not None else SAMPLING_FOR_CANDIDATES
    models = cli_models(args)
    verifiers = args.verifiers or [base.verifier]
    points = []
    for verifier in verifiers:
        for k in args.ks:
            settings = settings_from({"candidates": k, "temperature": temperature, "verifier": verifier}, base=base)
            episodes: list[Any] = []
            failures = run_episodes(args, env, settings, models, sinks, episodes.append)
            if failures:
                raise StudioError(f"K={k}: {len(failures)} of {args.episodes} episodes failed; {failures[0]}")
            (point,) = coverage_points(episodes)
            points.append(point)
            low, high = point.interval
            if args.json:
                print(json.dumps(point.to_dict()), flush=True)
            else:
                print(
                    f"K={k:<3} {point.verifier:<10} success {point.successes}/{point.episodes} = {point.rate:4.0%}  "
                    f"(95% CI {low:.0%}-{high:.0%})",
                    flush=True,
                )
    if args.plot is not None:
        from studio.viz.plots import coverage_figure

        options = "".join(f" {name}={value}" for name, value in args.env_opt)
        title = (
            f"Best-of-K coverage on {args.env}{options}: {args.episodes} seeds from {base.seed}, "
            f"temperature {temperature:g}"
        )
        coverage_figure(points, title).write_html(args.plot, include_plotlyjs=True)
        print(f"wrote {args.plot}", file=sys.stderr)
    print(f"stored in {store.url}", file=sys.stderr)
    return 0


def print_episode_line(episode: Any, as_json: bool) -> None:
    """``run``'s line for a finished episode (or its summary as one JSON object)."""
    if as_json:
        print(json.dumps(episode.summary()), flush=True)
        return
    outcome = "success" if episode.success else "failure"
    print(
        f"{episode.id}  {episode.env} seed={episode.seed} policy={episode.policy}  "
        f"{outcome}  return={episode.total_return:g}  steps={episode.length}  ({episode.end_reason})",
        flush=True,
    )


RUN = Command("run", "run episodes headless and print one summary line per episode", run_arguments, cmd_run)
COVERAGE = Command(
    "coverage",
    "best-of-K coverage: success rate over seeds for each K (the same episodes as run --candidates K)",
    coverage_arguments,
    cmd_coverage,
)
