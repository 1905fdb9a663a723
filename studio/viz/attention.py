"""Views of an :class:`~studio.analysis.attention.AttentionMap`: the token strip, the layer × head
grid of segment shares, the projection onto the environment, and token perception."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.analysis.attention import AttentionMap
from studio.analysis.projection import cell_mass, grid_overlay, patch_overlay
from studio.viz.html import esc, num

SEGMENT_COLOURS = {
    "system": "#64748b",
    "task": "#2563eb",
    "history": "#a16207",
    "observation": "#16a34a",
    "image": "#16a34a",
    "output": "#9333ea",
}
GRID_SEGMENTS = (("observation", "current observation"), ("task", "instruction"), ("history", "history"))


def _segment_of(amap: AttentionMap) -> dict[int, str]:
    owner: dict[int, str] = {}
    for name in ("system", "history", "task", "observation", "image", "output"):  # later names win (task inside system)
        for position in amap.segments.get(name, []):
            owner[position] = name
    return owner


def token_strip_html(amap: AttentionMap, values: np.ndarray, span: str = "action") -> str:
    """Every token, its background as strong as the attention it got from the span; segments labelled."""
    owner = _segment_of(amap)
    chosen = {amap.rows[i] for i in amap._indices(span)}
    # The first token soaks up attention in most models (an "attention sink"): it is left out
    # of the colour scale, or it would wash every other token out.
    scale = values[1 : amap.length] if amap.length > 1 else values[: amap.length]
    peak = float(scale.max()) if scale.size else 1.0
    peak = peak or 1.0
    pieces, current = [], None
    for position, token in enumerate(amap.tokens):
        segment = owner.get(position)
        if segment != current:
            if segment is not None:
                pieces.append(
                    f'<span class="as-seg" style="border-color:{SEGMENT_COLOURS[segment]};color:{SEGMENT_COLOURS[segment]}">{esc(segment)}</span>'
                )
            current = segment
        level = min(float(values[position]) / peak, 1.0) if position < len(values) else 0.0
        border = " as-query" if position in chosen else ""
        pieces.append(
            f'<span class="as-att{border}" style="background:rgba(234,88,12,{num(0.85 * level, ".3f")})" title="{num(float(values[position]), ".4f") if position < len(values) else ""}">{esc(token)}</span>'
        )
    return f'<div class="as-strip">{"".join(pieces)}</div>'


def segment_grid_figure(amap: AttentionMap, span: str = "action") -> go.Figure:
    """Layer × head heatmaps: the share of the span's attention on the observation, the instruction, the history."""
    shares = amap.segment_shares(span)
    names = [(key, label) for key, label in GRID_SEGMENTS if key in shares]
    if "image" in shares and "observation" not in shares:
        names.insert(0, ("image", "image"))
    figure = make_subplots(
        rows=1,
        cols=max(len(names), 1),
        subplot_titles=[label for _, label in names] or ["no segments"],
        horizontal_spacing=0.08,
    )
    for column, (key, label) in enumerate(names, start=1):
        figure.add_heatmap(
            z=shares[key],
            zmin=0,
            zmax=1,
            colorscale="Inferno",
            showscale=column == len(names),
            name=label,
            hovertemplate=f"{esc(label)}<br>layer %{{y}} head %{{x}}<br>share %{{z:.3f}}<extra></extra>",
            row=1,
            col=column,
        )
        figure.update_xaxes(title_text="head", row=1, col=column)
    figure.update_yaxes(title_text="layer", row=1, col=1)
    figure.update_layout(
        template="plotly_white",
        height=420,
        margin=dict(l=50, r=20, t=70, b=40),
        title=f"share of the {esc(span)} tokens' attention, per layer and head",
    )
    return figure


def projection_image(
    amap: AttentionMap, values: np.ndarray, env: Any, observation: str, frame: np.ndarray | None
) -> np.ndarray | None:
    """The attention over the frame: per grid cell for text maps, per patch for image inputs; None when neither."""
    if frame is None:
        return None
    if amap.image_grid is not None and amap.segments.get("image"):
        positions = amap.segments["image"]
        per_image = amap.image_grid[0] * amap.image_grid[1]
        return patch_overlay(
            frame, values[positions[-per_image:]], amap.image_grid
        )  # the latest image is the current frame
    cells = env.text_cells(observation) if env is not None else []
    if not cells or amap.observation_span is None or amap.offsets is None:
        return None
    rows = 1 + max(r for _, r, _ in cells)
    columns = 1 + max(c for _, _, c in cells)
    mass = cell_mass(values, amap.offsets, amap.observation_span[0], cells, (rows, columns))
    return grid_overlay(frame, mass, env.cell_box)


def perception_html(amap: AttentionMap) -> str:
    """Each generated token coloured by the share of its attention that goes to the observation."""
    shares = amap.perception()
    pieces = []
    for index, position in enumerate(amap.rows):
        share = float(shares[index])
        pieces.append(
            f'<span class="as-att" style="background:rgba(22,163,74,{num(min(share * 1.5, 0.9), ".3f")})" title="{num(share, ".1%")} on the observation">{esc(amap.tokens[position])}</span>'
        )
    mean = float(shares.mean()) if len(shares) else 0.0
    return f'<div class="as-muted">Share of each generated token\'s attention on the current observation (mean {num(mean, ".1%")}).</div><div class="as-strip as-perception">{"".join(pieces)}</div>'
