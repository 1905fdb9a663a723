"""The episode panel's widgets and views: settings, Reset / Step / Run / Stop / Fork, the frame, the
observation and the reasoning trace (timeline, candidates, action distribution, prompt on demand),
built by :func:`build` and filled by :meth:`EpisodePanel.render`. Its events are
:mod:`agent_studio.components.episode_events`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components import attention_panel, crossscore_panel, inside_panel, values_panel
from agent_studio.components.settings_form import SettingsForm
from studio.envs.registry import env_names
from studio.session import POLICIES, StudioSession
from studio.viz.html import candidates_html, message_html, timeline_html
from studio.viz.plots import action_distribution_figure


#: Values by component: a handler that returns one fills those components and leaves the rest.
Views = dict[Any, Any]


@dataclass
class EpisodePanel:
    form: SettingsForm
    """The episode and sampling settings, by name (made from the schema in studio.settings)."""
    reset: gr.Button
    step: gr.Button
    run_n: gr.Button
    run_count: gr.Number
    run_all: gr.Button
    stop: gr.Button
    human_action: gr.Dropdown
    take_action: gr.Button
    colour: gr.Radio
    selected: gr.Slider
    fork: gr.Button
    show_prompt: gr.Button
    video: gr.Button
    video_download: gr.DownloadButton
    video_message: gr.HTML
    video_attention: gr.Checkbox
    report: gr.Button
    report_download: gr.DownloadButton
    frame: gr.Image
    observation: gr.Textbox
    status: gr.HTML
    timeline: gr.HTML
    live: gr.HTML
    candidates: gr.HTML
    distribution: gr.Plot
    prompt: gr.HTML
    first_output: gr.Dropdown
    second_output: gr.Dropdown
    compare: gr.Button
    queue_pairs: gr.Button
    other_episode: gr.Textbox
    compare_episode: gr.Button
    pair_message: gr.HTML
    values: values_panel.ValuesPanel
    cross: crossscore_panel.CrossScorePanel
    attention: attention_panel.AttentionPanel
    inside: inside_panel.InsidePanel

    @property
    def outputs(self) -> list[gr.components.Component]:
        """What :meth:`render` fills (it answers by component: no order to keep)."""
        return [
            self.frame,
            self.observation,
            self.status,
            self.human_action,
            self.timeline,
            self.selected,
            self.candidates,
            self.distribution,
            self.prompt,
            self.first_output,
            self.second_output,
        ]

    def render(
        self,
        session: StudioSession,
        message: str = "",
        kind: str = "error",
        selected: int | None = None,
        mode: str = "logprob",
    ) -> Views:
        """Every view of the episode shown, by component."""
        episode = session.episode
        count = episode.length if episode is not None else 0
        index = count - 1 if selected is None else max(0, min(int(selected), count - 1))
        step = episode.steps[index] if count else None
        actions = session.valid_actions() or []
        status = message or status_line(session)
        first, second = output_choices(step)
        return {
            self.frame: session.current_frame(),
            self.observation: gr.Textbox(value=session.current_observation(), label=NOW_LABEL),
            self.status: message_html(status, kind if message else "info"),
            self.human_action: gr.Dropdown(choices=actions, value=None),
            self.timeline: timeline_html(episode, index if count else None, mode, session.read_only),
            self.selected: gr.Slider(
                minimum=0, maximum=max(count - 1, 1), value=max(index, 0), step=1, interactive=count > 1
            ),
            self.candidates: candidates_html(step, mode),
            self.distribution: distribution(step),
            self.prompt: "",
            self.first_output: first,
            self.second_output: second,
        }


def distribution(step: Any) -> Any:
    """The action distribution of a score-mode step; the plot is hidden for other steps."""
    figure = action_distribution_figure(step)
    return gr.Plot(value=figure, visible=figure is not None)


def output_choices(step: Any) -> list[Any]:
    """The outputs of the selected step, for "compare these two"."""
    names = [output.name for output in step.outputs()] if step is not None else []
    return [
        gr.Dropdown(choices=names, value=names[0] if names else None),
        gr.Dropdown(choices=names, value=names[1] if len(names) > 1 else None),
    ]


#: How each fork mode reads in the status line.
FORK_WORDS = {
    "exact": "Forks restore the step's snapshot exactly.",
    "replay": "Forks replay the actions from the seed.",
}


#: The observation box's label while it shows the current state (a selected step's says so instead).
NOW_LABEL = "Observation (now)"


def fork_words(session: StudioSession) -> str:
    """How a fork of the shown episode comes back, in one sentence."""
    mode, note = session.fork_mode()
    return FORK_WORDS.get(mode) or f"This environment cannot be forked: {note}."


def status_line(session: StudioSession) -> str:
    episode = session.episode
    if episode is None:
        return "Press Reset to start an episode."
    forks = fork_words(session)
    if session.read_only:
        return f"Viewing a stored episode (read-only): pick a step and Fork to continue it. {forks}"
    if episode.done:
        return f"Episode over ({episode.end_reason}): Reset for a new one, or fork from a step. {forks}"
    return f"Ready: step {episode.length} of {session.runner.max_steps}. Press Step (S). {forks}"


def build(state: gr.State, sample_env: str = "gridworld") -> EpisodePanel:
    """The panel's widgets (events are wired in :func:`wire`)."""
    env_choices = env_names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=380):
            # What the agent sees comes first; the controls under it, the settings last.
            with gr.Row(equal_height=False):
                frame = gr.Image(
                    label="Frame",
                    show_label=False,
                    interactive=False,
                    height=280,
                    format="png",  # lossless: a map's cells and an attention overlay stay exact
                    elem_id="as-frame",
                    buttons=["download", "fullscreen"],
                    min_width=220,
                )
                observation = gr.Textbox(
                    label=NOW_LABEL,
                    lines=10,
                    max_lines=16,
                    interactive=False,
                    elem_id="as-observation",
                    min_width=220,
                )
            with gr.Row():
                reset = gr.Button("Reset", elem_id="as-reset", min_width=70)
                step = gr.Button("Step (S)", variant="primary", elem_id="as-step", min_width=80)
                run_all = gr.Button("Run to end", elem_id="as-run", min_width=90)
                stop = gr.Button("Stop", variant="stop", elem_id="as-stop", min_width=60)
            status = gr.HTML(elem_id="as-status")
            with gr.Row():
                run_count = gr.Number(
                    value=5, precision=0, minimum=1, label="N", scale=1, min_width=90, elem_id="as-run-count"
                )
                run_n = gr.Button("Run N", scale=1, elem_id="as-run-n", min_width=70)
                human_action = gr.Dropdown(
                    [],
                    label="Your action (pick or type)",
                    allow_custom_value=True,
                    scale=3,
                    elem_id="as-human-action",
                    min_width=140,
                )
                take_action = gr.Button("Take action", scale=2, elem_id="as-take-action", min_width=90)
            # The settings come from the schema (studio/settings.py): the environment, its options
            # and the policy are drawn here; the rest are generated where their group sits.
            form = SettingsForm()
            with gr.Row():
                form.add(
                    "env",
                    gr.Dropdown(
                        env_choices,
                        value=sample_env,
                        label="Environment",
                        allow_custom_value=True,
                        scale=3,
                        elem_id="as-env",
                    ),
                )
                form.build_one("seed", scale=1)
            form.add(
                "env_options",
                gr.Textbox(
                    value="{}",
                    label="Options (JSON)",
                    placeholder='{"size": 9, "difficulty": "hard"}',
                    lines=1,
                    elem_id="as-options",
                ),
            )
            with gr.Row():
                form.add(
                    "policy",
                    gr.Dropdown(
                        [(label, key) for key, label in POLICIES.items()],
                        value="react-a",
                        label="Policy",
                        scale=3,
                        elem_id="as-policy",
                    ),
                )
                form.build_one("action_mode", scale=2)
            form.build("episode")
            form.build("policy")
            with gr.Accordion("Sampling", open=False):
                form.build("sampling")
            with gr.Accordion("Best-of-K: who picks among the K candidates", open=False, elem_id="as-verifier-box"):
                form.build("verifier")
            form.ordered()
        with gr.Column(scale=6, min_width=420):
            with gr.Row():
                colour = gr.Radio(["logprob", "entropy"], value="logprob", label="Colour tokens by", scale=2)
                selected = gr.Slider(0, 1, value=0, step=1, label="Selected step", scale=3, elem_id="as-selected")
            with gr.Row():
                fork = gr.Button("Fork from selected step", size="sm", elem_id="as-fork")
                show_prompt = gr.Button("Show the prompt of the selected step", size="sm", elem_id="as-show-prompt")
            # The trace scrolls as one: the finished steps, then the step being written (live).
            with gr.Column(elem_id="as-trace"):
                timeline = gr.HTML(elem_id="as-timeline")
                live = gr.HTML(elem_id="as-live")
            with gr.Accordion("Selected step: candidates, action distribution, prompt", open=True):
                candidates_view = gr.HTML(elem_id="as-candidates-view")
                distribution = gr.Plot(
                    label="Action distribution (score mode)", elem_id="as-distribution", visible=False
                )
                prompt = gr.HTML(elem_id="as-prompt")
            with gr.Accordion("Queue pairs for annotation", open=False):
                with gr.Row():
                    first_output = gr.Dropdown([], label="Compare", scale=2, elem_id="as-first-output")
                    second_output = gr.Dropdown([], label="with", scale=2, elem_id="as-second-output")
                    compare = gr.Button("Compare these two", scale=1, elem_id="as-compare")
                with gr.Row():
                    queue_pairs = gr.Button(
                        "Queue every candidate pair of this episode", scale=2, elem_id="as-queue-pairs"
                    )
                    other_episode = gr.Textbox(label="Compare with episode (id)", scale=2, elem_id="as-other-episode")
                    compare_episode = gr.Button("Compare episodes", scale=1, elem_id="as-compare-episode")
                pair_message = gr.HTML(elem_id="as-pair-message")
            # Below the trace, not above it: the trace keeps its place in the window.
            with gr.Accordion("Share this episode: a video, a report", open=False, elem_id="as-share"):
                with gr.Row():
                    video = gr.Button("Video of this episode (MP4)", size="sm", elem_id="as-video")
                    video_download = gr.DownloadButton(
                        "Download", size="sm", visible=False, elem_id="as-video-download"
                    )
                    report = gr.Button("Report of this episode (HTML)", size="sm", elem_id="as-report")
                    report_download = gr.DownloadButton(
                        "Download", size="sm", visible=False, elem_id="as-report-download"
                    )
                video_attention = gr.Checkbox(
                    False,
                    label="Lay model A's attention over each frame (where it looked when it chose the action; slower)",
                    elem_id="as-video-attention",
                )
                video_message = gr.HTML(elem_id="as-video-message")
            values = values_panel.build()
            cross = crossscore_panel.build()
            attention = attention_panel.build()
            inside = inside_panel.build()
    return EpisodePanel(
        form=form,
        reset=reset,
        step=step,
        run_n=run_n,
        run_count=run_count,
        run_all=run_all,
        stop=stop,
        human_action=human_action,
        take_action=take_action,
        colour=colour,
        selected=selected,
        fork=fork,
        show_prompt=show_prompt,
        video=video,
        video_download=video_download,
        video_message=video_message,
        video_attention=video_attention,
        report=report,
        report_download=report_download,
        frame=frame,
        observation=observation,
        status=status,
        timeline=timeline,
        live=live,
        candidates=candidates_view,
        distribution=distribution,
        prompt=prompt,
        first_output=first_output,
        second_output=second_output,
        compare=compare,
        queue_pairs=queue_pairs,
        other_episode=other_episode,
        compare_episode=compare_episode,
        pair_message=pair_message,
        values=values,
        cross=cross,
        attention=attention,
        inside=inside,
    )


