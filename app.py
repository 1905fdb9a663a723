"""Agent Studio: the composition root and command line.

The command is ``agent-studio`` once installed (``pip install -e .``); ``python -m agent_studio``
and ``python app.py`` are the same command line.

    agent-studio [serve] [--host H] [--port P] [--db URL]   start the studio web app
    agent-studio envs [--json]                             list environments
    agent-studio models [--json]                           list models that load offline, and model name schemes
    agent-studio run --env NAME [...] [--db URL]            run episodes headless (stored step by step)
    agent-studio import FILE.jsonl [--db URL]               store the episodes of a trace file
    agent-studio pairs --from candidates|episodes [--db URL] make preference pairs
    agent-studio export --format F --out FILE [--db URL]    training data in a registered format (dpo, reward, prm, kto, ...)
    agent-studio stats [--db URL]                           counts and agreement between annotators
    agent-studio hash-password                              a hashed password for serve --auth-file
    agent-studio --version

User errors (unknown environment, bad option, bad seed, ...) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from studio.errors import StudioError
from studio.models.base import DTYPE_NAMES

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see: {self.prog} --help)\n")


def _number(kind: type, low: float | None = None, high: float | None = None, what: str = "a number") -> Any:
    """An argparse type: ``kind`` parsed from the text and checked against the bounds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
        too_low = low is not None and value < low
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _best_of(text: str) -> int:
    """``best-of-K`` as K (1 to 16, as --candidates)."""
    prefix, _, k = text.partition("best-of-")
    if prefix or not k.isdigit() or not 1 <= int(k) <= 16:
        raise argparse.ArgumentTypeError(f"use best-of-K with K from 1 to 16, e.g. best-of-4 (got {text[:40]!r})")
    return int(k)


def _k_list(text: str) -> list[int]:
    """``1,2,4,8`` as a sorted list of distinct K values from 1 to 16."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"use whole numbers separated by commas, e.g. 1,2,4,8 (got {text[:40]!r})"
        ) from None
    if not ks or not all(1 <= k <= 16 for k in ks) or len(ks) > 16:
        raise argparse.ArgumentTypeError(f"each K is a whole number from 1 to 16 (got {text[:40]!r})")
    return ks


def _verifier_list(text: str) -> list[str]:
    """``first,oracle`` as a list of distinct verifier names."""
    from studio.settings import VERIFIERS

    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in VERIFIERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"use verifiers from {', '.join(VERIFIERS)} (got {text[:40]!r})")
    return names


_positive_int = _number(int, 1, what="a positive integer")
_port = _number(int, 0, 65535, what="a port between 0 and 65535")


def _env_option(text: str) -> tuple[str, Any]:
    from studio.envs.registry import parse_cli_value

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text[:40]!r}")
    try:
        return name.strip(), parse_cli_value(value)
    except StudioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sweep_env_option(text: str) -> tuple[str, str, Any]:
    """``ENV:NAME=VALUE`` (the environment may hold colons itself, as gym:FrozenLake-v1 does)."""
    env, separator, option = text.rpartition(":")
    if not separator or not env:
        raise argparse.ArgumentTypeError(f"expected ENV:NAME=VALUE, got {text[:60]!r}")
    name, value = _env_option(option)
    return env, name, value


def _output_file(text: str) -> str:
    """An argparse type for a file to write: not a folder, not under a file (checked before any work is done)."""
    path = Path(text).expanduser().absolute()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {path}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {existing} is not writable")
    return str(path)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The flags of ``run`` (and of ``coverage``, which runs episodes the same way)."""
    run.add_argument(
        "--env",
        required=True,
        help="a registered environment (see `agent-studio envs`), e.g. gridworld or gym:FrozenLake-v1",
    )
    run.add_argument(
        "--env-opt",
        type=_env_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment option (repeatable); see `agent-studio envs`",
    )
    run.add_argument(
        "--policy",
        default="expert",
        choices=["expert", "random", "react"],
        help="who acts (default: expert); react is model-driven",
    )
    run.add_argument("--episodes", type=_positive_int, default=1, help="number of episodes (default 1)")
    run.add_argument(
        "--parallel",
        type=_positive_int,
        default=1,
        help="episodes run side by side (default 1); with --policy react their model calls decode in lockstep, "
        "one batch per token (same episodes as one by one)",
    )
    run.add_argument(
        "--max-invalid", type=_positive_int, default=10, help="invalid actions before an episode is cut (default 10)"
    )
    run.add_argument(
        "--select",
        dest="candidates",
        type=_best_of,
        default=argparse.SUPPRESS,
        metavar="best-of-K",
        help="sample K outputs a step and let --verifier pick the action (the same as --candidates K)",
    )
    run.add_argument(
        "--judge-model",
        default=None,
        metavar="MODEL",
        help="with --verifier judge: the model that judges the outputs (default: the acting model)",
    )
    run.add_argument(
        "--out",
        type=_output_file,
        default=None,
        metavar="FILE.jsonl",
        help="append full episodes (the trace format) to this JSONL file",
    )
    run.add_argument(
        "--frames", action="store_true", help="store a rendered frame on every step of --out (larger files)"
    )
    run.add_argument("--json", action="store_true", help="print one JSON object per episode instead of a text line")
    _add_db_argument(run)
    model = run.add_argument_group("model (with --policy react)")
    model.add_argument(
        "--model",
        default="default",
        help="default (SmolLM2-135M-Instruct, offline), a hub id, a local folder, or scheme:NAME of a registered backend (agent-studio models --schemes)",
    )
    add_setting_flags(run, model)
    add_model_load_arguments(model)


def add_model_load_arguments(group: Any) -> None:
    """How a command line model loads: ``--device``, ``--dtype``, ``--trust-remote-code`` (see :func:`load_cli_model`)."""
    group.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    group.add_argument(
        "--dtype", default="auto", choices=list(DTYPE_NAMES), help="auto: bfloat16 on GPU, float32 on CPU"
    )
    group.add_argument(
        "--trust-remote-code", action="store_true", help="allow a hub model's own Python code to run (off by default)"
    )


