"""What there is: ``envs`` (environments, their options, how they fork) and ``models`` (what loads offline, name schemes, a server's probe)."""

from __future__ import annotations

import argparse
import json
import sys

from agent_studio.cli.options import (
    Command,
    env_option,
    print_progress,
)


def envs_arguments(envs: argparse.ArgumentParser) -> None:
    """``envs``'s flags."""
    envs.add_argument(
        "name",
        nargs="?",
        default=None,
        help="make this one (e.g. gym:ALE/Pong-v5) and say how it forks and how success is read",
    )
    envs.add_argument("--env-opt", action="append", default=[], type=env_option, metavar="NAME=VALUE")
    envs.add_argument("--json", action="store_true", help="one JSON object per environment")


def models_arguments(models: argparse.ArgumentParser) -> None:
    """``models``'s flags."""
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


def cmd_envs(args: argparse.Namespace) -> int:
    from studio.envs.registry import describe_all, make_env, option_limits

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
            limits = option_limits(option)
            print(f"  --env-opt {option['name']}=... default {option['default']}{limits}: {option['help']}")
        if info.get("members"):
            print(f"  {len(info['members'])} here: {', '.join(info['members'])}")
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


ENVS = Command("envs", "list environments, their options and action spaces", envs_arguments, cmd_envs)
MODELS = Command("models", "list the models that load without a network", models_arguments, cmd_models)
