"""HTML of the Episodes tab's finding tools: rubric verdicts with their cited steps as links, tags and
notes, failure aggregates with examples to open, and the side-by-side trajectory diff. Every text in
them is escaped (imported transcripts and judges' explanations are untrusted)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from studio.viz.html import esc, plural


def step_link(episode_id: str, step: int | None, text: str | None = None) -> str:
    """A link that opens the episode at that step in the Episode tab (``/?open=ID&step=N``)."""
    at = "" if step is None else f"&step={int(step)}"
    label = text if text is not None else (f"step {step}" if step is not None else episode_id[:8])
    return (
        f'<a class="as-step-link" href="?open={quote(str(episode_id), safe="")}{at}" target="_blank">{esc(label)}</a>'
    )


def verdicts_html(verdicts: list[Any]) -> str:
    """Each verdict: the episode, the label, the explanation, and its citations as links."""
    if not verdicts:
        return ""
    rows = []
    for verdict in verdicts:
        cites = ", ".join(step_link(verdict.episode_id, n) for n in verdict.citations) or "no step cited"
        rows.append(
            f"<tr><td>{step_link(verdict.episode_id, None)}</td><td><b>{esc(verdict.label)}</b></td>"
            f"<td>{esc(verdict.explanation)}</td><td class='as-cites'>{cites}</td><td>{esc(verdict.judge)}</td></tr>"
        )
    head = "<tr><th>episode</th><th>label</th><th>explanation</th><th>cites</th><th>judge</th></tr>"
    return f"<table class='as-table as-verdicts'>{head}{''.join(rows)}</table>"


def agreement_html(judge: str, annotator: str, report: dict[str, Any]) -> str:
    kappa = "n/a (one label throughout)" if report["kappa"] is None else f"{report['kappa']:.3f}"
    cells = "".join(
        f"<tr><td>{esc(truth)}</td><td>{esc(', '.join(f'{j}: {n}' for j, n in sorted(row.items())))}</td></tr>"
        for truth, row in sorted(report["confusion"].items())
    )
    return (
        f"<div class='as-agreement'><b>{esc(judge)}</b> against <b>{esc(annotator)}</b> on "
        f"{plural(report['episodes'], 'episode')}: accuracy {report['accuracy']:.1%}, Cohen's kappa {kappa}</div>"
        f"<table class='as-table'><tr><th>person said</th><th>judge said</th></tr>{cells}</table>"
    )


def marks_html(tags: list[tuple[int | None, str]], notes: list[dict[str, Any]], episode_id: str) -> str:
    """An episode's tags and notes, each on a step linked to it."""
    if not tags and not notes:
        return "<div class='as-muted'>No tags or notes yet.</div>"

    def where(step: int | None) -> str:
        return "episode" if step is None else step_link(episode_id, step)

    tag_items = "".join(f"<span class='as-tag'>{esc(tag)}</span> on {where(step)} " for step, tag in tags)
    note_items = "".join(
        f"<li>{where(note['step'])}: {esc(note['text'])} <span class='as-muted'>({esc(note['author'])})</span></li>"
        for note in notes
    )
    return f"<div class='as-tags'>{tag_items}</div><ul class='as-notes'>{note_items}</ul>"


def aggregates_html(found: Any) -> str:
    """Invalid-action reasons and loops, each with examples to open."""
    parts = [f"<div><b>{plural(found.episodes, 'episode')}</b> in the filter.</div>"]
    if found.invalid_reasons:
        rows = "".join(
            f"<tr><td>{count}</td><td>{esc(reason)}</td><td>{', '.join(step_link(e, i, f'{e[:8]}:{i}') for e, i in examples)}</td></tr>"
            for reason, count, examples in found.invalid_reasons
        )
        parts.append(f"<table class='as-table'><tr><th>invalid</th><th>reason</th><th>examples</th></tr>{rows}</table>")
    else:
        parts.append("<div class='as-muted'>No invalid actions.</div>")
    if found.loops:
        rows = "".join(
            f"<tr><td>{step_link(e, i, f'{e[:8]}:{i}')}</td><td>{esc(action)}</td></tr>" for e, i, action in found.loops
        )
        parts.append(f"<table class='as-table'><tr><th>loop from</th><th>repeated action</th></tr>{rows}</table>")
    else:
        parts.append("<div class='as-muted'>No action repeated three times in a row.</div>")
    for title, curve in (
        ("Mean token entropy (nats)", found.mean_entropy_by_step),
        ("Mean Q of the action taken", found.mean_value_by_step),
    ):
        if curve:
            cells = "".join(
                f"<td>{index}<br>{value:.3g}<br><span class='as-muted'>n={n}</span></td>"
                for index, value, n in curve[:40]
            )
            parts.append(f"<div>{esc(title)} by step</div><table class='as-table'><tr>{cells}</tr></table>")
    return "".join(parts)


def diff_html(diff: Any) -> str:
    """Two episodes side by side, the steps after they part shaded and the first divergent one marked."""

    def cell(step: Any) -> str:
        if step is None:
            return "<td class='as-muted'>—</td>"
        thought = f"<div class='as-muted'>{esc(step.thought[:200])}</div>" if step.thought else ""
        return f"<td>{thought}<code>{esc(step.action or '—')}</code></td>"

    rows = []
    for row in diff.rows:
        kind = "as-diverge" if row.index == diff.first_divergence else ("" if row.same else "as-parted")
        rows.append(f"<tr class='{kind}'><td>{row.index}</td>{cell(row.left)}{cell(row.right)}</tr>")
    head = f"<tr><th>step</th><th>{step_link(diff.left.id, None)}</th><th>{step_link(diff.right.id, None)}</th></tr>"
    return f"<div class='as-diff-reason'>First divergence: {esc(diff.reason)}</div><table class='as-table as-diff'>{head}{''.join(rows)}</table>"
