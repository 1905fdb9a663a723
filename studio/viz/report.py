"""Self-contained HTML reports of an episode (or two side by side) or of a sweep: one file, no server, no network.

The page inlines everything it needs: the studio's stylesheet, plotly's JavaScript (once), the
figures as data, and the frames as PNG data URIs. It opens from a file or an email attachment.
Every string from a model, an environment or a file goes through the same escaping as the studio's
own views (:mod:`studio.viz.html`); the figures are plotly's JSON, which plotly renders as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from studio.errors import StudioError
from studio.trace import Episode
from studio.viz import stylesheet
from studio.viz.html import esc, num, timeline_html

if TYPE_CHECKING:  # the records' types only: a report page needs no rollout or scoring code
    from studio.evaluation.crossscore import CrossScore
    from studio.scaling.values import StepValue

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #0f172a; background: #f8fafc; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.as-report-meta { color: #475569; font-size: 13px; margin-bottom: 16px; }
.as-report-sides { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
.as-report-frames { display: flex; flex-wrap: wrap; gap: 8px; }
.as-report-frames figure { margin: 0; font-size: 12px; color: #475569; text-align: center; }
.as-report-frames img { height: 120px; image-rendering: pixelated; border: 1px solid #e2e8f0; border-radius: 4px; }
"""


def _figure_html(figure: Any, element_id: str) -> str:
    """A plotly figure as a div and the script that draws it (plotly.js is inlined once per page)."""
    if figure is None:
        return ""
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=element_id, config={"displaylogo": False})


def _frames_html(episode: Episode) -> str:
    from studio.viz.plots import png_data_uri
    from studio.viz.video import episode_frames

    try:
        frames = episode_frames(episode)
    except StudioError:
        return '<p class="as-muted">This episode kept no frames and no snapshots to draw them from.</p>'
    labels = [f"step {num(step.index)}" for step in episode.steps] + ["end"]
    figures = "".join(
        f'<figure><img alt="{esc(label)}" src="{png_data_uri(frame)}"><figcaption>{esc(label)}</figcaption></figure>'
        for frame, label in zip(frames, labels)
    )
    return f'<div class="as-report-frames">{figures}</div>'


def _side(episode: Episode, title: str, key: str) -> str:
    from studio.viz.plots import signals_figure

    return (
        f'<section class="as-report-side"><h2>{esc(title)}</h2>'
        f"{timeline_html(episode, read_only=True)}"
        f"<h2>Frames</h2>{_frames_html(episode)}"
        f"<h2>Signals per step</h2>{_figure_html(signals_figure(episode), f'as-report-signals-{key}')}</section>"
    )


def _page(title: str, meta: dict[str, Any], body: str) -> str:
    """One self-contained HTML document: the stylesheet and plotly.js inlined once."""
    from plotly.offline import get_plotlyjs

    css = stylesheet()
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{css}{PAGE_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<h1>Agent Studio report</h1><div class="as-report-meta">{esc(title)} · '
        f"<code>{esc(json.dumps(meta))}</code></div>{body}</body></html>"
    )


class ReportExtras(TypedDict, total=False):
    """What an episode's report shows beside its trace (``storage.reports.report_extras`` reads it
    from a store; each part may be left out)."""

    values: list[StepValue]
    """Monte Carlo step values (:func:`studio.scaling.values.estimate_step_values`)."""
    cross_scores: list[CrossScore]
    """One scoring model's view of the outputs (:func:`studio.evaluation.crossscore.cross_score`)."""
    judgements: list[dict[str, Any]]
    """A row per judgement of a pair the episode is in: step, compared, annotator, verdict, rationale."""
    labels: list[dict[str, Any]]
    """A row per step label: step, annotator, label, note."""


def _extras(
    episode: Episode,
    values: list[StepValue] | None,
    cross_scores: list[CrossScore] | None,
    judgements: list[dict[str, Any]] | None = None,
    labels: list[dict[str, Any]] | None = None,
) -> str:
    """The step values, model B's scores, judgements and step labels stored with the episode, where there are any."""
    from studio.viz.crossscore_html import cross_scores_html
    from studio.viz.plots import cross_score_figure, value_curve_figure

    parts = []
    if values:
        figure = value_curve_figure(episode, values)
        parts.append(f"<h2>Step values (Monte Carlo)</h2>{_figure_html(figure, 'as-report-values')}")
    if cross_scores:
        parts.append(
            "<h2>Another model's view of these outputs</h2>"
            f"{_figure_html(cross_score_figure(cross_scores), 'as-report-cross')}{cross_scores_html(episode, cross_scores)}"
        )
    parts.append(_rows_html("Judgements of its pairs", judgements or []))
    parts.append(_rows_html("Step labels", labels or []))
    return "".join(parts)


def episode_report(
    episode: Episode,
    compare: Episode | None = None,
    values: list[StepValue] | None = None,
    cross_scores: list[CrossScore] | None = None,
    judgements: list[dict[str, Any]] | None = None,
    labels: list[dict[str, Any]] | None = None,
) -> str:
    """The report page of ``episode`` (beside ``compare``, when given) as one HTML document, with the
    parts of :class:`ReportExtras` given."""
    if not episode.steps:
        raise StudioError(f"Episode {episode.id} has no steps: there is nothing to report.")
    title = f"{episode.env} · seed {episode.seed} · {episode.acted_by}"
    sides = [_side(episode, "A: " + _name(episode) if compare else "Trace", "a")]
    if compare is not None:
        sides.append(_side(compare, "B: " + _name(compare), "b"))
        title += f" vs {compare.acted_by}"
    meta = {"episode": episode.id, **({"compare": compare.id} if compare else {})}
    body = f'<div class="as-report-sides">{"".join(sides)}</div>{_extras(episode, values, cross_scores, judgements, labels)}'
    return _page(title, meta, body)


def sweep_report(name: str, spec: Any, results: dict[str, Any]) -> str:
    """The report page of a sweep: what ran, the results table, the paired tests and the plot."""
    from studio.viz.results import paired_html, results_figure, results_table_html

    title = f"sweep {name}: {', '.join(spec.models)} on {', '.join(spec.envs)}, {len(spec.seeds)} seeds"
    meta = {"sweep": name, "complete": results["complete"], "cells": results["cells"], "spec": spec.to_dict()}
    body = (
        f"<h2>Results ({num(results['complete'])} of {num(results['cells'])} episodes)</h2>"
        f"{results_table_html(results)}<h2>Paired tests on the same seeds</h2>{paired_html(results)}"
        f"{_figure_html(results_figure(results), 'as-report-results')}"
    )
    return _page(title, meta, body)


def _name(episode: Episode) -> str:
    outcome = "success" if episode.success else (episode.end_reason or "running")
    return f"{episode.acted_by} · {outcome} · return {episode.total_return:g}"


def write_page(page: str, out: str | Path) -> dict[str, Any]:
    """Write a report page to ``out`` (.html); where, and how many bytes."""
    path = Path(out).expanduser()
    if path.suffix.lower() not in (".html", ".htm"):
        raise StudioError(f"A report is written as .html, not {path.suffix or 'a file without a suffix'}.")
    if path.is_dir():
        raise StudioError(f"{path} is a folder; give a file name such as {path / 'report.html'}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise StudioError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    return {"path": str(path), "bytes": len(page.encode("utf-8"))}


def write_report(
    episode: Episode,
    out: str | Path,
    compare: Episode | None = None,
    **extras: Unpack[ReportExtras],
) -> dict[str, Any]:
    """Write :func:`episode_report` to ``out`` (.html), with ``extras`` (:class:`ReportExtras`); what was written."""
    written = write_page(episode_report(episode, compare, **extras), out)
    return {**written, "episodes": 1 + (compare is not None)}


def _rows_html(title: str, rows: list[dict[str, Any]]) -> str:
    """A titled table of plain rows (every value escaped)."""
    if not rows:
        return ""
    head = "".join(f"<th>{esc(column)}</th>" for column in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{esc('' if v is None else v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    return f'<h2>{esc(title)}</h2><table class="as-results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