def load_cli_model(registry: Any, name: str, args: argparse.Namespace) -> Any:
    """``name`` loaded as :func:`add_model_load_arguments`' flags say, with progress on stderr."""
    return registry.load(
        name, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=print_progress
    )


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``serve`` (the default command) and the commands that work without a browser."""
    from studio import __version__

    parser = OneLineParser(
        prog="agent-studio",
        description="Agent Studio: watch agents act, look inside their decisions, and turn what you see into training data.",
    )
    parser.add_argument("--version", action="version", version=f"agent-studio {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        parser_class=OneLineParser,
        metavar="{serve,envs,models,run,coverage,sweep,sweeps,compare,crossscore,video,report,import,pairs,values,judge,export,stats,hash-password}",
    )

    serve = commands.add_parser("serve", help="start the studio web app (the default command)")
    _add_serve_arguments(serve)

    envs = commands.add_parser("envs", help="list environments, their options and action spaces")
    envs.add_argument(
        "name",
        nargs="?",
        default=None,
        help="make this one (e.g. gym:ALE/Pong-v5) and say how it forks and how success is read",
    )
    envs.add_argument("--env-opt", action="append", default=[], type=_env_option, metavar="NAME=VALUE")
    envs.add_argument("--json", action="store_true", help="one JSON object per environment")

    models = commands.add_parser("models", help="list the models that load without a network")
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    models.add_argument(
        "--schemes",
        action="store_true",
        help="list the kinds of model names instead (registered backends: scripted:, plugins...)",
    )
    models.add_argument(
        "--probe",
        metavar="URL",
        default=None,
        help="ask an inference server (http://HOST:PORT/v1) what it serves and supports, and print it",
    )
    models.add_argument(
        "--prepare",
        action="store_true",
        help="make the default model ready offline first (converts the shipped GGUF once)",
    )

    run = commands.add_parser("run", help="run episodes headless and print one summary line per episode")
    add_run_arguments(run)
    coverage = commands.add_parser(
        "coverage",
        help="best-of-K coverage: success rate over seeds for each K (the same episodes as run --candidates K)",
    )
    add_run_arguments(coverage)
    coverage.add_argument(
        "--ks",
        type=_k_list,
        default=[1, 2, 4, 8],
        metavar="K,K,...",
        help="the K values to compare (default 1,2,4,8; each from 1 to 16)",
    )
    coverage.add_argument(
        "--verifiers",
        type=_verifier_list,
        default=None,
        metavar="V,V,...",
        help="compare these verifiers, a line each in the plot (default: --verifier), e.g. first,likelihood,oracle",
    )
    coverage.add_argument(
        "--plot",
        type=_output_file,
        default=None,
        metavar="FILE.html",
        help="write the curve as a self-contained plotly page (.html) or an image (.png, .svg)",
    )

    load = commands.add_parser(
        "import", help="store the episodes of a JSONL file (the trace format, e.g. from run --out)"
    )
    load.add_argument("file", metavar="FILE.jsonl")
    load.add_argument(
        "--replace",
        action="store_true",
        help="overwrite stored episodes whose content differs (judgements on unchanged steps are kept)",
    )
    _add_db_argument(load)

    video = commands.add_parser(
        "video", help="an episode's replay as MP4 (H.264) or GIF, each step's action and thought captioned"
    )
    video.add_argument("episode", metavar="EPISODE", help="a stored episode's id")
    video.add_argument("--out", type=_output_file, required=True, metavar="FILE.mp4", help=".mp4 or .gif (replaced)")
    video.add_argument("--fps", type=float, default=2.0, help="steps per second (default 2)")
    video.add_argument("--compare", default=None, metavar="EPISODE", help="another episode, shown side by side")
    video.add_argument(
        "--attention-model",
        default=None,
        metavar="MODEL",
        help="lay over each step's frame where this model looked when it chose the action (e.g. default)",
    )
    _add_db_argument(video)

    compare = commands.add_parser(
        "compare", help="two models (or policies) on the same seeds: a results table and paired tests"
    )
    compare.add_argument(
        "sweep", nargs="?", default=None, metavar="SWEEP", help="a sweep's name: its results and paired tests"
    )
    compare.add_argument("--models", default=None, metavar="A,B", help="two model ids or policy names, as stored")
    compare.add_argument("--env", default=None, help="only this environment")
    compare.add_argument("--json", action="store_true", help="one JSON object")
    _add_db_argument(compare)

    sweep = commands.add_parser(
        "sweep",
        help="models x environments x seeds as stored episodes tagged with the sweep; resumable (--resume NAME)",
    )
    sweep.add_argument(
        "--models", default=None, metavar="A,B", help="expert, random, default, hub ids... (comma-separated)"
    )
    sweep.add_argument("--envs", default=None, metavar="E1,E2", help="registered environments (comma-separated)")
    sweep.add_argument("--seeds", default=None, metavar="0-49", help="seeds: a range, a list, or both (0-9,20)")
    sweep.add_argument(
        "--env-opt",
        type=_sweep_env_option,
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
        "--parallel", type=_positive_int, default=4, help="episodes of one model side by side (default 4)"
    )
    sweep.add_argument(
        "--max-invalid", type=_positive_int, default=10, help="invalid actions before an episode is cut (default 10)"
    )
    sweep.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    sweep_model = sweep.add_argument_group("models (for the model-driven cells)")
    from studio.sweep import SWEEP_SETTINGS

    add_setting_flags(sweep, sweep_model, only=SWEEP_SETTINGS)
    add_model_load_arguments(sweep_model)
    _add_db_argument(sweep)

    cross = commands.add_parser(
        "crossscore",
        help="score a stored episode's outputs under another model: its logprob of every token, and the action it prefers",
    )
    cross.add_argument("episode", metavar="EPISODE", help="a stored episode's id")
    cross.add_argument("--model", required=True, help="the scoring model (default, a hub id, a folder, scheme:NAME)")
    add_model_load_arguments(cross)
    cross.add_argument("--json", action="store_true", help="one JSON object per step (with every token)")
    _add_db_argument(cross)

    sweeps = commands.add_parser("sweeps", help="list the stored sweeps and how far each got")
    sweeps.add_argument("--json", action="store_true", help="one JSON object per sweep")
    _add_db_argument(sweeps)

    report = commands.add_parser(
        "report", help="one self-contained HTML file of an episode (or two side by side): no server, no network"
    )
    report.add_argument("episode", nargs="?", default=None, metavar="EPISODE", help="a stored episode's id")
    report.add_argument("--sweep", default=None, metavar="NAME", help="a report of a sweep's results instead")
    report.add_argument("--out", type=_output_file, required=True, metavar="FILE.html", help="the page (replaced)")
    report.add_argument("--compare", default=None, metavar="EPISODE", help="another episode, side by side")
    _add_db_argument(report)

    pairs = commands.add_parser(
        "pairs", help="make preference pairs from stored candidates or episodes, or one pair by hand"
    )
    _add_db_argument(pairs)
    source = pairs.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="source",
        choices=[
            "candidates",
            "episodes",
            "values",
        ],  # PAIR_SOURCES less "manual" (values makes source mc); not imported: the parser starts without the store
        help="candidates: the outputs sampled at each step; episodes: finished episodes on the same env, options and seed; "
        "values: at each step with Monte Carlo values (agent-studio values), the best output against the worst (source mc)",
    )
    source.add_argument(
        "--left", metavar="ID", help="by hand: an episode id, a candidate id or EPISODE_ID:STEP (with --right)"
    )
    pairs.add_argument("--right", metavar="ID", help="the other side of a pair made by hand")
    pairs.add_argument("--env", default=None, help="only this environment")
    pairs.add_argument(
        "--episode",
        action="append",
        default=None,
        metavar="ID",
        help="only these episodes (repeatable; with --from candidates)",
    )
    pairs.add_argument(
        "--different-actions",
        action="store_true",
        help="skip two outputs with the same action (with --from candidates)",
    )
    pairs.add_argument(
        "--min-gap",
        type=float,
        default=0.0,
        help="with --from values: the smallest Q gap that makes a pair (default 0)",
    )
    pairs.add_argument(
        "--min-rollouts", type=int, default=1, help="with --from values: only estimates with this many rollouts or more"
    )
    pairs.add_argument("--settings", default=None, help="with --from values: only estimates with these settings")

    judge = commands.add_parser(
        "judge", help="a model judges the queued pairs it has not judged (blind), as annotator judge:MODEL"
    )
    _add_db_argument(judge)
    judge.add_argument(
        "--model", required=True, help="the judge: any model that can score text (default, a hub id, a URL...)"
    )
    judge.add_argument("--limit", type=_positive_int, default=None, help="at most this many pairs (default: all)")
    judge.add_argument("--kind", choices=["step", "trajectory"], default=None, help="only pairs of this kind")
    judge.add_argument("--env", default=None, help="only pairs on this environment")
    judge.add_argument("--source", default=None, help="only pairs from this source (candidates, episodes, manual, mc)")

    values = commands.add_parser(
        "values",
        help="Monte Carlo step values: Q of each output of a stored step, by rollouts from its snapshot",
    )
    _add_db_argument(values)
    values.add_argument("--episode", required=True, metavar="ID", help="a stored episode")
    values.add_argument("--step", type=int, default=None, help="one step (default: every step)")
    values.add_argument("--rollouts", type=int, default=4, help="rollouts per output (default 4)")
    values.add_argument(
        "--rollout-policy",
        choices=["expert", "random", "react"],
        default="expert",
        help="who acts in the rollouts (react: --model)",
    )
    values.add_argument("--horizon", type=int, default=None, help="steps a rollout may take (default: to the end)")
    values.add_argument(
        "--max-steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the step limit rollouts end at, as for run (default: the episode's own)",
    )
    values.add_argument("--seed", type=int, default=0, help="rollout i uses seed+i (default 0)")
    values.add_argument(
        "--discount",
        type=float,
        default=1.0,
        help="reward t steps after the action counts discount**t (default 1: none)",
    )
    values.add_argument(
        "--mc-labels",
        type=float,
        default=None,
        metavar="THRESHOLD",
        help="also label each step good/bad by its taken output's success fraction (annotator mc:SETTINGS)",
    )
    values.add_argument("--model", default="default", help="with --rollout-policy react: the model")
    values.add_argument(
        "--parallel",
        type=_positive_int,
        default=1,
        help="rollouts run side by side (default 1); a model's calls then decode in lockstep, one batch per token",
    )
    values.add_argument("--json", action="store_true", help="one JSON object per estimate")

    export = commands.add_parser(
        "export",
        help="write training data in a registered format (TRL's dpo, reward, prm, kto; episodes; ...)",
        formatter_class=ExportHelp,
    )
    _add_db_argument(export)
    # The registry (built-ins and installed packages' formats) is read when an export is parsed or
    # its help shown, not to build the parser: every other command starts without the store.
    export.add_argument("--format", required=True, choices=RegisteredFormats(), metavar="FORMAT", help="formats")
    export.add_argument(
        "--out", type=_output_file, required=True, metavar="FILE.jsonl", help="JSONL file to write (replaced)"
    )
    export.add_argument(
        "--hf-dataset", default=None, metavar="DIR", help="also save a Hugging Face datasets folder (needs `datasets`)"
    )
    export.add_argument(
        "--images",
        choices=("none", "paths"),
        default="none",
        help="observation frames: none (text models; the default) or paths (PNG files by absolute path, for VLMs)",
    )
    export.add_argument(
        "--prompt",
        choices=("compact", "full"),
        default="compact",
        help="compact: prompts without the few-shot example (the default; rows fit TRL's max_length 512); full: as the model saw them",
    )
    export.add_argument(
        "--annotators",
        default="default",
        metavar="WHO",
        help="whose judgements and step labels count: default (people where any person judged, machines "
        "elsewhere), humans, machines, all, or NAME,NAME (written in the summary)",
    )

    commands.add_parser(
        "hash-password", help="read a password (prompt or stdin) and print its hash for an --auth-file line"
    )

    stats = commands.add_parser(
        "stats", help="counts of episodes, pairs and annotations, and agreement between annotators"
    )
    _add_db_argument(stats)
    stats.add_argument("--json", action="store_true", help="one JSON object (with per-pair agreement)")
    return parser


def add_setting_flags(episode: Any, model: Any, cls: type | None = None, only: Sequence[str] | None = None) -> None:
    """A flag for every setting of the schema (:mod:`studio.settings`) the command line offers (or
    those named in ``only``): ``--seed`` and ``--max-steps`` in ``episode``, the policy and sampling
    ones in ``model``."""
    from studio.settings import EpisodeSettings, default_of, schema

    for spec, setting in schema(cls or EpisodeSettings):
        if setting.custom or not setting.cli or (only is not None and spec.name not in only):
            continue
        flag = "--" + spec.name.replace("_", "-")
        group = episode if setting.group == "episode" or spec.name == "max_steps" else model
        default = default_of(spec)
        shown = setting.zero_means if default is None and setting.zero_means else default
        help_text = f"{setting.help} (default {shown})".replace("%", "%%")
        if setting.widget == "checkbox":
            group.add_argument(
                flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif setting.choices is not None:
            group.add_argument(flag, dest=spec.name, choices=list(setting.choices), default=None, help=help_text)
        else:
            group.add_argument(
                flag,
                dest=spec.name,
                type=_setting_type(spec.name, setting),
                default=None,
                metavar=spec.name.upper(),
                help=help_text,
            )


def _setting_type(name: str, setting: Any) -> Any:
    """An argparse type that checks a flag's text as the schema does (one line if it does not fit)."""

    def parse(text: str) -> Any:
        try:
            return setting.check(name, text)
        except StudioError:
            raise argparse.ArgumentTypeError(f"expected {setting.expectation()}, got {text[:40]!r}") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def settings_from_args(args: argparse.Namespace, cls: type | None = None) -> Any:
    """The settings ``run`` was given: flags left out keep the schema's defaults; no
    ``--temperature`` means greedy for one candidate and sampling for several."""
    from studio.settings import EpisodeSettings, default_temperature, schema, settings_from

    cls = cls or EpisodeSettings
    given = {
        spec.name: getattr(args, spec.name)
        for spec, setting in schema(cls)
        if setting.cli and not setting.custom and getattr(args, spec.name, None) is not None
    }
    settings = settings_from(given, cls)
    if "temperature" not in given:
        settings = settings_from({"temperature": default_temperature(settings.candidates)}, cls, base=settings)
    return settings


