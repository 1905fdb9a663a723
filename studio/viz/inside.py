"""Figures of the network's insides: the logit lens (layer x action), probes per layer beside their
shuffled-label control, and each output token's dependence on the observation."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from studio.viz.html import esc


def lens_figure(view: Any) -> go.Figure:
    """The lens as a heatmap: per layer (rows), each candidate action's probability (columns)."""
    probs = np.exp(np.clip(view.logprobs, -50, 0)) if view.logprobs.shape[1] > 1 else view.logprobs
    label = "P(action)" if view.logprobs.shape[1] > 1 else "log P(action)"
    figure = go.Figure(
        go.Heatmap(
            z=probs,
            x=[esc(a) for a in view.actions],
            y=list(range(view.layers)),
            colorscale="Viridis",
            colorbar={"title": label},
            hovertemplate="layer %{y}<br>%{x}: %{z:.3f}<extra></extra>",
        )
    )
    title = f"Logit lens of step {view.step_index}: chosen {esc(view.chosen)}"
    if view.leads_from is not None:
        title += f"; the final choice leads from layer {view.leads_from}"
    figure.update_layout(
        title=title, xaxis_title="action", yaxis_title="layer", height=420, margin={"l": 50, "r": 20, "t": 50, "b": 40}
    )
    return figure


def probe_figure(result: Any) -> go.Figure:
    """Held-out score per layer, the shuffled-label control, and chance."""
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=result.layers, y=result.scores, mode="lines+markers", name=f"probe ({result.metric})")
    )
    figure.add_trace(
        go.Scatter(
            x=result.layers, y=result.control, mode="lines+markers", name="shuffled labels", line={"dash": "dot"}
        )
    )
    figure.add_hline(y=result.chance, line_dash="dash", line_color="grey", annotation_text="chance")
    figure.update_layout(
        title=f"What layer holds {esc(result.target)}? ({result.train_steps} steps fitted, {result.test_steps} held out)",
        xaxis_title="layer",
        yaxis_title=f"held-out {result.metric}",
        height=380,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return figure


def dependence_figure(result: Any) -> go.Figure:
    """KL(real || ablated) of each output token, in order."""
    figure = go.Figure(
        go.Bar(
            x=list(range(len(result.kl))),
            y=result.kl,
            hovertext=[esc(t) for t in result.tokens],
            hovertemplate="token %{x} %{hovertext}<br>KL %{y:.4f} nats<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"How much each token depends on the observation (step {result.step_index}, {result.ablation})",
        xaxis_title="output token",
        yaxis_title="KL (nats)",
        height=320,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    return figure
