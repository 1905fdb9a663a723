"""The "worm plot": recorded actions against a policy's predictions, one panel per action dimension,
each predicted chunk drawn from the step it was predicted at, and the error per step below."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.viz.html import esc

RECORDED, PREDICTED, CHUNK = "#1f77b4", "#d62728", "rgba(214, 39, 40, 0.25)"


def worm_figure(prediction, title: str = "", fps: float | None = None) -> go.Figure:
    """One row per action dimension (recorded line, predicted points, chunk worms), then the error."""
    steps, width = prediction.recorded.shape
    rows = width + 1
    figure = make_subplots(
        rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.02,
        subplot_titles=[esc(n) for n in prediction.names] + ["error (distance to the recorded action)"],
    )  # fmt: skip
    x = list(range(steps))
    for d in range(width):
        row = d + 1
        first = d == 0
        for start, chunk in enumerate(prediction.chunks):
            if len(chunk) > 1:
                span = list(range(start, min(start + len(chunk), steps)))
                figure.add_trace(
                    go.Scatter(x=span, y=chunk[: len(span), d].tolist(), mode="lines", line={"color": CHUNK, "width": 1},
                               hoverinfo="skip", showlegend=first and start == 0, name="predicted chunks"),
                    row=row, col=1,
                )  # fmt: skip
        figure.add_trace(
            go.Scatter(x=x, y=prediction.recorded[:, d].tolist(), mode="lines", line={"color": RECORDED},
                       name="recorded", showlegend=first, hovertemplate="step %{x}: recorded %{y:.4g}<extra></extra>"),
            row=row, col=1,
        )  # fmt: skip
        figure.add_trace(
            go.Scatter(x=x, y=prediction.predicted[:, d].tolist(), mode="markers", marker={"color": PREDICTED, "size": 5},
                       name="predicted", showlegend=first, hovertemplate="step %{x}: predicted %{y:.4g}<extra></extra>"),
            row=row, col=1,
        )  # fmt: skip
    figure.add_trace(
        go.Bar(x=x, y=prediction.error.tolist(), marker={"color": "#7f7f7f"}, name="error",
               hovertemplate="step %{x}: error %{y:.4g}<extra></extra>"),
        row=rows, col=1,
    )  # fmt: skip
    figure.update_xaxes(title_text="step" if fps is None else f"step ({fps:g} per second)", row=rows, col=1)
    figure.update_layout(
        title=esc(title), height=160 * rows + 80, margin={"l": 50, "r": 20, "t": 60, "b": 40}, template="plotly_white"
    )
    return figure