class RegisteredFormats:
    """``--format``'s choices: the export registry's names, read when argparse first asks."""

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Any:
        return iter(self._names())

    @staticmethod
    def _names() -> list[str]:
        from storage.export import format_names

        return format_names()


class ExportHelp(argparse.HelpFormatter):
    """``export --help`` lists each registered format with its one-line summary."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest != "format":
            return action.help
        from storage.export import export_formats

        return "; ".join(f"{f.name}: {f.summary}" for f in export_formats()).replace("%", "%%")


def _add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database: a file path or an SQLAlchemy URL (default: studio.db in your data directory)",
    )


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; any other address than loopback needs --auth)",
    )
    parser.add_argument("--port", type=_port, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--model",
        default="default",
        help="model A of every session: default, a hub id, a local folder, scripted:FILE.json, or none",
    )
    parser.add_argument("--device", default="auto", help="device for that model: auto, cpu, cuda, mps")
    parser.add_argument(
        "--engine",
        choices=["vllm"],
        default=None,
        help="serve --model through an inference engine the studio starts (vLLM from .venv-vllm, on loopback) instead of in this process",
    )
    _add_db_argument(parser)
    access = parser.add_argument_group("who may load what, and who may log in")
    access.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let model repositories' own Python run, also for models loaded in the browser (off by default)",
    )
    access.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose models the browser may load (repeatable); without it the browser loads only default and hub ids",
    )
    access.add_argument(
        "--allow-server",
        action="append",
        default=[],
        metavar="URL",
        help="an inference server (http://HOST:PORT/v1) whose models the browser may load (repeatable); off by default",
    )
    access.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="a login (repeatable); required to serve beyond this machine",
    )
    access.add_argument(
        "--auth-file",
        default=None,
        metavar="FILE",
        help="logins, one user:password a line (the password may be hashed: see hash-password)",
    )
    budget = parser.add_argument_group("what work started from the browser may cost")
    budget.add_argument(
        "--max-web-steps",
        type=_positive_int,
        default=200_000,
        metavar="N",
        help="environment steps one web-started job may take (a sweep's cells x step limit, a value "
        "estimate's outputs x rollouts x horizon); default 200,000",
    )
    budget.add_argument(
        "--web-jobs",
        type=_positive_int,
        default=2,
        metavar="N",
        help="heavy jobs (values, cross-scores, attention, videos, judging, sweeps) run at once; the rest queue (default 2)",
    )


def cmd_envs(args: argparse.Namespace) -> int:
    from studio.envs.registry import describe_all, make_env

    if args.name is not None:  # one environment, made: its fork mode is probed where it must be
        env = make_env(args.name, dict(args.env_opt))
        try:
            made = {
                "name": env.name,
                "options": env.options,
                "fork": env.fork_mode,
                "fork_note": env.fork_note,
                "success": env.success_rule if env.has_success else "n/a: " + env.success_rule,
                "valid_actions": env.valid_actions(),
            }
        finally:
            env.close()
        if args.json:
            print(json.dumps(made))
        else:
            print(f"{made['name']} {json.dumps(made['options'])}")
            print(f"  forks: {made['fork']} ({made['fork_note']})")
            print(f"  {made['success']}")
            if made["valid_actions"] is not None:
                print(f"  actions: {', '.join(made['valid_actions'])[:300]}")
        return 0
    for info in describe_all():
        if args.json:
            print(json.dumps(info))
            continue
        print(f"{info['name']}: {info['summary']}")
        print(f"  actions: {info['action_space']}")
        print(
            f"  expert: {'yes' if info['expert'] else 'no'}; default step limit {info['default_max_steps']}; "
            f"forks: {info['fork']}"
        )
        for option in info["options"]:
            allowed = f" (one of {', '.join(map(str, option['choices']))})" if option.get("choices") else ""
            bounds = f" ({option['minimum']}..{option['maximum']})" if option.get("minimum") is not None else ""
            print(f"  --env-opt {option['name']}=... default {option['default']}{allowed}{bounds}: {option['help']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from studio.models.resolve import offline_models, resolve_default

    if args.probe:
        from studio.models.remote import probe

        report = probe(args.probe)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"{report['url']}: {report['engine']} {report['version']}".rstrip())
            for model in report["models"]:
                print(f"  serves {model['id']} (context {model.get('max_model_len') or 'unknown'})")
            for name, value in report["supports"].items():
                print(f"  {name}: {'yes' if value is True else 'no' if value is False else value}")
            print(f"  tokenizer: {report['tokenizer']}")
        return 0
    if args.schemes:
        from studio.models.registry import describe_schemes

        for scheme in describe_schemes():
            if args.json:
                print(json.dumps(scheme))
            else:
                print(f"{scheme['example']}: {scheme['summary']} (from the browser: {scheme['from_the_browser']})")
        return 0
    if args.prepare:
        resolved = resolve_default(progress=print_progress)
        print(f"default model ready: {resolved.path} ({resolved.source})", file=sys.stderr)
    for row in offline_models():
        if args.json:
            print(json.dumps(row))
        else:
            state = "ready" if row["ready"] else "not available"
            print(f"{row['name']}: {row['repo']} ({row['source']}; {state})")
    return 0


def print_progress(fraction: float, message: str) -> None:
    """A model's loading progress on stderr (stdout stays the command's answer)."""
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


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
    from studio.agents.scripted import make_policy

    if args.policy != "react":
        return lambda _backend: make_policy(args.policy)
    from studio.agents.react import ReActPolicy, config_from_settings
    from studio.verifiers import verified

    config = config_from_settings(settings)
    judge = models[1]
    return lambda acting: verified(ReActPolicy(acting, config), settings, judge=judge)


def open_cli_store(args: argparse.Namespace, create: bool = True) -> Any:
    """The store named by ``--db`` (created or upgraded as needed; with ``create=False``, for commands
    that only read, it must exist); says so when it made a backup."""
    from storage import open_store

    store = open_store(args.db, create=create)
    if store.backup is not None:
        print(f"upgraded the database schema; the old file was copied to {store.backup}", file=sys.stderr)
    return store


def open_run(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """``run``'s and ``coverage``'s environment, store and sinks (the store, ``--out``), shared by
    episodes side by side. A bad environment, then a bad database, fails before a model loads."""
    from studio.envs.registry import make_env
    from studio.rollouts import LockedSink
    from studio.runner import JsonlSink

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
    from studio.rollouts import run_parallel
    from studio.runner import EpisodeRunner, RunnerConfig

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
    from studio.coverage import coverage_points
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


def _episode_and_compare(args: argparse.Namespace, store: Any = None) -> tuple[Any, Any]:
    """The stored episode ``args.episode`` and, with ``--compare``, the other one (one line if missing)."""
    store = store or open_cli_store(args, create=False)
    return store.episodes.get(args.episode), store.episodes.get(args.compare) if args.compare else None


def cmd_video(args: argparse.Namespace) -> int:
    from studio.viz.video import episode_video

    episode, compare = _episode_and_compare(args)
    attention = None
    if args.attention_model is not None:
        from studio.models.registry import ModelRegistry

        attention = ModelRegistry().load(args.attention_model, progress=print_progress)
    print(json.dumps(episode_video(episode, args.out, fps=args.fps, compare=compare, attention=attention).to_dict()))
    return 0


#: Stored episodes a comparison reads at most per model.
COMPARE_LIMIT = 10_000


def cmd_compare(args: argparse.Namespace) -> int:
    """A sweep's results (``compare SWEEP``), or two models' stored episodes (``--models A,B``); either
    way the latest finished episode per model, environment, options, seed and settings counts, and
    ``--env`` filters the table and the paired tests alike."""
    from studio.compare import comparison
    from studio.models.resolve import model_ids

    if args.sweep is not None:
        if args.models is not None:
            raise StudioError("Give a sweep or --models, not both.")
        from studio.sweep import sweep_results

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
    from studio.sweep import SWEEP_SETTINGS, SweepSpec, parse_vary

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

    from storage.sweeps import SweepLease
    from studio.models.registry import ModelRegistry
    from studio.sweep import SCRIPTED_MODELS

    store = open_cli_store(args)
    registry = ModelRegistry()
    stop = threading.Event()
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
        for model in spec.models:
            if model not in SCRIPTED_MODELS:
                registry.check(model)
        record = store.sweeps.create(spec, args.name, lease=lease)
        lease.hold(record.id)
    try:
        return _run_sweep_cells(args, store, registry, record, stop)
    finally:
        lease.release()


def _run_sweep_cells(args: argparse.Namespace, store: Any, registry: Any, record: Any, stop: Any) -> int:
    """The part of ``sweep`` that runs once the sweep's lease is held: remove what an interrupted run
    left, run the missing cells, print the results."""
    from studio.sweep import run_sweep, sweep_results

    spec = record.spec
    removed, done = store.sweeps.resume(record.id)
    if removed:
        print(f"removed {_count(removed, 'incomplete episode')} of the interrupted run", file=sys.stderr)
    print(
        f"sweep {record.name}: {len(done)} of {spec.size} episodes already done; running {spec.size - len(done)}",
        file=sys.stderr,
    )

    def load(name: str) -> Any:
        return load_cli_model(registry, name, args)

    def show(cell: Any, result: Any) -> None:
        if isinstance(result, StudioError):
            print(f"{cell.label} {cell.env} seed={cell.seed}: failed: {result}", file=sys.stderr, flush=True)
        elif not args.json:
            print_episode_line(result, False)

    outcome = run_sweep(
        spec, record.id, [store.episodes.sink()], load, skip=done, parallel=args.parallel, stop=stop, on_done=show
    )
    if stop.is_set():
        raise StudioError(
            f"Sweep {record.name} stopped: another process took it over (this one was silent past the lease's limit)."
        )
    print_results({"sweep": record.name, **sweep_results(spec, store.sweeps.episodes_of(record.id))}, args.json)
    print(f"stored in {store.url} as sweep {record.name}", file=sys.stderr)
    if outcome.failed:
        raise StudioError(
            f"{len(outcome.failed)} episodes of the sweep failed (the others are stored); {outcome.failed[0]}"
        )
    return 0


def cmd_crossscore(args: argparse.Namespace) -> int:
    """Score an episode's outputs under ``--model``, store the scores, and print a line (or an object) per step."""
    from studio.crossscore import check_scorable, cross_score
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
    print(f"stored {_count(len(scores), 'step score')} of {backend.card.id} in {store.url}", file=sys.stderr)
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


def cmd_report(args: argparse.Namespace) -> int:
    """A self-contained page of an episode (with its stored values and cross-scores), or of a sweep."""
    from studio.viz.report import report_extras, sweep_report, write_page, write_report

    if (args.episode is None) == (args.sweep is None):
        raise StudioError("Give an episode's id, or --sweep NAME, to report on.")
    if args.sweep is not None:
        from studio.sweep import sweep_results

        store = open_cli_store(args, create=False)
        record = store.sweeps.get(args.sweep)
        results = sweep_results(record.spec, store.sweeps.episodes_of(record.id))
        print(json.dumps(write_page(sweep_report(record.name, record.spec, results), args.out)))
        return 0
    store = open_cli_store(args, create=False)
    episode, compare = _episode_and_compare(args, store)
    print(json.dumps(write_report(episode, args.out, compare=compare, **report_extras(store, episode.id))))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from studio.trace import read_episodes_jsonl

    episodes = read_episodes_jsonl(args.file)  # read and check all first: a bad line stores nothing
    store = open_cli_store(args)
    results = store.episodes.save_all(episodes, replace=args.replace)  # one transaction
    outcomes = {outcome: sum(r.outcome == outcome for r in results) for outcome in ("stored", "unchanged", "replaced")}
    print(
        f"stored {_count(outcomes['stored'], 'episode')}, {outcomes['unchanged']} already stored unchanged, {outcomes['replaced']} replaced, in {store.url}"
    )
    for result in results:
        if result.outcome == "replaced":
            print(
                f"  {result.episode_id}: kept steps 0-{result.kept_steps - 1} with their labels and pairs; "
                f"dropped {_count(result.dropped_pairs, 'pair')} and {_count(result.dropped_labels, 'step label')} of changed steps"
                if result.kept_steps
                else f"  {result.episode_id}: every step changed; dropped {_count(result.dropped_pairs, 'pair')} and {_count(result.dropped_labels, 'step label')}"
            )
    return 0


