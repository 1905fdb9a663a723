"""The house, as data: the core's layers (bottom first) and the packages around it.

``tests/project/test_architecture.py`` checks every import against these lists, and the architecture page
draws its diagram from them (``<!-- reference: layers -->``), so the picture cannot drift from the code.
"""

from __future__ import annotations

#: The core's layers, bottom first: a module imports (at module level) only from its own layer or
#: those below. A function-level import may reach up where it is late by design (a registry
#: loading its built-ins, a view asking the session), never to gradio, SQLAlchemy or the outer packages.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    (
        "foundation",
        (
            "studio.errors",
            "studio.validation",
            "studio.plugins",
            "studio.processes",
            "studio._deprecation",
            "studio.evaluation.stats",
            "studio.scaling.verifier_registry",
        ),
        "errors, checks at the trust boundary, the entry-point loader, whether a process runs, every statistic, the verifier registry",
    ),  # fmt: skip
    (
        "records",
        ("studio.trace", "studio.frames", "studio.analysis"),
        "episodes, steps, tokens, frames; attention maths",
    ),
    ("models and worlds", ("studio.models", "studio.envs"), "backends and their registry; environments and theirs"),
    ("imports", ("studio.importers",), "episodes recorded elsewhere: the importer registry and each format's reader"),
    (
        "insides",
        ("studio.internals",),
        "steering vectors, activations of stored steps, the logit lens, probes, observation dependence",
    ),
    ("settings", ("studio.settings",), "the one settings schema"),
    ("agents", ("studio.agents",), "the policy protocol, ReAct, scripted policies"),
    ("episodes", ("studio.episodes",), "the runner and its sinks, episodes side by side, live output"),
    ("scaling", ("studio.scaling",), "verifiers, Monte Carlo values, the judge, best-of-K coverage"),
    (
        "training",
        ("studio.training",),
        "TRL's trainers on the store's rows: Q-value models and policies; trained models by name; trained verifiers",
    ),
    (
        "evaluation",
        ("studio.evaluation", "studio.policies"),
        "sweeps, comparisons, cross-scores; policy_from_settings",
    ),
    (
        "execution",
        ("studio.executors",),
        "where sweeps' cells and values' steps run: this process, or a Ray cluster's workers",
    ),
    (
        "results",
        ("studio.results",),
        "sweep metrics and campaign statistics as CSV or Parquet tables and in experiment trackers",
    ),
    ("surfaces of the core", ("studio.session", "studio.jobs", "studio.viz"), "a browser tab's session, jobs, views"),
]

#: The packages around the core (by folder: ``storage/`` and ``components/`` are imported as
#: ``agent_studio.storage`` and ``agent_studio.components``), and which of ours each may import
#: (``studio`` is the core; only ``components`` imports gradio).
OUTER: dict[str, tuple[str, ...]] = {
    "studio": ("studio",),
    "storage": ("studio", "storage"),
    "components": ("studio", "storage", "components"),
    "agent_studio": ("studio", "storage", "components", "agent_studio"),
}


def outer_of(module: str) -> str | None:
    """Which package of :data:`OUTER` ``module`` belongs to (None: not ours)."""
    for prefix, package in (
        ("agent_studio.storage", "storage"),
        ("agent_studio.components", "components"),
        ("agent_studio", "agent_studio"),
        ("studio", "studio"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return package
    return None


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (the longest matching prefix), None if none matches."""
    best: tuple[int, int] | None = None
    for index, (_name, prefixes, _what) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def layers_markdown() -> str:
    """The layers as the architecture page draws them, top first."""
    rows = [
        "```",
        "app.py ─► agent_studio/cli      the command line; serve is the composition root",
        "               │ wires",
        "      ┌────────┴─────────────────────┐",
        "components/ (Gradio panels)    storage/ (store, migrations, exports)",
        "      └────────┬─────────────────────┘",
        "               ▼",
        "studio/ (the core), top layer first:",
    ]
    width = max(len(name) for name, _p, _w in LAYERS)
    for name, prefixes, _what in reversed(LAYERS):
        packages = [p.removeprefix("studio.") for p in prefixes]
        line = f"  {name:<{width}} │ "
        for package in packages:  # wrapped to the width a page shows without scrolling
            if len(line) + len(package) > 78 and not line.endswith("│ "):
                rows.append(line.rstrip())
                line = " " * (width + 2) + " │ "
            line += package + "  "
        rows.append(line.rstrip())
    rows += ["```", "", "| layer (top first) | packages | what lives there |", "|---|---|---|"]
    for name, prefixes, what in reversed(LAYERS):
        rows.append(f"| {name} | {', '.join(f'`{p}`' for p in prefixes)} | {what} |")
    return "\n".join(rows)
