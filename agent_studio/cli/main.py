"""``agent-studio``: the one list of commands, the parser built from it, and how errors end a command.

A command is a :class:`~agent_studio.cli.options.Command` in its group's module (``serve``,
``catalog``, ``run``, ``evaluate``, ``data``, ``share``); adding one is a function for its flags, one
that runs it, and a line in :data:`COMMANDS`. The documentation's command reference is generated
from this list.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from agent_studio.cli import campaign, catalog, data, evaluate, find, inside, loop, results, run, serve, share, train
from agent_studio.cli.options import EXIT_USER_ERROR, Command, OneLineParser
from studio.errors import StudioError

#: Every command, in the order ``--help`` lists them.
COMMANDS: list[Command] = [
    serve.SERVE,
    catalog.ENVS,
    catalog.MODELS,
    run.RUN,
    run.COVERAGE,
    evaluate.SWEEP,
    evaluate.SWEEPS,
    evaluate.COMPARE,
    evaluate.CROSSSCORE,
    share.VIDEO,
    share.REPORT,
    share.PREDICT,
    data.IMPORT,
    data.PAIRS,
    data.VALUES,
    data.JUDGE,
    data.EXPORT,
    data.STATS,
    campaign.CAMPAIGN,
    results.RESULTS,
    find.SEARCH,
    find.TAG,
    find.NOTE,
    find.RUBRIC,
    find.DIFF,
    find.AGGREGATES,
    inside.STEER,
    inside.PROBE,
    inside.LENS,
    inside.PERCEPTION,
    train.TRAIN,
    train.TRAINED,
    loop.EVALUATE,
    loop.LOOP,
    serve.HASH_PASSWORD,
]


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``serve`` (the default command) and the commands that work without a browser."""
    from studio import __version__

    parser = OneLineParser(
        prog="agent-studio",
        description="Agent Studio: watch agents act, look inside their decisions, and turn what you see into training data.",
    )
    parser.add_argument("--version", action="version", version=f"agent-studio {__version__}")
    commands = parser.add_subparsers(
        dest="command", parser_class=OneLineParser, metavar="{" + ",".join(c.name for c in COMMANDS) + "}"
    )
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, formatter_class=command.formatter_class)
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in {"-h", "--help", "--version"}:
        argv = ["serve", *argv]  # `python app.py [--port P]` starts the studio
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
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
        from agent_studio.storage.db import first_line

        print(f"error: the database failed: {first_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