def _count(number: int, noun: str) -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def cmd_pairs(args: argparse.Namespace) -> int:
    if args.left is not None or args.right is not None:
        if not (args.left and args.right):
            raise StudioError("A pair by hand needs both --left and --right.")
        pair = open_cli_store(args).preferences.add_pair(args.left, args.right)
        print(json.dumps({"pair_id": pair.id, "kind": pair.kind, "env": pair.env}))
        return 0
    preferences = open_cli_store(args).preferences
    if args.source == "candidates":
        made = preferences.pairs_from_candidates(
            env=args.env, episode_ids=args.episode, different_actions=args.different_actions
        )
    elif args.source == "values":
        episode = args.episode[0] if args.episode and len(args.episode) == 1 else None
        if args.episode and len(args.episode) > 1:
            raise StudioError("--from values takes at most one --episode.")
        made = preferences.pairs_from_values(
            min_gap=args.min_gap,
            min_rollouts=args.min_rollouts,
            settings=args.settings,
            env=args.env,
            episode_id=episode,
        )
        print(f"{made.judged} pairs judged by the values ({', '.join(made.annotators) or 'none'})", file=sys.stderr)
    else:
        made = preferences.pairs_from_episodes(env=args.env)
    print(f"made {made.created} pairs ({made.already_there} already there, {made.identical} skipped as identical)")
    return 0


def rollout_policies(name: str, model: str, seed: int) -> tuple[Any, Any]:
    """A factory of rollout policies (rollout ``i`` gets its own, seeded ``seed + i``) and the
    backend they act with (None for the expert and random)."""
    from studio.values import rollout_policy_factory

    if name in ("random", "expert"):
        return rollout_policy_factory(name, seed), None
    from studio.models.registry import ModelRegistry

    return rollout_policy_factory("model", seed), ModelRegistry().load(model)


def check_values_arguments(args: argparse.Namespace, episode: Any) -> list[int]:
    """Every argument of ``values`` checked before anything is computed or stored (one line each):
    the steps to value."""
    if args.mc_labels is not None and not 0 <= args.mc_labels <= 1:
        raise StudioError(f"--mc-labels is a fraction of rollouts from 0 to 1, got {args.mc_labels:g}.")
    if not 1 <= args.rollouts <= 1000:
        raise StudioError(f"--rollouts must be from 1 to 1000, got {args.rollouts}.")
    if args.horizon is not None and args.horizon < 0:
        raise StudioError(f"--horizon must be 0 or more steps, got {args.horizon}.")
    if not 0 < args.discount <= 1:
        raise StudioError(f"--discount must be in (0, 1], got {args.discount:g}.")
    if not 0 <= args.seed <= 2**31 - 1:
        raise StudioError(f"--seed must be from 0 to {2**31 - 1}, got {args.seed}.")
    if not episode.steps:
        raise StudioError(f"Episode {episode.id} has no steps to value.")
    if args.step is not None and not 0 <= args.step < episode.length:
        raise StudioError(f"Episode {episode.id} has no step {args.step} (steps 0 to {episode.length - 1}).")
    steps = [args.step] if args.step is not None else list(range(episode.length))
    missing = [index for index in steps if episode.steps[index].state is None]
    if missing:
        raise StudioError(f"Step {missing[0]} has no environment snapshot: its values cannot be estimated.")
    return steps


