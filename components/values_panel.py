"""The Values view of the episode panel: Monte Carlo Q of each output of the selected step, the
value of the taken path, and step pairs made from the values (queued with source ``mc``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.errors import as_message, refused_into
from agent_studio.storage import Store
from studio.jobs import JobQueue, WebLimits
from studio.session import ROLLOUT_POLICIES, StudioSession
from studio.trace import Episode
from studio.validation import real_number
from studio.scaling.values import StepValue
from studio.viz.html import message_html
from studio.viz.plots import value_curve_figure, values_figure


@dataclass
class ValuesPanel:
    rollout_policy: gr.Dropdown
    rollouts: gr.Number
    horizon: gr.Number
    discount: gr.Number
    estimate: gr.Button
    stop: gr.Button
    make_pairs: gr.Button
    min_gap: gr.Number
    message: gr.HTML
    bars: gr.Plot
    curve: gr.Plot


def build() -> ValuesPanel:
    with gr.Accordion("Values: Monte Carlo Q of each output (rollouts from the step)", open=False, elem_id="as-values"):
        with gr.Row():
            rollout_policy = gr.Dropdown(
                list(ROLLOUT_POLICIES), value="expert", label="Rollout policy", scale=2, elem_id="as-rollout-policy"
            )
            # No widget bounds: Gradio refuses an out-of-range number with a bare "Error"; the session
            # checks every value and says what is allowed in one line.
            rollouts = gr.Number(value=4, precision=0, label="Rollouts per output (1-64)", scale=1)
            horizon = gr.Number(value=0, precision=0, label="Horizon (0: to the end)", scale=1)
            discount = gr.Number(value=0.95, label="Discount (1: none)", scale=1, elem_id="as-values-discount")
        with gr.Row():
            estimate = gr.Button(
                "Estimate values for the selected step", variant="primary", scale=2, elem_id="as-values-estimate"
            )
            stop = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="as-values-stop")
        with gr.Row():
            min_gap = gr.Number(value=0.0, label="Minimum Q gap (0: any difference)", scale=1, elem_id="as-values-gap")
            make_pairs = gr.Button("Make pairs from values", scale=2, elem_id="as-values-pairs")
        message = gr.HTML(elem_id="as-values-message")
        bars = gr.Plot(label="Q ± standard error of each output", elem_id="as-values-bars")
        curve = gr.Plot(label="Value of the taken path", elem_id="as-values-curve")
    return ValuesPanel(
        rollout_policy, rollouts, horizon, discount, estimate, stop, make_pairs, min_gap, message, bars, curve
    )


def wire(
    panel: ValuesPanel, state: gr.State, selected: gr.Slider, store: Store, jobs: JobQueue, limits: WebLimits
) -> None:
    """Estimate (with a progress bar: rollouts done / total), store, draw; make pairs from the store's values.
    An estimate is a job of the server's queue (it waits for a slot; the Jobs tab shows and cancels it)
    within the operator's step budget."""
    private = dict(api_visibility="private", concurrency_limit=None)

    @refused_into(panel.message)
    def estimate(
        session: StudioSession,
        at: Any,
        policy: str,
        rollouts: Any,
        horizon: Any,
        discount: Any,
        progress=gr.Progress(),
    ) -> list[Any]:
        episode = session.stepped_episode()
        limits.check_steps(session.value_steps(at, rollouts, horizon), "This estimate")
        title = f"values of step {session.step_at(at).index} of episode {episode.id[:8]}"
        session.values_stop.clear()  # an earlier Stop must not cancel this estimate while it waits
        with jobs.run("values", title, cancel=session.values_stop) as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} rollouts")
                job.progress(done, total, f"{done} of {total} rollouts")

            values = session.estimate_values(at, policy, rollouts, horizon, progress=tick, discount=discount)
        store.preferences.save_values(values)
        return view(episode, values, _note(values))

    def show(session: StudioSession, at: Any) -> list[Any]:
        """The selected step's stored estimate (the one saved last) and the episode's value curve."""
        episode, step = session.episode, session.step_at(at)
        if episode is None or step is None:
            return ["", None, None]
        values = store.preferences.latest_step_values(episode.id, step.index)
        return view(
            episode, values, _note(values) if values else f"No values for step {step.index} yet: estimate them above."
        )

    def view(episode: Episode, values: list[StepValue], note: str) -> list[Any]:
        """The message, a step's bars and the episode's value curve (every stored estimate of it)."""
        everything = store.preferences.step_values(episode.id)
        return [message_html(note, "info"), values_figure(values), value_curve_figure(episode, everything)]

    @as_message
    def make_pairs(session: StudioSession, gap: Any) -> str:
        episode = session.stepped_episode()
        made = store.preferences.pairs_from_values(
            min_gap=real_number(gap, "The minimum gap", 0.0), episode_id=episode.id
        )
        return message_html(
            f"{made.created} pairs queued from values (source mc), {made.already_there} already queued; "
            f"{made.judged} judged by the values (annotator {', '.join(made.annotators) or 'mc'}; "
            f"{made.identical} with the same action skipped). "
            "Verify them in Annotate.",
            "info",
        )

    panel.estimate.click(
        estimate,
        [state, selected, panel.rollout_policy, panel.rollouts, panel.horizon, panel.discount],
        [panel.message, panel.bars, panel.curve],
        **private,
    )
    # The view follows the selected step (a click, a new step, another episode shown): its stored values.
    # The raw value (``step_at`` checks it): an out-of-range step is refused once, by the select handler.
    selected.change(show, [state, selected], [panel.message, panel.bars, panel.curve], preprocess=False, **private)
    # Runs beside the estimate (no queue limit): the session's stop flag (the job's cancel flag too)
    # ends it between rollout steps, or takes it out of the queue before it starts.
    panel.stop.click(lambda session: session.stop_values(), [state], None, **private)
    panel.make_pairs.click(make_pairs, [state, panel.min_gap], [panel.message], **private)


def _note(values: list[StepValue]) -> str:
    """One line on an estimate: the step, outputs × rollouts, settings, the best output."""
    best = max(values, key=lambda v: v.q)
    return (
        f"Step {values[0].step_index}: {len(values)} outputs × {values[0].rollouts} rollouts "
        f"({values[0].settings}); highest Q: {best.output}."
    )
