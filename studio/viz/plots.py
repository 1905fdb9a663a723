"""Plotly figures of episodes: the path on the map, rewards, per-step signals, latency.

Pure functions of the records (plus an environment to draw a map); two episodes can be
overlaid (models A and B on the same seed). plotly is imported here, not at ``import studio``.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.trace import Episode, Step
from studio.viz.html import esc, num

COLOURS = ("#2563eb", "#ea580c")
#: One colour per signal (an overlaid second episode is drawn dashed in the same colours).
SIGNAL_COLOURS = {
    "reward": "#93c5fd",
    "return": "#1d4ed8",
    "entropy": "#7c3aed",
    "chosen_probability": "#16a34a",
    "mean_logprob": "#ea580c",
    "policy_s": "#0891b2",
    "env_s": "#db2777",
    "tokens": "#64748b",
}
#: One colour per series (models, verifiers), in order.
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#4b5563")
LAYOUT = dict(
    template="plotly_white",
    # The legend at the figure's foot, under the x axis title (relative to the plot area it lands
    # on the title), with room for ticks, title and legend.
    margin=dict(l=40, r=16, t=40, b=72),
    legend=dict(orientation="h", yref="container", y=0, yanchor="bottom"),
    font=dict(size=12),
)


def _step_dtick(episode: Episode | None) -> int | None:
    """A step axis's tick spacing: every whole step for short episodes, plotly's choice for long ones."""
    return 1 if episode is not None and episode.length <= 30 else None


def step_signals(step: Step) -> dict[str, float | None]:
    """What the signal plots show for one step."""
    tokens = step.tokens or []
    logprobs = [t.logprob for t in tokens]
    entropies = [t.entropy for t in tokens if t.entropy is not None]
    action_entropy = step.extra.get("action_entropy")
    return {
        "reward": float(step.reward),
        # Score mode stores the entropy of the distribution over valid actions; otherwise the
        # mean entropy of the generated tokens stands in.
        "entropy": float(action_entropy)
        if action_entropy is not None
        else (sum(entropies) / len(entropies) if entropies else None),
        "chosen_probability": step.extra.get("chosen_action_probability"),
        "mean_logprob": sum(logprobs) / len(logprobs) if logprobs else None,
        "policy_s": step.timing.get("policy_s"),
        "env_s": step.timing.get("env_s"),
        "tokens": float(len(tokens)) if tokens else None,
    }


def _series(episode: Episode, name: str) -> tuple[list[int], list[float | None]]:
    values = [step_signals(s)[name] for s in episode.steps]
    return [s.index for s in episode.steps], values


def signals_figure(episode: Episode | None, overlay: Episode | None = None, selected: int | None = None) -> go.Figure:
    """Reward and return; entropy, chosen-action probability and mean token logprob; latency; tokens;
    the ``selected`` step marked by a line across them."""
    figure = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            "reward and return",
            "entropy · chosen-action probability · mean token logprob",
            "latency (s)",
            "tokens generated",
        ),
    )
    episodes = [e for e in (episode, overlay) if e is not None and e.steps]
    for number, item in enumerate(episodes):
        dash = "solid" if number == 0 else "dash"
        label = _label(item)
        x, rewards = _series(item, "reward")
        returns, total = [], 0.0
        for value in rewards:
            total += value or 0.0
            returns.append(total)
        figure.add_bar(
            x=x,
            y=rewards,
            name=f"reward · {label}",
            marker_color=SIGNAL_COLOURS["reward"],
            opacity=0.8 if number == 0 else 0.45,
            row=1,
            col=1,
        )
        figure.add_scatter(
            x=x, y=returns, name=f"return · {label}", line=dict(color=SIGNAL_COLOURS["return"], dash=dash), row=1, col=1
        )
        for name, symbol in (("entropy", "circle"), ("chosen_probability", "diamond"), ("mean_logprob", "square")):
            xs, ys = _series(item, name)
            if any(v is not None for v in ys):
                figure.add_scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=f"{name.replace('_', ' ')} · {label}",
                    marker_symbol=symbol,
                    line=dict(color=SIGNAL_COLOURS[name], dash=dash),
                    row=2,
                    col=1,
                )
        for name, symbol in (("policy_s", "circle"), ("env_s", "x")):
            xs, ys = _series(item, name)
            figure.add_scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=f"{name} · {label}",
                marker_symbol=symbol,
                line=dict(color=SIGNAL_COLOURS[name], dash=dash),
                row=3,
                col=1,
            )
        xs, ys = _series(item, "tokens")
        if any(v is not None for v in ys):
            figure.add_bar(
                x=xs,
                y=ys,
                name=f"tokens · {label}",
                marker_color=SIGNAL_COLOURS["tokens"],
                opacity=0.7 if number == 0 else 0.4,
                row=4,
                col=1,
            )
    figure.update_layout(**LAYOUT, height=720, barmode="group", showlegend=True)
    figure.update_xaxes(title_text="step", row=4, col=1, dtick=_step_dtick(episode))
    if selected is not None and episodes and 0 <= selected < episode.length:  # type: ignore[union-attr]
        figure.add_vline(x=selected, line=dict(color=SELECTED_COLOUR, width=2, dash="dot"), opacity=0.8)
        figure.add_annotation(
            text=f"step {selected}", x=selected, y=1.0, xref="x", yref="paper", showarrow=False, yshift=14
        )
    if not episodes:
        figure.add_annotation(
            text="No steps yet: press Step", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
    return figure


def path_figure(
    env: Any, episode: Episode | None, overlay: Episode | None = None, selected: int | None = None
) -> go.Figure | None:
    """The agent's path drawn over the map (environments that know where the agent is), else None;
    with ``selected``, over that step's own map (what it acted on), the agent there ringed."""
    if episode is None or not episode.steps or episode.steps[0].state is None:
        return None
    shown = selected if selected is not None and 0 <= selected < episode.length else 0
    state = episode.steps[shown].state if episode.steps[shown].state is not None else episode.steps[0].state
    env.rewind(episode.seed, state)  # the episode may come from a file: checked, one line if it does not fit
    if _agent_xy(env, episode.steps[0].state) is None:
        return None
    figure = go.Figure()
    frame = episode.steps[shown].frame if episode.steps[shown].frame is not None else env.render()
    figure.add_trace(go.Image(source=png_data_uri(frame)))  # a PNG, not a JSON array of pixels
    for number, item in enumerate(e for e in (episode, overlay) if e is not None and e.steps):
        points = path_points(env, item)
        offset = 4 * number  # two paths over the same cells stay apart
        figure.add_scatter(
            x=[p[0] + offset for p in points],
            y=[p[1] + offset for p in points],
            mode="lines+markers",
            name=_label(item),
            line=dict(color=COLOURS[number], width=3, dash="solid" if number == 0 else "dash"),
            marker=dict(size=7),
            text=[f"step {i}" for i in range(len(points))],
            hoverinfo="text",
        )
    where = _agent_xy(env, state) if selected is not None else None
    if where is not None:
        figure.add_scatter(
            x=[where[0]],
            y=[where[1]],
            mode="markers",
            name=f"step {shown}",
            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(color=SELECTED_COLOUR, width=3)),
            hoverinfo="name",
        )
    title = "path (start: step 0)" if selected is None else f"path, over the map step {shown} acted on"
    figure.update_layout(**LAYOUT, height=480, title=title)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


#: The colour that marks the selected step in the plots.
SELECTED_COLOUR = "#db2777"


def path_points(env: Any, episode: Episode) -> list[tuple[float, float]]:
    """The agent's position before every step, and after the last one."""
    points = [_agent_xy(env, s.state) for s in episode.steps if s.state is not None]
    last = episode.steps[-1]
    if last.state is not None and last.action is not None and last.valid:
        env.rewind(episode.seed, last.state)  # the episode may come from a file
        env.step(last.action)  # deterministic environments: the final position
        points.append(_agent_xy(env, env.get_state()))
    return [p for p in points if p is not None]


def _agent_xy(env: Any, state: Any) -> tuple[float, float] | None:
    """Where the agent is in ``state``; None for a snapshot (from a file) that does not say."""
    try:
        return env.agent_xy(state)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def action_bins(step: Step | None) -> dict[str, Any] | None:
    """A score-mode step's per-dimension bin distributions (``extra["action_bins"]``), checked: the
    record may come from someone else's file. None when the step has none or they do not fit."""
    record = step.extra.get("action_bins") if step is not None else None
    try:
        bins, low, high = int(record["bins"]), record["low"], record["high"]
        chosen, probabilities = record["chosen"], record["probabilities"]
        dims = len(probabilities)
        fits = 2 <= bins <= 1024 and 1 <= dims <= 64 and len(low) == len(high) == len(chosen) == dims
        fits = fits and all(len(p) == bins and all(isinstance(v, (int, float)) for v in p) for p in probabilities)
        fits = fits and all(isinstance(c, int) and 0 <= c < bins for c in chosen)
        fits = fits and all(isinstance(v, (int, float)) and math.isfinite(v) for v in [*low, *high])
    except (TypeError, KeyError, ValueError):
        return None
    if not fits:
        return None
    names = record.get("names")
    if not (isinstance(names, list) and len(names) == dims and all(isinstance(n, str) and len(n) <= 60 for n in names)):
        names = [f"dimension {d + 1}" for d in range(dims)]
    return {"bins": bins, "low": low, "high": high, "chosen": chosen, "probabilities": probabilities, "names": names}


def action_bins_figure(step: Step | None) -> go.Figure | None:
    """One histogram per action dimension: the model's probability of each bin (at the bin's value),
    given the bins taken for the dimensions before it; the taken bin in orange."""
    record = action_bins(step)
    if step is None or record is None:
        return None
    dims, bins = len(record["probabilities"]), record["bins"]
    # Plotly reads a little HTML in titles: the names (from a file, perhaps) are escaped.
    figure = make_subplots(rows=dims, cols=1, subplot_titles=[esc(name) for name in record["names"]])
    for d, probabilities in enumerate(record["probabilities"]):
        low, high = float(record["low"][d]), float(record["high"][d])
        centres = [low + (b + 0.5) * (high - low) / bins for b in range(bins)]
        colours = [COLOURS[1] if b == record["chosen"][d] else COLOURS[0] for b in range(bins)]
        figure.add_trace(
            go.Bar(
                x=centres,
                y=[float(p) for p in probabilities],
                marker_color=colours,
                width=(high - low) / bins,
                customdata=list(range(bins)),
                hovertemplate="bin %{customdata} (value %{x:.3g}): %{y:.4f}<extra></extra>",
                showlegend=False,
            ),
            row=d + 1,
            col=1,
        )
        figure.update_yaxes(title_text="probability", rangemode="tozero", row=d + 1, col=1)
    figure.update_layout(
        **LAYOUT,
        height=max(260, 200 * dims + 60),
        title=f"step {num(step.index)}: probability of each bin per dimension (taken in orange)",
        bargap=0,
    )
    return figure


def action_distribution_figure(step: Step | None) -> go.Figure | None:
    """The probability of every valid action at a score-mode step (per dimension for a continuous
    action cut into bins); None for other steps."""
    if action_bins(step) is not None:
        return action_bins_figure(step)
    if step is None or not step.action_logprobs:
        return None
    ranked = sorted(step.action_logprobs.items(), key=lambda item: item[1])
    colours = [COLOURS[1] if action == step.action else COLOURS[0] for action, _ in ranked]
    probabilities = [math.exp(v) for _, v in ranked]
    # Plotly reads a little HTML in labels: actions (model or file text) are escaped, and shown as text.
    # Every bar is labelled (tick text set explicitly: plotly would skip some), the taken one says so.
    labels = [f"{esc(a)} (taken)" if a == step.action else esc(a) for a, _ in ranked]
    positions = list(range(len(ranked)))
    figure = go.Figure(
        go.Bar(
            x=probabilities,
            y=positions,
            orientation="h",
            marker_color=colours,
            text=[f"{p:.3f}" for p in probabilities],
            textposition="outside",
            cliponaxis=False,
            hovertext=labels,
            hoverinfo="text+x",
        )
    )
    figure.update_layout(
        **{**LAYOUT, "margin": dict(l=8, r=40, t=40, b=32)},
        height=max(220, 24 * len(ranked) + 90),
        title=f"step {num(step.index)}: probability of each valid action (taken in orange)",
    )
    figure.update_yaxes(tickmode="array", tickvals=positions, ticktext=labels, automargin=True)
    figure.update_xaxes(range=[0, 1.1], title_text="probability")
    return figure


def values_figure(values: list[Any]) -> go.Figure | None:
    """Q ± standard error of each output of one step (:class:`studio.scaling.values.StepValue`), the taken
    output in orange; None without values."""
    if not values:
        return None
    labels = [esc(f"{v.output}: {v.action}"[:80]) for v in values]
    positions = list(range(len(values)))
    figure = go.Figure(
        go.Bar(
            x=[v.q for v in values],
            y=positions,
            orientation="h",
            error_x=dict(type="data", array=[v.stderr for v in values], visible=True),
            marker_color=[COLOURS[1] if v.output == "taken" else COLOURS[0] for v in values],
            text=[f"Q {v.q:+.2f} ± {v.stderr:.2f} · {sum(v.successes)}/{v.rollouts} succeeded" for v in values],
            textposition="inside",
            insidetextanchor="start",
            hovertext=labels,
            hoverinfo="text+x",
        )
    )
    first = values[0]
    figure.update_layout(
        **{**LAYOUT, "margin": dict(l=8, r=40, t=40, b=32)},
        height=max(220, 28 * len(values) + 100),
        title=esc(
            f"step {first.step_index}: Q of each output ({first.rollouts} rollouts each, {first.rollout_policy})"
        ),
    )
    figure.update_yaxes(tickmode="array", tickvals=positions, ticktext=labels, automargin=True)
    figure.update_xaxes(title_text="mean return from this step (Q)")
    return figure


def value_curve_figure(episode: Episode | None, values: list[Any]) -> go.Figure | None:
    """Q of the taken output along the episode (where estimated), with the entropy of each step's
    action distribution beside it (exploration vs exploitation); None without values."""
    taken = {v.step_index: v for v in values if v.output == "taken"}
    if episode is None or not taken:
        return None
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    indexes = sorted(taken)
    figure.add_trace(
        go.Scatter(
            x=indexes,
            y=[taken[i].q for i in indexes],
            error_y=dict(type="data", array=[taken[i].stderr for i in indexes], visible=True),
            mode="lines+markers",
            name="Q of the taken output",
            line=dict(color=COLOURS[1]),
        ),
        secondary_y=False,
    )
    entropy = [(s.index, step_signals(s)["entropy"]) for s in episode.steps]
    entropy = [(i, e) for i, e in entropy if e is not None]
    if entropy:
        figure.add_trace(
            go.Scatter(
                x=[i for i, _ in entropy],
                y=[e for _, e in entropy],
                mode="lines",
                name="entropy (nats)",
                line=dict(color=COLOURS[0], dash="dot"),
            ),
            secondary_y=True,
        )
    figure.update_layout(**LAYOUT, height=300, title="value of the taken path, and the policy's entropy")
    figure.update_xaxes(title_text="step", dtick=_step_dtick(episode))
    figure.update_yaxes(title_text="Q", secondary_y=False)
    figure.update_yaxes(title_text="entropy", secondary_y=True)
    return figure