def action_modes(session: StudioSession, policy: str, mode: str) -> Any:
    """The action modes the policy's model can do (LIT's habit: offer only what the backend declares):
    a model without scoring gets ``generate`` only, with the reason under the choice."""
    slot = str(policy or "")[-1:].upper() if str(policy or "").startswith("react") else None
    backend = session.models.get(slot) if slot else None
    if backend is None or backend.capabilities.scoring:
        return gr.Radio(choices=["generate", "score"], info=None)
    return gr.Radio(
        choices=["generate"], value="generate", info=f"{backend.card.id} cannot score actions: generate only."
    )


def renewed_outputs(panel: EpisodePanel) -> list[Any]:
    """What changes when another episode is shown: the attention and values views, the environment settings."""
    shown_values = [panel.values.message, panel.values.bars, panel.values.curve]
    return [*panel.attention.outputs, *shown_values, panel.form["env"], panel.form["env_options"], panel.form["seed"]]


def renewed_values(panel: EpisodePanel, session: StudioSession) -> Views:
    """Values for :func:`renewed_outputs`: empty attention and values views (the selected step's
    stored values follow), the shown episode's environment, options and seed."""
    episode = session.episode
    cleared = {**panel.attention.cleared(), panel.values.message: "", panel.values.bars: None, panel.values.curve: None}
    if episode is None:
        return cleared
    form = panel.form
    return {
        **cleared,
        form["env"]: episode.env,
        form["env_options"]: json.dumps(episode.env_options),
        form["seed"]: episode.seed or 0,
    }