def cmd_values(args: argparse.Namespace) -> int:
    from studio.values import estimate_step_values

    store = open_cli_store(args, create=False)
    episode = store.episodes.get(args.episode)
    steps = check_values_arguments(args, episode)
    policies, backend = rollout_policies(args.rollout_policy, args.model, args.seed)
    stored = []
    for index in steps:
        values = estimate_step_values(
            episode,
            index,
            policies,
            rollout_policy=args.rollout_policy,
            rollouts=args.rollouts,
            horizon=args.horizon,
            seed=args.seed,
            discount=args.discount,
            max_steps=args.max_steps,
            model=backend,
            parallel=args.parallel,
        )
        store.preferences.save_values(values)
        stored += values
        for value in values:
            if args.json:
                print(json.dumps(value.to_dict()))
            else:
                print(
                    f"step {value.step_index} {value.output:<12} Q={value.q:+.3f} ± {value.stderr:.3f}  "
                    f"success {sum(value.successes)}/{value.rollouts}  {value.action}"
                )
    if args.mc_labels is not None and stored:
        labelled = store.preferences.labels_from_values(
            args.mc_labels, settings=stored[0].settings, episode_id=episode.id
        )
        print(f"labelled {labelled} steps as mc:{stored[0].settings}", file=sys.stderr)
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from storage.judging import judge_queue
    from studio.judge import judge_name
    from studio.models.registry import ModelRegistry

    store = open_cli_store(args, create=False)
    backend = ModelRegistry().load(args.model, progress=print_progress)
    done = judge_queue(
        store.preferences,
        backend,
        limit=args.limit,
        kind=args.kind,
        env=args.env,
        source=args.source,
        progress=lambda n, total: print(f"judged {n}/{total}", file=sys.stderr, flush=True),
    )
    print(json.dumps({"judge": judge_name(backend), "judged": done}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage.export import export

    summary = export(
        open_cli_store(args, create=False),
        args.format,
        args.out,
        hf_dataset=args.hf_dataset,
        images=args.images,
        prompt=args.prompt,
        annotators=args.annotators,
    )
    print(json.dumps(summary.to_dict()))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    counts = store.episodes.count()
    numbers = store.preferences.stats()
    if args.json:
        print(json.dumps({**counts, **numbers}))
        return 0
    agreement = numbers["agreement"]
    print(f"database: {store.url}")
    print(
        f"episodes: {counts['episodes']} ({counts['finished_episodes']} finished), steps: {counts['steps']}, candidates: {counts['candidates']}"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(numbers["pairs_by_kind"].items())) or "none"
    print(f"pairs: {numbers['pairs']} ({kinds})")
    choices = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in numbers["choices"].items())
    print(f"annotations: {numbers['annotations']} ({choices}); step labels: {numbers['step_labels']}")
    for name, count in sorted(numbers["annotations_by_annotator"].items()):
        print(f"  {name}: {count}")
    if agreement["percent_agreement"] is None:
        print("agreement: no pair has two annotators yet")
    else:
        print(
            f"agreement: {agreement['percent_agreement']:.1%} over {agreement['items_with_two_or_more']} pairs with two or more annotators, Krippendorff's alpha {_alpha_text(agreement)}"
        )
        for row in agreement["pairwise"]:
            kappa = "n/a" if row["cohen_kappa"] is None else f"{row['cohen_kappa']:.3f}"
            print(
                f"  {row['annotators'][0]} vs {row['annotators'][1]}: {row['percent_agreement']:.1%} on {row['items']} pairs, Cohen's kappa {kappa}"
            )
    labels = numbers["label_agreement"]
    if labels["percent_agreement"] is not None:
        print(
            f"step-label agreement: {labels['percent_agreement']:.1%} over {labels['items_with_two_or_more']} steps with two or more annotators, Krippendorff's alpha {_alpha_text(labels)}"
        )
    return 0


def _alpha_text(report: dict[str, Any]) -> str:
    alpha = report["krippendorff_alpha"]
    return "n/a (one label throughout)" if alpha is None else f"{alpha:.3f}"


def check_listen_address(host: str, port: int) -> int:
    """Fail now, in one line, if ``host:port`` cannot be served (not an address, not ours, in use);
    the port to serve on (port 0: a free one, chosen here, so the address printed is the real one)."""
    import errno
    import socket

    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError):
        raise StudioError(f"Cannot listen on --host {host[:80]!r}: not an address or a known host name.") from None
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        return int(probe.getsockname()[1])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StudioError(f"Port {port} on {host} is in use (another studio?): pick another with --port.") from None
        raise StudioError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    finally:
        probe.close()


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """Host and port: the flags, else Gradio's own environment variables (as ``gradio`` apps honour
    them in containers), else 127.0.0.1:7860."""
    host = args.host if args.host is not None else os.environ.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1"
    if args.port is not None:
        return host, args.port
    text = os.environ.get("GRADIO_SERVER_PORT", "").strip()
    if not text:
        return host, 7860
    try:
        return host, _port(text)
    except argparse.ArgumentTypeError as exc:
        raise StudioError(f"GRADIO_SERVER_PORT: {exc}.") from None


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args.host, args.port = listen_address(args)
    from components.auth import load_credentials, require_auth_beyond_loopback
    from studio.models.access import ModelAccess

    # Everything the operator can get wrong fails here, before a model loads or a port opens.
    credentials = load_credentials(args.auth, args.auth_file)
    args.port = check_listen_address(args.host, args.port)
    require_auth_beyond_loopback(args.host, credentials)
    access = ModelAccess(
        trust_remote_code=args.trust_remote_code, model_dirs=tuple(args.models_dir), servers=tuple(args.allow_server)
    )
    store = open_cli_store(args)
    orphans = store.episodes.end_orphans()  # episodes a crashed process of this machine left "running"
    if orphans:
        print(f"ended {_count(orphans, 'episode')} that a process which died had left running", file=sys.stderr)
    engine = start_engine(args) if args.engine else None
    import signal

    # SIGTERM (docker stop, systemd) ends serve through the finally blocks: open pages' episodes are
    # ended, the engine stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return _serve(args, access, store, credentials)
    finally:
        if engine is not None:
            engine.stop()