def png_data_uri(frame: Any) -> str:
    from studio.trace import encode_frame

    return "data:image/png;base64," + encode_frame(frame)


def _label(episode: Episode) -> str:
    """An episode's name in a legend: escaped, since plotly reads a little HTML in its text."""
    model = (episode.model or {}).get("id")
    model_name = str(model).split("/")[-1] if model else ""
    return esc(f"{episode.policy}{' · ' + model_name if model_name else ''} · {episode.id[:6]}")


def coverage_figure(points: list[Any], title: str = "") -> go.Figure | None:
    """Success rate vs K, one line per verifier, with 95% Wilson intervals
    (:class:`studio.scaling.coverage.CoveragePoint`); None without points."""
    if not points:
        return None
    figure = go.Figure()
    verifiers = list(dict.fromkeys(point.verifier for point in points))
    for number, verifier in enumerate(verifiers):
        mine = [point for point in points if point.verifier == verifier]
        # Each verifier's points a little to the side (on the log axis) so the intervals do not hide each other.
        dodge = 1 + 0.04 * (number - (len(verifiers) - 1) / 2)
        low = [point.rate - point.interval[0] for point in mine]
        high = [point.interval[1] - point.rate for point in mine]
        figure.add_trace(
            go.Scatter(
                x=[point.k * dodge for point in mine],
                y=[point.rate for point in mine],
                mode="lines+markers",
                name=esc(verifier),
                line=dict(color=PALETTE[number % len(PALETTE)], width=2),
                error_y=dict(type="data", symmetric=False, array=high, arrayminus=low, visible=True),
                text=[f"{point.successes}/{point.episodes} succeeded" for point in mine],
                customdata=[point.k for point in mine],
                hovertemplate="K=%{customdata}: %{y:.0%} (%{text})<extra>" + esc(verifier) + "</extra>",
            )
        )
    ks = sorted({point.k for point in points})
    figure.update_layout(
        **LAYOUT,
        height=360,
        title=esc(title or "Best-of-K coverage: success rate vs K (95% Wilson intervals)"),
        legend_title_text="verifier",
    )
    figure.update_xaxes(
        title_text="K (outputs sampled per step)", type="log", tickvals=ks, ticktext=[str(k) for k in ks]
    )
    figure.update_yaxes(title_text="episodes that succeeded", range=[-0.03, 1.03], tickformat=".0%")
    return figure


def cross_score_figure(scores: list[Any]) -> go.Figure | None:
    """Per step: model A's and model B's log-probability of A's output, and where B prefers another
    action (:class:`studio.evaluation.crossscore.CrossScore`); None without scores."""
    if not scores:
        return None
    steps = [s.step_index for s in scores]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=[s.own_total for s in scores],
            mode="lines+markers",
            name="A (who wrote it)",
            line=dict(color="#2563eb"),
        )
    )
    scorer = esc(scores[0].scorer)
    figure.add_trace(
        go.Scatter(
            x=steps, y=[s.total for s in scores], mode="lines+markers", name=f"B ({scorer})", line=dict(color="#ea580c")
        )
    )
    differs = [s for s in scores if s.preferred is not None and s.preferred != s.action]
    if differs:
        figure.add_trace(
            go.Scatter(
                x=[s.step_index for s in differs],
                y=[s.total for s in differs],
                mode="markers",
                name="B prefers another action",
                marker=dict(symbol="x", size=11, color="#b91c1c"),
                text=[f"A took {esc(s.action)}; B prefers {esc(s.preferred)}" for s in differs],
                hovertemplate="step %{x}: %{text}<extra></extra>",
            )
        )
    figure.update_layout(**LAYOUT, height=300, title="Log-probability of each step's output under A and under B")
    figure.update_xaxes(title_text="step", dtick=1)
    figure.update_yaxes(title_text="log P(output)")
    return figure
