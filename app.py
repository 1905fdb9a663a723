"""Agent Studio: the composition root and command line.

    python app.py [serve] [--host H] [--port P] [--db URL]   start the studio web app
    python app.py envs [--json]                             list environments
    python app.py models [--json]                           list models that load offline
    python app.py run --env NAME [...]                       run episodes headless

User errors (unknown environment, bad option, bad seed, ...) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn, Sequence

from studio.errors import StudioError

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see: {self.prog} --help)\n")


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False, what: str = "a number") -> Any:
    """An argparse type: ``kind`` parsed from the text and checked against the bounds."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_non_negative_int = _number(int, 0, what="a non-negative integer")
_positive_int = _number(int, 1, what="a positive integer")
_port = _number(int, 0, 65535, what="a port between 0 and 65535")
_unit_float = _number(float, 0, 1, low_open=True, what="a number in (0, 1]")
_temperature = _number(float, 0, what="a temperature >= 0")


def _env_option(text: str) -> tuple[str, Any]:
    from studio.envs.registry import parse_cli_value

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name.strip(), parse_cli_value(value)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: ``serve`` (default), ``envs`` and ``run``."""
    parser = OneLineParser(prog="app.py", description="Agent Studio: watch agents act, look inside their decisions, and turn what you see into training data.")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser, metavar="{serve,envs,models,run}")

    serve = commands.add_parser("serve", help="start the studio web app (the default command)")
    _add_serve_arguments(serve)

    envs = commands.add_parser("envs", help="list environments, their options and action spaces")
    envs.add_argument("--json", action="store_true", help="one JSON object per environment")

    models = commands.add_parser("models", help="list the models that load without a network")
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    models.add_argument("--prepare", action="store_true", help="make the default model ready offline first (converts the shipped GGUF once)")

    run = commands.add_parser("run", help="run episodes headless and print one summary line per episode")
    run.add_argument("--env", required=True, help="environment: gridworld, household, wikihop or gym:<id>")
    run.add_argument("--env-opt", type=_env_option, action="append", default=[], metavar="NAME=VALUE", help="environment option (repeatable); see `app.py envs`")
    run.add_argument("--policy", default="expert", choices=["expert", "random", "react"], help="who acts (default: expert); react is model-driven")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the first episode (default 0); episode k uses seed+k")
    run.add_argument("--episodes", type=_positive_int, default=1, help="number of episodes (default 1)")
    run.add_argument("--max-steps", type=_positive_int, default=None, help="step limit per episode (default: the environment's)")
    run.add_argument("--max-invalid", type=_positive_int, default=10, help="invalid actions before an episode is cut (default 10)")
    run.add_argument("--out", default=None, metavar="FILE.jsonl", help="append full episodes (the trace format) to this JSONL file")
    run.add_argument("--frames", action="store_true", help="store a rendered frame on every step of --out (larger files)")
    run.add_argument("--json", action="store_true", help="print one JSON object per episode instead of a text line")
    model = run.add_argument_group("model (with --policy react)")
    model.add_argument("--model", default="default", help="default (SmolLM2-135M-Instruct, offline), a hub id or a local folder")
    model.add_argument("--action-mode", default="generate", choices=["generate", "score"], help="generate the action, or score every valid action")
    model.add_argument("--candidates", type=_positive_int, default=1, metavar="K", help="outputs sampled per step in one batch (default 1)")
    model.add_argument("--temperature", type=_temperature, default=0.0, help="0 is greedy (default 0)")
    model.add_argument("--top-p", type=_unit_float, default=0.95, help="nucleus sampling mass (default 0.95)")
    model.add_argument("--max-new-tokens", type=_positive_int, default=64, help="per step (default 64)")
    model.add_argument("--no-few-shot", action="store_true", help="leave the expert example out of the prompt")
    model.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps")
    model.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="auto: bfloat16 on GPU, float32 on CPU")
    model.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own Python code to run (off by default)")
    return parser


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    parser.add_argument("--db", default=None, metavar="URL", help="database: a file path or an SQLAlchemy URL (the store lands with its own issue)")


def cmd_envs(args: argparse.Namespace) -> int:
    from studio.envs.registry import describe_all

    for info in describe_all():
        if args.json:
            print(json.dumps(info))
            continue
        print(f"{info['name']}: {info['summary']}")
        print(f"  actions: {info['action_space']}")
        print(f"  expert: {'yes' if info['expert'] else 'no'}; default step limit {info['default_max_steps']}")
        for option in info["options"]:
            allowed = f" (one of {', '.join(map(str, option['choices']))})" if option.get("choices") else ""
            bounds = f" ({option['minimum']}..{option['maximum']})" if option.get("minimum") is not None else ""
            print(f"  --env-opt {option['name']}=... default {option['default']}{allowed}{bounds}: {option['help']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from studio.models.resolve import offline_models, resolve_default

    if args.prepare:
        resolved = resolve_default(progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr, flush=True))
        print(f"default model ready: {resolved.path} ({resolved.source})", file=sys.stderr)
    for row in offline_models():
        if args.json:
            print(json.dumps(row))
        else:
            state = "ready" if row["ready"] else "not available"
            print(f"{row['name']}: {row['repo']} ({row['source']}; {state})")
    return 0


def make_cli_policy(args: argparse.Namespace) -> Any:
    """The policy ``run`` asked for; a model policy loads its model (with progress on stderr)."""
    from studio.agents.scripted import make_policy

    if args.policy != "react":
        return make_policy(args.policy)
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.models.base import SamplingParams
    from studio.models.registry import ModelRegistry

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    backend = ModelRegistry().load(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, progress=progress)
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    config = ReActConfig(action_mode=args.action_mode, sampling=sampling, candidates=args.candidates, few_shot=not args.no_few_shot)
    return ReActPolicy(backend, config)


def cmd_run(args: argparse.Namespace) -> int:
    from studio.envs.registry import make_env
    from studio.runner import EpisodeRunner, JsonlSink, RunnerConfig

    make_env(args.env, dict(args.env_opt))  # a bad environment fails before a model loads
    sinks = [JsonlSink(args.out)] if args.out else []
    config = RunnerConfig(max_steps=args.max_steps, max_invalid_actions=args.max_invalid, record_frames=args.frames)
    runner = EpisodeRunner(args.env, make_cli_policy(args), dict(args.env_opt), sinks=sinks, config=config)
    for offset in range(args.episodes):
        runner.reset(seed=args.seed + offset)
        episode = runner.run()
        summary = episode.summary()
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            outcome = "success" if episode.success else "failure"
            print(
                f"{episode.id[:8]}  {episode.env} seed={episode.seed} policy={episode.policy}  "
                f"{outcome}  return={episode.total_return:g}  steps={episode.length}  ({episode.end_reason})",
                flush=True,
            )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from components.layout import build_app

    app = build_app(db_url=args.db)
    print(f"Agent Studio on http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in {"-h", "--help"}:
        argv = ["serve", *argv]  # `python app.py [--port P]` starts the studio
    args = build_parser().parse_args(argv)
    handlers = {"serve": cmd_serve, "envs": cmd_envs, "models": cmd_models, "run": cmd_run}
    try:
        return handlers[args.command](args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
