"""Results of a comparison or a sweep as HTML and a plot: every value escaped (numbers too).

``results`` is the dict of :func:`studio.evaluation.sweep.sweep_results` (or ``compare``'s): ``results`` rows
per (model, environment) and ``paired`` tests per two models.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from studio.viz.html import esc, num
from studio.viz.plots import PALETTE

COLUMNS = (
    "model",
    "environment",
    "success (95% CI)",
    "episodes",
    "mean return",
    "steps",
    "invalid actions",
    "progress",
    "tokens / step",
    "s / step",
)


def _percent(value: Any) -> str:
    return "–" if value is None else num(100 * value, ".0f") + "%"


def _plain(value: Any, spec: str) -> str:
    return "–" if value is None else num(value, spec)


def _success_cell(row: dict[str, Any]) -> str:
    """The rate, its interval in words, and a bar with the interval drawn on it; "n/a" where the
    environment has no notion of success (compare returns there)."""
    rate, low, high = row["success_rate"], row["success_low"], row["success_high"]
    if rate is None:
        return "<span class='as-subtle' title='this environment has no notion of success: compare returns'>n/a</span>"
    bar = (
        f'<span class="as-rate-bar"><span class="as-rate-ci" style="left:{num(100 * low, ".1f")}%;'
        f'width:{num(100 * (high - low), ".1f")}%"></span>'
        f'<span class="as-rate-dot" style="left:{num(100 * rate, ".1f")}%"></span></span>'
    )
    return f"{_percent(rate)} <span class='as-subtle'>[{_percent(low)}, {_percent(high)}]</span> {bar}"


def results_table_html(results: dict[str, Any]) -> str:
    """The results rows as a table (success with its Wilson interval drawn as a bar)."""
    rows = results.get("results") or []
    if not rows:
        return '<div class="as-empty">No complete episode yet.</div>'
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>"
        f"<td>{esc(row['model'])}</td><td>{esc(row.get('env_label', row['env']))}</td><td>{_success_cell(row)}</td>"
        f"<td>{num(row['episodes'])}</td><td>{_plain(row['mean_return'], '.3g')}</td>"
        f"<td>{_plain(row['mean_steps'], '.1f')}</td><td>{_percent(row['invalid_rate'])}</td>"
        f"<td>{_percent(row['progress_rate'])}</td><td>{_plain(row['tokens_per_step'], '.1f')}</td>"
        f"<td>{_plain(row['seconds_per_step'], '.2f')}</td>"
        "</tr>"
        for row in rows
    )
    return f'<table class="as-results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def paired_html(results: dict[str, Any]) -> str:
    """One line per two models: who succeeded where the other did not, McNemar's exact p, and the
    paired bootstrap of returns."""
    lines = []
    for paired in results.get("paired") or []:
        first, second = esc(paired["first"]), esc(paired["second"])
        if not paired["pairs"]:
            lines.append(f"<li><b>{first}</b> vs <b>{second}</b>: no (environment, options, seed) run by both</li>")
            continue
        text = (
            f"<b>{first}</b> vs <b>{second}</b> on {num(paired['pairs'])} shared (environment, options, seed): "
            f"only {first} succeeded {num(paired['only_first'])}, only {second} {num(paired['only_second'])}, "
            f"both {num(paired['both_succeeded'])}, neither {num(paired['neither'])}; "
            f"McNemar exact p = {esc(paired['mcnemar_p_text'])}"
        )
        returns = paired.get("returns")
        if returns is not None:
            text += (
                f"; return difference {num(returns['mean_difference'], '.3g')} "
                f"[{num(returns['low'], '.3g')}, {num(returns['high'], '.3g')}], "
                f"bootstrap p = {esc(returns['p_text'])}"
            )
        lines.append(f"<li>{text}</li>")
    trained = [
        f"<li><b>{esc(label)}</b>: {esc(found['line'])}</li>" for label, found in (results.get("trained") or {}).items()
    ]  # what each trained arm (a model:NAME verifier, a BASE+lora:NAME policy) was trained on
    shown = f'<ul class="as-paired">{"".join(lines)}</ul>' if lines else ""
    return shown + (f'<ul class="as-trained-arms">{"".join(trained)}</ul>' if trained else "")


def results_figure(results: dict[str, Any]) -> go.Figure | None:
    """Success rate per environment, a bar per model, with the Wilson 95% interval; None without rows."""
    rows = [row for row in results.get("results") or [] if row["success_rate"] is not None]
    if not rows:
        return None
    figure = go.Figure()
    envs = list(dict.fromkeys(row["env_label"] for row in rows))
    for number, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
        mine = {row["env_label"]: row for row in rows if row["model"] == model}
        shown = [env for env in envs if env in mine]
        figure.add_trace(
            go.Bar(
                x=[esc(env) for env in shown],
                y=[mine[env]["success_rate"] for env in shown],
                name=esc(model),
                marker_color=PALETTE[number % len(PALETTE)],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[mine[env]["success_high"] - mine[env]["success_rate"] for env in shown],
                    arrayminus=[mine[env]["success_rate"] - mine[env]["success_low"] for env in shown],
                ),
                text=[f"{mine[env]['successes']} of {mine[env]['episodes']}" for env in shown],
                textposition="none",
                hovertemplate="%{x}: %{y:.0%} (%{text})<extra>" + esc(model) + "</extra>",
            )
        )
    figure.update_layout(
        barmode="group",
        height=340,
        margin=dict(l=50, r=20, t=50, b=40),
        title="Success rate by environment (95% Wilson intervals)",
        legend_title_text="model",
        template="plotly_white",
    )
    figure.update_yaxes(range=[0, 1.05], tickformat=".0%", title_text="episodes that succeeded")
    return figure


def progress_html(done: int, total: int, state: str, detail: str = "") -> str:
    """A sweep's progress bar: ``done`` of ``total`` episodes, what it is doing (escaped)."""
    share = done / total if total else 1.0
    return (
        f'<div class="as-sweep-progress" data-done="{num(done)}" data-total="{num(total)}">'
        f'<div class="as-progress-track"><div class="as-progress-fill" style="width:{num(100 * share, ".1f")}%"></div></div>'
        f"<div>{num(done)} of {num(total)} episodes · {esc(state)}"
        + (f" · <span class='as-subtle'>{esc(detail)}</span>" if detail else "")
        + "</div></div>"
    )


def diagnostics_html(results: dict[str, Any]) -> str:
    """What went wrong, per model and environment: each reason with its count and links that open
    the steps where it happened (the presentation view, at that step)."""
    rows = results.get("diagnostics") or []
    if not rows:
        return ""
    blocks = []
    for row in rows:
        items = "".join(
            f"<tr><td>{num(reason['count'])}</td><td>{esc(reason['kind'])}</td><td>{esc(reason['reason'])}</td><td>"
            + " ".join(
                f'<a href="?present={esc(e["episode"])}&amp;step={num(e["step"])}" target="_blank" rel="noopener">'
                f"{esc(e['episode'][:8])} step {num(e['step'])}</a>"
                for e in reason["examples"]
            )
            + "</td></tr>"
            for reason in row["reasons"]
        )
        other = f"<tr><td>{num(row['other'])}</td><td colspan='3'>other reasons</td></tr>" if row["other"] else ""
        blocks.append(
            f"<details class='as-diagnostics'><summary>What went wrong: {esc(row['model'])} on "
            f"{esc(row['env_label'])} <span class='as-subtle'>({num(row['steps'])} steps)</span></summary>"
            f"<table class='as-results'><thead><tr><th>times</th><th>kind</th><th>reason</th><th>where</th></tr></thead>"
            f"<tbody>{items}{other}</tbody></table></details>"
        )
    return "".join(blocks)
