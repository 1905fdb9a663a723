"""The episode panel: settings, Reset / Step / Run / Stop / Fork, the frame, the observation and
the reasoning trace (timeline, candidates, action distribution, prompt on demand).

Handlers are thin: they turn widget values into :class:`EpisodeSettings`, call the session,
and render what it holds. Errors become a readable line in the panel; the app keeps running.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from agent_studio.components import attention_panel, crossscore_panel, values_panel
from agent_studio.components.downloads import DownloadFolder
from agent_studio.components.errors import refusal
from agent_studio.components.settings_form import SettingsForm
from studio.envs.registry import env_names
from studio.errors import Interrupted, StudioError
from studio.jobs import JobQueue
from studio.episodes.live import LiveOutput
from studio.session import POLICIES, StudioSession
from studio.settings import temperature_after
from studio.validation import MAX_ITEMS, whole_number
from studio.viz.html import candidates_html, live_card, message_html, plural, prompt_html, timeline_html
from studio.viz.plots import action_distribution_figure
from agent_studio.storage.reports import report_extras
from studio.viz.report import write_report
from studio.viz.video import episode_video


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
        status = message or _status_line(session)
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
            self.distribution: _distribution(step),
            self.prompt: "",
            self.first_output: first,
            self.second_output: second,
        }


def _distribution(step: Any) -> Any:
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


def _status_line(session: StudioSession) -> str:
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
    )


Render = Callable[..., Views]


def wire(
    panel: EpisodePanel,
    state: gr.State,
    render: Render,
    jobs: JobQueue,
    downloads: DownloadFolder,
) -> None:
    """Connect the panel's buttons. ``render(session, message, kind, selected, mode)`` fills every view."""
    form = panel.form
    settings = form.components
    outputs = [state, *render.outputs]  # type: ignore[attr-defined]
    private = dict(api_visibility="private", concurrency_limit=None)

    def guarded(action: Callable[..., str | None]) -> Callable[..., Views]:
        @refusal(
            lambda error, session, mode, *values: {
                state: session,
                **render(session, str(error), _kind(error), None, mode),
            }
        )
        def handler(session: StudioSession, mode: str, *values: Any) -> Views:
            note = action(session, *values)
            return {state: session, **render(session, note or "", "info", None, mode)}

        return handler

    # Reset and Fork show another episode: the attention views are emptied and the settings
    # widgets show the episode that is open.
    renewed = [*outputs, *renewed_outputs(panel)]

    def renewing(action: Callable[..., str | None]) -> Callable[..., Views]:
        plain = guarded(action)

        def handler(session: StudioSession, mode: str, *values: Any) -> Views:
            before = session.episode
            shown = plain(session, mode, *values)
            return {**shown, **(renewed_values(panel, session) if session.episode is not before else {})}

        return handler

    def do_reset(session: StudioSession, *values: Any) -> str:
        session.reset(form.settings(*values))
        return ""

    def do_take_action(session: StudioSession, action: str, *values: Any) -> str:
        session.update(form.settings(*values))
        if not (action or "").strip():
            raise StudioError("Pick one of the valid actions or type one first.")
        step = session.step(action=action)
        if not step.valid:
            raise InvalidAction(_step_note(step))
        return ""

    def do_fork(session: StudioSession, at: float, *values: Any) -> str:
        session.update(form.settings(*values))
        forked = session.fork(whole_number(at, "The selected step", 0))
        return f"Forked at step {forked.forked_at}: the next step is a new step {forked.forked_at}."

    # Stepping streams: the step being written shows in the live card, the frame, observation
    # and trace stay on screen (no progress overlay). While a live card is on screen the controls
    # that must wait are off (studio/viz/studio.css and the S key check it): no round trip to turn
    # them off and on again.
    streamed = [state, *render.outputs, panel.live]

    def watch(
        session: StudioSession, mode: str, start: Callable[[], Iterator[Any]], several: bool = True
    ) -> Iterator[Views]:
        note, kind = "", "info"
        try:
            for item in start():
                if isinstance(item, LiveOutput):
                    yield {panel.live: live_card(item, mode)}  # everything else stays as it is
                else:
                    note, kind = _step_note(item), "info" if item.valid else "warning"
                    if several:  # a run shows each step as it comes; a single step shows once, ready for the next
                        # The stored step replaces its live card now, not when the next step's first token comes.
                        yield {state: session, **render(session, note, kind, None, mode), panel.live: ""}
            yield {state: session, **render(session, note, kind, None, mode), panel.live: ""}
        except StudioError as exc:
            yield {state: session, **render(session, str(exc), _kind(exc), None, mode), panel.live: ""}

    def step_watched(session: StudioSession, mode: str, *values: Any) -> Iterator[Views]:
        def start() -> Iterator[Any]:
            session.update(form.settings(*values))
            return session.step_live()

        yield from watch(session, mode, start, several=False)

    def run(session: StudioSession, mode: str, count: Any, *values: Any) -> Iterator[Views]:
        def start() -> Iterator[Any]:
            session.update(form.settings(*values))
            limit = None if count is None else whole_number(count, "N", 1, MAX_ITEMS)
            return session.run_live(limit)

        yield from watch(session, mode, start)

    def run_to_end(session: StudioSession, mode: str, *values: Any) -> Iterator[Views]:
        yield from run(session, mode, None, *values)

    quiet = dict(private, show_progress="hidden")
    panel.reset.click(renewing(do_reset), [state, panel.colour, *settings], renewed, **private)
    panel.step.click(step_watched, [state, panel.colour, *settings], streamed, **quiet)
    panel.take_action.click(
        guarded(do_take_action), [state, panel.colour, panel.human_action, *settings], outputs, **private
    )
    panel.fork.click(renewing(do_fork), [state, panel.colour, panel.selected, *settings], renewed, **private)
    panel.run_n.click(run, [state, panel.colour, panel.run_count, *settings], streamed, **quiet)
    panel.run_all.click(run_to_end, [state, panel.colour, *settings], streamed, **quiet)
    # Stop must run while a run holds the session: no queue, no lock.
    panel.stop.click(lambda session: session.stop(), [state], None, queue=False, api_visibility="private")

    def select(session: StudioSession, at: float, mode: str) -> Views:
        """A step was picked (a card clicked, the slider moved): its own frame and observation, what it
        acted on, replace the current state's (redrawn from its snapshot when no frame was kept)."""
        episode = session.episode
        step = session.step_at(at)
        first, second = output_choices(step)
        return {
            **selected_view(session, step),
            panel.timeline: timeline_html(episode, step.index if step else None, mode, session.read_only),
            panel.candidates: candidates_html(step, mode),
            panel.distribution: _distribution(step),
            panel.prompt: "",
            panel.first_output: first,
            panel.second_output: second,
        }

    views = [
        panel.frame,
        panel.observation,
        panel.timeline,
        panel.candidates,
        panel.distribution,
        panel.prompt,
        panel.first_output,
        panel.second_output,
    ]
    panel.selected.input(select, [state, panel.selected, panel.colour], views, **private)
    panel.colour.change(select, [state, panel.selected, panel.colour], views, **private)

    def selected_view(session: StudioSession, step: Any) -> Views:
        if step is None:
            return {panel.frame: session.current_frame(), panel.observation: gr.Textbox(label=NOW_LABEL)}
        return {
            panel.frame: session.step_frame(step.index),
            panel.observation: gr.Textbox(value=step.observation, label=f"Step {step.index} acted on this"),
        }

    def show_prompt(session: StudioSession, at: float) -> str:
        step = session.step_at(at)
        return "" if step is None else prompt_html(step)

    panel.show_prompt.click(show_prompt, [state, panel.selected], [panel.prompt], **private)

    def downloadable(suffix: str, write: Callable[..., str]) -> Callable[..., list[Any]]:
        """A handler that writes the open episode to a new temporary file and offers it for download
        (labelled by ``write(episode, path, session, *inputs)``'s answer), or says in one line why it cannot."""

        def handler(session: StudioSession, *inputs: Any) -> list[Any]:
            episode = session.episode
            if episode is None or not episode.steps:
                note = message_html("Take a step first: there is nothing to show yet.", "info")
                return [gr.DownloadButton(visible=False), note]
            path = downloads.new_path(f"episode-{episode.id}{suffix}")
            try:
                detail = write(episode, path, session, *inputs)
            except StudioError as error:
                return [gr.DownloadButton(visible=False), message_html(str(error), "error")]
            label = f"Download episode-{episode.id[:8]}{suffix} ({detail})"
            return [gr.DownloadButton(label, value=str(path), visible=True), ""]

        return handler

    def write_video(episode: Any, path: Path, session: StudioSession, with_attention: bool) -> str:
        attention = None
        if with_attention:
            attention = session.models.get("A")
            if attention is None:
                raise StudioError("Load model A to lay its attention over the frames.")
        with jobs.run("video", f"video of episode {episode.id[:8]}" + (" with attention" if attention else "")) as job:
            job.progress(0, 1, "drawing the frames")
            return plural(episode_video(episode, path, attention=attention).frames, "frame")

    def write_html(episode: Any, path: Path, session: StudioSession) -> str:
        store = getattr(render, "store", None)  # the values and cross-scores stored with the episode
        extras = report_extras(store, episode.id) if store is not None else {}
        return f"{write_report(episode, path, **extras)['bytes'] / 1e6:.1f} MB"

    message = [panel.video_message]
    panel.video.click(
        downloadable(".mp4", write_video),
        [state, panel.video_attention],
        [panel.video_download, *message],
        **private,
    )
    panel.report.click(downloadable(".html", write_html), [state], [panel.report_download, *message], **private)
    attention_panel.wire(panel.attention, state, panel.selected, jobs)

    # K greedy candidates would be K copies of one text: asking for several turns sampling on, and
    # going back to one turns it off again (when it is still the value K > 1 chose).
    form["candidates"].input(
        _temperature_for, [form["candidates"], form["temperature"]], [form["temperature"]], **private
    )

    # A new environment, seed or options apply at the next Reset: say so where the user looks.
    def pending(session: StudioSession, *values: Any) -> str:
        episode = session.episode
        try:
            wanted = form.settings(*values)
        except StudioError as exc:
            return message_html(str(exc))
        if episode is None or (wanted.env, wanted.env_options, wanted.seed) == (
            episode.env,
            episode.env_options,
            episode.seed or 0,
        ):
            return message_html(_status_line(session), "info")
        return message_html(
            f"{wanted.env}, seed {wanted.seed}: press Reset to apply. Step continues the episode shown ({episode.env}, seed {episode.seed}).",
            "warning",
        )

    for name in ("env", "env_options", "seed"):
        form[name].input(pending, [state, *settings], [panel.status], **private)
    form["policy"].input(action_modes, [state, form["policy"], form["action_mode"]], [form["action_mode"]], **private)


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


def _temperature_for(k: float, temperature: float) -> Any:
    """The temperature after Candidates K changes to ``k`` (the rule is :func:`studio.settings.temperature_after`)."""
    after = temperature_after(k, temperature)
    return gr.skip() if after is None else gr.Slider(value=after)


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


class InvalidAction(StudioError):
    """A step was taken, but its action was invalid: a warning (the episode goes on), not an error."""


def _kind(error: StudioError) -> str:
    """How a refusal is shown: a Stop the user asked for is news, an invalid action a warning."""
    return "info" if isinstance(error, Interrupted) else "warning" if isinstance(error, InvalidAction) else "error"


def _step_note(step: Any) -> str:
    if not step.valid:
        return f"Step {step.index}: invalid action ({step.invalid_reason}); the episode goes on."
    return ""
