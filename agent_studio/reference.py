"""The documentation's reference pages, generated from the code: the commands from
:data:`agent_studio.cli.main.COMMANDS`, the settings from the schema, and the environments,
model name schemes, verifiers and export formats from their registries.

``docs/hooks.py`` puts each table where a page says ``<!-- reference: NAME -->``; the tests check
that every command and every setting appears in the built site.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from agent_studio.architecture import layers_markdown


def _cell(text: object) -> str:
    """Text fit for one cell of a Markdown table."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ").strip()


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines (the cells already fit: see :func:`_cell`)."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


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
        rows.append((names, action.help % {"default": action.default} if action.help else ""))
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
            parts += ["", *_table(["argument", "meaning"], [[names, _cell(help_text)] for names, help_text in flags])]
    return "\n".join(parts)


def settings_markdown() -> str:
    """Every setting of the schema: its name, flag, group, default, allowed values and meaning."""
    from studio.settings import EpisodeSettings, schema, shown_default

    rows = [
        [
            f"`{spec.name}`",
            f"`--{spec.name.replace('_', '-')}`" if setting.cli and not setting.custom else "(drawn by each surface)",
            setting.group,
            f"`{_cell(shown_default(spec, setting))}`",
            "-" if setting.custom else _cell(setting.expectation()),
            _cell(setting.help),
        ]
        for spec, setting in schema(EpisodeSettings)
    ]
    return "\n".join(_table(["setting", "flag", "group", "default", "allowed", "meaning"], rows))


def environments_markdown() -> str:
    """A section per registered environment and family: what it is, its actions, expert, step limit,
    how it forks, and a table of its options."""
    from studio.envs.registry import describe_all, option_limits

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
            rows = [
                [f"`{_cell(o['name'])}`", f"`{_cell(o['default'])}`", _cell(o["help"] + option_limits(o))]
                for o in info["options"]
            ]
            parts += [*_table(["option", "default", "meaning"], rows), ""]
    return "\n".join(parts)


def backends_markdown() -> str:
    """Every model name scheme (registered backends)."""
    from studio.models.registry import describe_schemes

    rows = [[f"`{_cell(s['example'])}`", _cell(s["summary"]), _cell(s["from_the_browser"])] for s in describe_schemes()]
    return "\n".join(_table(["name", "what it loads", "from the browser"], rows))


def verifiers_markdown() -> str:
    """Every registered verifier."""
    from studio.scaling.verifier_registry import describe_verifiers

    rows = [[f"`{v['name']}`", _cell(v["summary"]), "yes" if v["needs_judge"] else "no"] for v in describe_verifiers()]
    return "\n".join(_table(["verifier", "what picks the action", "asks a second model"], rows))


def exports_markdown() -> str:
    """Every registered export format."""
    from agent_studio.storage.export import export_formats

    rows = [[f"`{f.name}`", _cell(f.summary)] for f in export_formats()]
    return "\n".join(_table(["format", "rows and what trains on them"], rows))


def importers_markdown() -> str:
    """Every registered importer."""
    from studio.importers.registry import importer_summaries

    rows = [[f"`{name}`", _cell(summary)] for name, summary in importer_summaries().items()]
    return "\n".join(_table(["importer (`import --from`)", "what it reads"], rows))


REFERENCES: dict[str, Callable[[], str]] = {
    "layers": layers_markdown,
    "cli": cli_markdown,
    "settings": settings_markdown,
    "environments": environments_markdown,
    "backends": backends_markdown,
    "verifiers": verifiers_markdown,
    "exports": exports_markdown,
    "importers": importers_markdown,
}
