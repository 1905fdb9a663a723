"""What the commands share: the parser that fails in one line, argument types, the flags of
several commands (``--db``, the settings, how a model loads), the store and progress on stderr."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

from studio.errors import StudioError
from studio.models.base import DTYPE_NAMES

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see: {self.prog} --help)\n")


def bounded_number(kind: type, low: float | None = None, high: float | None = None, what: str = "a number") -> Any:
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


def best_of(text: str) -> int:
    """``best-of-K`` as K (1 to 16, as --candidates)."""
    prefix, _, k = text.partition("best-of-")
    if prefix or not k.isdigit() or not 1 <= int(k) <= 16:
        raise argparse.ArgumentTypeError(f"use best-of-K with K from 1 to 16, e.g. best-of-4 (got {text[:40]!r})")
    return int(k)


def k_list(text: str) -> list[int]:
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


def verifier_list(text: str) -> list[str]:
    """``first,oracle`` as a list of distinct verifier names."""
    from studio.settings import VERIFIERS

    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in VERIFIERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"use verifiers from {', '.join(VERIFIERS)} (got {text[:40]!r})")
    return names


positive_int = bounded_number(int, 1, what="a positive integer")


port_number = bounded_number(int, 0, 65535, what="a port between 0 and 65535")


def env_option(text: str) -> tuple[str, Any]:
    from studio.envs.registry import parse_cli_value

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text[:40]!r}")
    try:
        return name.strip(), parse_cli_value(value)
    except StudioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sweep_env_option(text: str) -> tuple[str, str, Any]:
    """``ENV:NAME=VALUE`` (the environment may hold colons itself, as gym:FrozenLake-v1 does)."""
    env, separator, option = text.rpartition(":")
    if not separator or not env:
        raise argparse.ArgumentTypeError(f"expected ENV:NAME=VALUE, got {text[:60]!r}")
    name, value = env_option(option)
    return env, name, value


def output_file(text: str) -> str:
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
        type=env_option,
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
    run.add_argument("--episodes", type=positive_int, default=1, help="number of episodes (default 1)")
    run.add_argument(
        "--parallel",
        type=positive_int,
        default=1,
        help="episodes run side by side (default 1); with --policy react their model calls decode in lockstep, "
        "one batch per token (same episodes as one by one)",
    )
    run.add_argument(
        "--max-invalid", type=positive_int, default=10, help="invalid actions before an episode is cut (default 10)"
    )
    run.add_argument(
        "--select",
        dest="candidates",
        type=best_of,
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
        type=output_file,
        default=None,
        metavar="FILE.jsonl",
        help="append full episodes (the trace format) to this JSONL file",
    )
    run.add_argument(
        "--frames", action="store_true", help="store a rendered frame on every step of --out (larger files)"
    )
    run.add_argument("--json", action="store_true", help="print one JSON object per episode instead of a text line")
    add_db_argument(run)
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


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the work runs: ``--executor local|ray`` and the Ray cluster's flags (see :func:`executor_from_args`)."""
    from studio.executors.registry import EXECUTORS

    group = parser.add_argument_group("where it runs")
    group.add_argument(
        "--executor",
        choices=list(EXECUTORS),
        default="local",
        help="local (this process, default) or ray (a Ray cluster)",
    )
    group.add_argument(
        "--ray-address",
        default="auto",
        metavar="ADDRESS",
        help="the cluster: auto (RAY_ADDRESS, else this machine's), HOST:PORT (its head), or local (start one here)",
    )
    group.add_argument("--workers", type=positive_int, default=2, help="Ray workers at once (default 2)")
    group.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs each worker reserves (default 1)")
    group.add_argument("--worker-gpus", type=float, default=0.0, help="GPUs each worker reserves (default 0)")
    group.add_argument("--worker-memory", type=float, default=None, metavar="GIB", help="memory each worker reserves")


@contextlib.contextmanager
def cli_executor(args: argparse.Namespace) -> Iterator[Any]:
    """:func:`executor_from_args` for the length of a command (its workers given back at the end). Made
    before anything is stored: a cluster that cannot be reached is one line and changes nothing."""
    executor = executor_from_args(args)
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()


def executor_options(args: argparse.Namespace) -> Any:
    """The executor flags as :class:`studio.executors.ExecutorOptions`; workers load models as
    ``--device``/``--dtype``/``--trust-remote-code`` say (one line for a value out of range)."""
    from studio.executors import ExecutorOptions

    load = {
        "device": getattr(args, "device", "auto"),
        "dtype": getattr(args, "dtype", "auto"),
        "trust_remote_code": bool(getattr(args, "trust_remote_code", False)),
    }
    return ExecutorOptions(
        address=args.ray_address,
        workers=args.workers,
        cpus_per_worker=args.worker_cpus,
        gpus_per_worker=args.worker_gpus,
        memory_gb=args.worker_memory,
        load=load,
    )


def executor_from_args(args: argparse.Namespace) -> Any:
    """The executor the flags name (None for local: the command runs its work itself); one line when a
    cluster cannot be reached."""
    if getattr(args, "executor", "local") == "local":
        return None
    from studio.executors import make_executor

    executor = make_executor(args.executor, executor_options(args))
    print(f"running on {executor.describe()}", file=sys.stderr, flush=True)
    return executor


def load_cli_model(registry: Any, name: str, args: argparse.Namespace) -> Any:
    """``name`` loaded as :func:`add_model_load_arguments`' flags say, with progress on stderr."""
    return registry.load(
        name, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=print_progress
    )


def add_setting_flags(episode: Any, model: Any, cls: type | None = None, only: Sequence[str] | None = None) -> None:
    """A flag for every setting of the schema (:mod:`studio.settings`) the command line offers (or
    those named in ``only``): ``--seed`` and ``--max-steps`` in ``episode``, the policy and sampling
    ones in ``model``."""
    from studio.settings import EpisodeSettings, schema, shown_default

    for spec, setting in schema(cls or EpisodeSettings):
        if setting.custom or not setting.cli or (only is not None and spec.name not in only):
            continue
        flag = "--" + spec.name.replace("_", "-")
        group = episode if setting.group == "episode" or spec.name == "max_steps" else model
        help_text = f"{setting.help} (default {shown_default(spec, setting)})".replace("%", "%%")
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


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database: a file path or an SQLAlchemy URL (default: studio.db in your data directory)",
    )


def print_progress(fraction: float, message: str) -> None:
    """A model's loading progress on stderr (stdout stays the command's answer)."""
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


def open_cli_store(args: argparse.Namespace, create: bool = True) -> Any:
    """The store named by ``--db`` (created or upgraded as needed; with ``create=False``, for commands
    that only read, it must exist); says so when it made a backup."""
    from agent_studio.storage import open_store

    store = open_store(args.db, create=create)
    if store.backup is not None:
        print(f"upgraded the database schema; the old file was copied to {store.backup}", file=sys.stderr)
    return store


def plural(number: int, noun: str) -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


@dataclass(frozen=True)
class Command:
    """One subcommand of ``agent-studio``: its name, its line in ``--help``, the function that adds its
    flags and the one that runs it (an exit code). Every module's imports at the top are the standard
    library's: a command imports what it needs inside its handler, so ``--help`` and ``envs`` start fast."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None
    run: Callable[[argparse.Namespace], int]
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter
