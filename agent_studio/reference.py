"""The documentation's reference pages, generated from the code: the commands from
:data:`agent_studio.cli.main.COMMANDS`, the settings from the schema, and the environments,
model name schemes, verifiers and export formats from their registries.

``docs/hooks.py`` puts each table where a page says ``<!-- reference: NAME -->``; the tests check
that every command and every setting appears in the built site.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _cell(text: object) -> str:
    """Text fit for one cell of a Markdown table."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ").strip()


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    rows = []
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            metavar = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
            )
            names += f" `{metavar}`"
        help_text = (action.help or "") % {"default": action.default} if action.help else ""
        rows.append((names, help_text.replace("%%", "%")))
    return rows


def cli_markdown() -> str:
    """A section per command: its line of help and a table of its flags."""
    from agent_studio.cli.main import COMMANDS, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["| command | what it does |", "|---|---|"]
    parts += [f"| [`{c.name}`](#{c.name}) | {_cell(c.help)} |" for c in COMMANDS]
    for command in COMMANDS:
        sub = subparsers.choices[command.name]
        parts += [
            "",
            f"### {command.name}",
            "",
            _cell(command.help) + ".",
            "",
            "```",
            sub.format_usage().strip(),
            "```",
        ]
        flags = _flags(sub)
        if flags:
            parts += ["", "| argument | meaning |", "|---|---|"]
            parts += [f"| {names} | {_cell(help_text)} |" for names, help_text in flags]
    return "\n".join(parts)


def settings_markdown() -> str:
    """Every setting of the schema: its name, flag, widget, default, allowed values and meaning."""
    from studio.settings import EpisodeSettings, default_of, schema

    parts = ["| setting | flag | group | default | allowed | meaning |", "|---|---|---|---|---|---|"]
    for spec, setting in schema(EpisodeSettings):
        flag = f"`--{spec.name.replace('_', '-')}`" if setting.cli and not setting.custom else "(drawn by each surface)"
        default = default_of(spec)
        shown = setting.zero_means if default is None and setting.zero_means else default
        parts.append(
            f"| `{spec.name}` | {flag} | {setting.group} | `{_cell(shown)}` | "
            f"{'-' if setting.custom else _cell(setting.expectation())} | "
            f"{_cell(setting.help)} |"
        )
    return "\n".join(parts)


def environments_markdown() -> str:
    """A section per registered environment and family: what it is, its actions, expert, step limit,
    how it forks, and a table of its options."""
    from studio.envs.registry import describe_all

    parts: list[str] = []
    for info in describe_all():
        parts += [
            f"### `{_cell(info['name'])}`",
            "",
            f"{_cell(info['summary'])}",
            "",
            f"- actions: {_cell(info['action_space'])}",
            f"- expert: {'yes' if info['expert'] else 'no'}; default step limit {info['default_max_steps']}; "
            f"forks: {_cell(info['fork'])}",
            "",
        ]
        if info["options"]:
            parts += ["| option | default | meaning |", "|---|---|---|"]
            for option in info["options"]:
                allowed = f" (one of {', '.join(map(str, option['choices']))})" if option.get("choices") else ""
                allowed = " " + _cell(allowed) if allowed else ""
                parts.append(
                    f"| `{_cell(option['name'])}` | `{_cell(option['default'])}` | {_cell(option['help'])}{allowed} |"
                )
            parts.append("")
    return "\n".join(parts)


def backends_markdown() -> str:
    """Every model name scheme (registered backends)."""
    from studio.models.registry import describe_schemes

    parts = ["| name | what it loads | from the browser |", "|---|---|---|"]
    parts += [
        f"| `{_cell(s['example'])}` | {_cell(s['summary'])} | {_cell(s['from_the_browser'])} |"
        for s in describe_schemes()
    ]
    return "\n".join(parts)


def verifiers_markdown() -> str:
    """Every registered verifier."""
    from studio.scaling.verifier_registry import describe_verifiers

    parts = ["| verifier | what picks the action | asks a second model |", "|---|---|---|"]
    parts += [
        f"| `{v['name']}` | {_cell(v['summary'])} | {'yes' if v['needs_judge'] else 'no'} |"
        for v in describe_verifiers()
    ]
    return "\n".join(parts)


def exports_markdown() -> str:
    """Every registered export format."""
    from agent_studio.storage.export import export_formats

    parts = ["| format | rows and what trains on them |", "|---|---|"]
    parts += [f"| `{f.name}` | {_cell(f.summary)} |" for f in export_formats()]
    return "\n".join(parts)


#: What ``<!-- reference: NAME -->`` in a page becomes.
def layers_markdown() -> str:
    """The core's layers (:mod:`agent_studio.architecture`)."""
    from agent_studio.architecture import layers_markdown as draw

    return draw()


REFERENCES: dict[str, Callable[[], str]] = {
    "layers": layers_markdown,
    "cli": cli_markdown,
    "settings": settings_markdown,
    "environments": environments_markdown,
    "backends": backends_markdown,
    "verifiers": verifiers_markdown,
    "exports": exports_markdown,
}
