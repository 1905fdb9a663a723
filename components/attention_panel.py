"""The attention view of the selected step: closed (and never computed) until asked for.

Token strip coloured by attention from the action, the thought or all generated tokens (mean,
max, one layer, one head, rollout), the layer × head grid of what share goes to the current
observation, the instruction and the history, the projection onto the frame, and token
perception. Compare: the same view for another output of the step, or model B on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.errors import refused_into
from studio.analysis.attention import AGGREGATIONS
from studio.envs.registry import env_at
from studio.errors import StudioError
from studio.jobs import JobQueue
from studio.session import StudioSession
from studio.trace import TAKEN
from studio.validation import whole_number
from studio.viz.attention import perception_html, projection_image, segment_grid_figure, token_strip_html
from studio.viz.html import esc, message_html

SPANS = ("action", "thought", "generated")
MODES = tuple(AGGREGATIONS)


@dataclass
class AttentionPanel:
    output: gr.Dropdown
    model: gr.Radio
    span: gr.Radio
    mode: gr.Radio
    layer: gr.Slider
    head: gr.Slider
    compare: gr.Dropdown
    show: gr.Button
    message: gr.HTML
    strip: gr.HTML
    grid: gr.Plot
    projection: gr.Image
    perception: gr.HTML
    compare_strip: gr.HTML
    compare_projection: gr.Image

    @property
    def controls(self) -> list[Any]:
        return [self.output, self.model, self.span, self.mode, self.layer, self.head, self.compare]

    @property
    def outputs(self) -> list[Any]:
        return [
            self.message,
            self.strip,
            self.grid,
            self.projection,
            self.perception,
            self.compare_strip,
            self.compare_projection,
            self.layer,
            self.head,
        ]

    def cleared(self) -> dict[Any, Any]:
        """Values that empty every view (another episode is shown), by component."""
        values = ["", "", None, None, "", "", gr.Image(value=None, visible=False)]
        return dict(zip(self.outputs, values))  # the views first in outputs; the rest stay


def build() -> AttentionPanel:
    with gr.Accordion("Attention: what the model looked at (computed on demand)", open=False, elem_id="as-attention"):
        with gr.Row():
            output = gr.Dropdown(["taken"], value="taken", label="Output", scale=2, allow_custom_value=True)
            model = gr.Radio(["A", "B"], value="A", label="Model", scale=1)
            span = gr.Radio(list(SPANS), value="action", label="Attention from", scale=2)
        with gr.Row():
            mode = gr.Radio(list(MODES), value="mean", label="Aggregation", scale=3)
            layer = gr.Slider(0, 1, value=0, step=1, label="Layer", scale=2)
            head = gr.Slider(0, 1, value=0, step=1, label="Head", scale=2)
        with gr.Row():
            show = gr.Button(
                "Show attention for the selected step", variant="primary", scale=2, elem_id="as-attention-show"
            )
            compare = gr.Dropdown(["nothing"], value="nothing", label="Compare with", scale=2, allow_custom_value=True)
        message = gr.HTML()
        strip = gr.HTML(elem_id="as-attention-strip")
        grid = gr.Plot(label="Share of attention per layer and head", elem_id="as-attention-grid")
        with gr.Row(equal_height=False):
            projection = gr.Image(
                label="Attention on the frame", interactive=False, height=300, elem_id="as-attention-frame"
            )
            perception = gr.HTML(elem_id="as-attention-perception")
        compare_strip = gr.HTML(elem_id="as-attention-compare")
        compare_projection = gr.Image(
            label="Compared: attention on the frame", interactive=False, height=300, visible=False
        )
    return AttentionPanel(
        output,
        model,
        span,
        mode,
        layer,
        head,
        compare,
        show,
        message,
        strip,
        grid,
        projection,
        perception,
        compare_strip,
        compare_projection,
    )


def render(
    session: StudioSession,
    at: float,
    output: str,
    model: str,
    span: str,
    mode: str,
    layer: float,
    head: float,
    compare: str,
    jobs: JobQueue,
) -> list[Any]:
    """Compute (or reuse) the attention of the selected step and draw every view."""
    episode = session.episode
    index = whole_number(at or 0, "The selected step", 0)
    if span not in SPANS or mode not in MODES:
        raise StudioError(f"Attention from one of {', '.join(SPANS)}; aggregation one of {', '.join(MODES)}.")
    amap = _attention(session, jobs, index, output or "taken", model or "A", mode == "rollout")
    step = episode.steps[index]
    layer_index = min(whole_number(layer or 0, "The layer", 0), amap.layers - 1)
    head_index = min(whole_number(head or 0, "The head", 0), amap.heads - 1)
    values = amap.aggregate(mode, layer_index, head_index, span)
    env = env_at(episode.env, episode.env_options, episode.seed, step.state)
    picture = projection_image(
        amap, values, env, step.observation, step.frame if step.frame is not None else env.render()
    )
    compared_strip, compared_picture = "", None
    if compare and compare != "nothing":
        other_output, other_model = ("taken", "B") if compare == "model B" else (compare, model or "A")
        other = _attention(session, jobs, index, other_output, other_model, mode == "rollout")
        other_values = other.aggregate(mode, min(layer_index, other.layers - 1), min(head_index, other.heads - 1), span)
        compared_strip = f'<div class="as-muted">Compared: {esc(compare)}</div>' + token_strip_html(
            other, other_values, span
        )
        compared_picture = projection_image(
            other, other_values, env, step.observation, step.frame if step.frame is not None else env.render()
        )
    note = f"Step {index}, {output}, model {model}: {amap.layers} layers × {amap.heads} heads × {len(amap.rows)} generated tokens × {amap.length} positions, in {amap.seconds:.2f} s."
    return [
        message_html(note, "info"),
        token_strip_html(amap, values, span),
        segment_grid_figure(amap, span),
        picture,
        perception_html(amap),
        compared_strip,
        gr.Image(value=compared_picture, visible=compared_picture is not None),
        gr.Slider(maximum=max(amap.layers - 1, 1), value=layer_index),
        gr.Slider(maximum=max(amap.heads - 1, 1), value=head_index),
    ]


def _attention(session: StudioSession, jobs: JobQueue, index: int, output: str, slot: str, rollout: bool) -> Any:
    """The attention map from the session's cache, or computed as a job of the server's queue (a forward
    pass at up to 8k tokens: it waits for a slot, and the Jobs tab shows it)."""
    if session.attention_ready(index, output, slot, rollout):
        return session.attention(index, output, slot, rollout=rollout)
    with jobs.run("attention", f"attention of step {index} ({output}, model {slot})") as job:
        job.progress(0, 1, "one forward pass with eager attention")
        return session.attention(index, output, slot, rollout=rollout)


def output_names(session: StudioSession, at: float) -> list[Any]:
    step = session.step_at(at)
    names = [output.name for output in step.outputs()] if step is not None else [TAKEN]
    return [
        gr.Dropdown(choices=names, value="taken"),
        gr.Dropdown(choices=["nothing", *names[1:], "model B"], value="nothing"),
    ]


def wire(panel: AttentionPanel, state: gr.State, selected: gr.Slider, jobs: JobQueue) -> None:
    private = dict(api_visibility="private", concurrency_limit=None)

    @refused_into(panel.message)
    def draw(session: StudioSession, at: float, *controls: Any) -> list[Any]:
        return render(session, at, *controls, jobs=jobs)

    inputs = [state, selected, *panel.controls]
    panel.show.click(draw, inputs, panel.outputs, **private)
    # Changing how to look re-draws from the cache; only a new step or output computes again.
    for control in (panel.span, panel.mode, panel.compare):
        control.input(draw, inputs, panel.outputs, **private)
    for control in (panel.layer, panel.head):
        control.release(draw, inputs, panel.outputs, **private)
    # The raw value (``step_at`` checks it): an out-of-range step is refused once, by the select handler.
    selected.input(output_names, [state, selected], [panel.output, panel.compare], preprocess=False, **private)
