"""Sharing an episode: ``video`` (MP4 or GIF replay) and ``report`` (one self-contained HTML page)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent_studio.cli.options import (
    Command,
    add_db_argument,
    open_cli_store,
    output_file,
    print_progress,
)
from studio.errors import StudioError


def video_arguments(video: argparse.ArgumentParser) -> None:
    """``video``'s flags."""
    video.add_argument("episode", metavar="EPISODE", help="a stored episode's id")
    video.add_argument("--out", type=output_file, required=True, metavar="FILE.mp4", help=".mp4 or .gif (replaced)")
    video.add_argument("--fps", type=float, default=2.0, help="steps per second (default 2)")
    video.add_argument("--compare", default=None, metavar="EPISODE", help="another episode, shown side by side")
    video.add_argument(
        "--attention-model",
        default=None,
        metavar="MODEL",
        help="lay over each step's frame where this model looked when it chose the action (e.g. default)",
    )
    add_db_argument(video)


def report_arguments(report: argparse.ArgumentParser) -> None:
    """``report``'s flags."""
    report.add_argument("episode", nargs="?", default=None, metavar="EPISODE", help="a stored episode's id")
    report.add_argument("--sweep", default=None, metavar="NAME", help="a report of a sweep's results instead")
    report.add_argument("--out", type=output_file, required=True, metavar="FILE.html", help="the page (replaced)")
    report.add_argument("--compare", default=None, metavar="EPISODE", help="another episode, side by side")
    add_db_argument(report)


def episode_and_compare(args: argparse.Namespace, store: Any = None) -> tuple[Any, Any]:
    """The stored episode ``args.episode`` and, with ``--compare``, the other one (one line if missing)."""
    store = store or open_cli_store(args, create=False)
    return store.episodes.get(args.episode), store.episodes.get(args.compare) if args.compare else None


def cmd_video(args: argparse.Namespace) -> int:
    from studio.viz.video import episode_video

    episode, compare = episode_and_compare(args)
    attention = None
    if args.attention_model is not None:
        from studio.models.registry import ModelRegistry

        attention = ModelRegistry().load(args.attention_model, progress=print_progress)
    print(json.dumps(episode_video(episode, args.out, fps=args.fps, compare=compare, attention=attention).to_dict()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A self-contained page of an episode (with its stored values and cross-scores), or of a sweep."""
    from agent_studio.storage.reports import report_extras
    from studio.viz.report import sweep_report, write_page, write_report

    if (args.episode is None) == (args.sweep is None):
        raise StudioError("Give an episode's id, or --sweep NAME, to report on.")
    if args.sweep is not None:
        from studio.evaluation.sweep import sweep_results

        store = open_cli_store(args, create=False)
        record = store.sweeps.get(args.sweep)
        results = sweep_results(record.spec, store.sweeps.episodes_of(record.id))
        print(json.dumps(write_page(sweep_report(record.name, record.spec, results), args.out)))
        return 0
    store = open_cli_store(args, create=False)
    episode, compare = episode_and_compare(args, store)
    print(json.dumps(write_report(episode, args.out, compare=compare, **report_extras(store, episode.id))))
    return 0


VIDEO = Command(
    "video",
    "an episode's replay as MP4 (H.264) or GIF, each step's action and thought captioned",
    video_arguments,
    cmd_video,
)
REPORT = Command(
    "report",
    "one self-contained HTML file of an episode (or two side by side): no server, no network",
    report_arguments,
    cmd_report,
)


def predict_arguments(parser: argparse.ArgumentParser) -> None:
    """``predict``'s flags."""
    parser.add_argument("episode", metavar="EPISODE", help="a stored episode with action vectors (a LeRobot import)")
    parser.add_argument(
        "--policy",
        default="hold",
        help="hold (the previous recorded action), linear (extrapolated), or MODULE:FUNCTION, a callable "
        "f(step, episode) -> action or K x D chunk from an installed module (the operator's code, never a client's)",
    )
    parser.add_argument("--out", type=output_file, metavar="FILE.html", help="write the worm plot as one page")
    add_db_argument(parser)


def load_predictor(name: str) -> Any:
    """A built-in baseline, or ``MODULE:FUNCTION`` imported from the operator's environment."""
    from studio.evaluation.predicted import BASELINES

    if name in BASELINES:
        return BASELINES[name]
    module, sep, function = name.partition(":")
    if not sep or not module or not function:
        raise StudioError(f"--policy is hold, linear or MODULE:FUNCTION (got {name[:80]!r}).")
    import importlib

    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise StudioError(f"No callable {name[:80]}: {exc}") from None
    if not callable(found):
        raise StudioError(f"{name[:80]} is not callable.")
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    """A policy's predicted actions against an episode's recorded ones: the error, and the worm plot."""
    from studio.evaluation.predicted import predict_actions
    from studio.viz.worm import worm_figure

    store = open_cli_store(args, create=False)
    episode = store.episodes.get(args.episode)
    prediction = predict_actions(episode, load_predictor(args.policy))
    summary = {
        "episode_id": episode.id,
        "policy": args.policy,
        "steps": len(prediction.error),
        "mean_error": float(prediction.error.mean()),
        "mean_abs_error": dict(zip(prediction.names, map(float, prediction.mean_abs_error))),
    }
    if args.out:
        figure = worm_figure(
            prediction, title=f"{episode.instruction} — {args.policy}", fps=(episode.env_options or {}).get("fps")
        )
        figure.write_html(args.out, include_plotlyjs=True, full_html=True)
        summary["out"] = str(args.out)
    print(json.dumps(summary))
    return 0


PREDICT = Command(
    "predict",
    "a policy's predicted actions against an episode's recorded ones (LeRobot): error per step, the worm plot",
    predict_arguments,
    cmd_predict,
)