def start_engine(args: argparse.Namespace) -> Any:
    """``serve --engine vllm``: start vLLM on ``--model`` (its folder) and make model A its URL."""
    from studio.models.engines import start_vllm
    from studio.models.resolve import resolve

    if args.model == "none":
        raise StudioError("--engine needs a model to serve: give --model.")
    resolved = resolve(args.model)
    if resolved.gguf_file:
        raise StudioError(f"--engine vllm serves model folders, not a single .gguf file ({args.model}).")
    print(f"starting vLLM on {resolved.path} (on a CPU this takes 30-70 s)", file=sys.stderr, flush=True)
    import torch

    # float32 on a CPU (bf16 is slower there and the CPU build was measured in float32); the engine picks on a GPU
    dtype = "auto" if torch.cuda.is_available() else "float32"
    cpu = not torch.cuda.is_available()
    server = start_vllm(
        resolved.path, served_name=resolved.repo or args.model, dtype=dtype, block_size=32 if cpu else None
    )
    print(f"vLLM ready at {server.url} after {server.started_s:.0f} s", file=sys.stderr, flush=True)
    args.model = server.url
    return server


def _serve(args: argparse.Namespace, access: Any, store: Any, credentials: Any) -> int:
    from studio.models.registry import ModelRegistry

    registry = ModelRegistry()
    default_model = None
    if args.model != "none":
        try:
            default_model = registry.load(
                args.model, device=args.device, trust_remote_code=args.trust_remote_code, progress=print_progress
            )
            registry.pin(default_model)
        except StudioError as exc:  # the studio still starts: the model panel says what happened
            print(f"warning: model {args.model!r} did not load ({exc}); starting without it", file=sys.stderr)
    from components.auth import login_app_kwargs
    from components.layout import Services, build_app
    from components.theme import launch_options
    from studio.jobs import WebLimits

    limits = WebLimits(max_steps=args.max_web_steps, concurrency=args.web_jobs)
    services = Services(registry=registry, store=store, default_model=default_model, access=access, limits=limits)
    app = build_app(services)
    options = launch_options()  # reads the packaged stylesheet: a broken install says so, not "cannot serve"
    print(f"Agent Studio on http://{args.host}:{args.port}" + (" (login required)" if credentials else ""), flush=True)
    try:
        # show_error=False: an unexpected exception's text (which may quote a file's or a model's
        # content) never reaches the page; the panels show their own escaped one-line messages.
        app.launch(
            server_name=args.host,
            server_port=args.port,
            show_error=False,
            auth=credentials.check if credentials else None,
            app_kwargs=login_app_kwargs() if credentials else None,
            **options,
        )
    except OSError as exc:  # e.g. the port was taken between the check and the start
        raise StudioError(f"Cannot serve on {args.host}:{args.port}: {exc}.") from None
    finally:
        services.close_all()  # a clean stop leaves no episode "running"
        services.downloads.close()
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print a hashed password for an --auth-file line (``user:`` followed by it)."""
    import getpass

    from components.auth import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        raise StudioError("An empty password cannot be hashed.")
    print(hash_password(password))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in {"-h", "--help", "--version"}:
        argv = ["serve", *argv]  # `python app.py [--port P]` starts the studio
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "envs": cmd_envs,
        "models": cmd_models,
        "run": cmd_run,
        "coverage": cmd_coverage,
        "import": cmd_import,
        "video": cmd_video,
        "report": cmd_report,
        "compare": cmd_compare,
        "sweep": cmd_sweep,
        "sweeps": cmd_sweeps,
        "crossscore": cmd_crossscore,
        "pairs": cmd_pairs,
        "values": cmd_values,
        "judge": cmd_judge,
        "export": cmd_export,
        "stats": cmd_stats,
        "hash-password": cmd_hash_password,
    }
    try:
        return handlers[args.command](args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`stats --json | head`): what it wanted it has; no traceback, and no
        # second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        # A database that fails mid-command (locked too long, disk full, server gone): one line.
        from storage.db import first_line

        print(f"error: the database failed: {first_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
