"""The Episode tab's events: Reset, Step, Run, Stop, Fork, a step selected, the downloads, and the
settings that change the policy (:func:`wire`). The tab's widgets and views are
:mod:`agent_studio.components.episode_panel`.

Handlers are thin: they turn widget values into :class:`EpisodeSettings`, call the session,
and render what it holds. Errors become a readable line in the panel; the app keeps running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from agent_studio.components.downloads import DownloadFolder
from agent_studio.components import attention_panel
from agent_studio.components.episode_panel import (
    NOW_LABEL,
    EpisodePanel,
    Views,
    action_modes,
    distribution,
    output_choices,
    renewed_outputs,
    renewed_values,
    status_line,
)
from agent_studio.components.errors import refusal
from agent_studio.storage.reports import report_extras
from studio.errors import Interrupted, StudioError
from studio.episodes.live import LiveOutput
from studio.jobs import JobQueue
from studio.session import StudioSession
from studio.settings import temperature_after
from studio.validation import MAX_ITEMS, whole_number
from studio.viz.html import candidates_html, live_card, message_html, plural, prompt_html, timeline_html
from studio.viz.report import write_report
from studio.viz.video import episode_video

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

    def do_click(session: StudioSession, shown: str, point: Any) -> str:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise StudioError("A click on the frame needs a point.")
        step = session.act_at(point[0], point[1], shown)
        if not step.valid:
            raise InvalidAction(_step_note(step))
        return _step_note(step)

    def clicked(session: StudioSession, mode: str, shown: str, evt: gr.SelectData) -> Views:
        """The frame was clicked: on a web page, a person's click on the element under the pointer."""
        return guarded(do_click)(session, mode, shown, evt.index)

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
    panel.frame.select(clicked, [state, panel.colour, panel.observation], outputs, **private)
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
            panel.distribution: distribution(step),
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
            return message_html(status_line(session), "info")
        return message_html(
            f"{wanted.env}, seed {wanted.seed}: press Reset to apply. Step continues the episode shown ({episode.env}, seed {episode.seed}).",
            "warning",
        )

    for name in ("env", "env_options", "seed"):
        form[name].input(pending, [state, *settings], [panel.status], **private)
    form["policy"].input(action_modes, [state, form["policy"], form["action_mode"]], [form["action_mode"]], **private)


def _temperature_for(k: float, temperature: float) -> Any:
    """The temperature after Candidates K changes to ``k`` (the rule is :func:`studio.settings.temperature_after`)."""
    after = temperature_after(k, temperature)
    return gr.skip() if after is None else gr.Slider(value=after)


class InvalidAction(StudioError):
    """A step was taken, but its action was invalid: a warning (the episode goes on), not an error."""


def _kind(error: StudioError) -> str:
    """How a refusal is shown: a Stop the user asked for is news, an invalid action a warning."""
    return "info" if isinstance(error, Interrupted) else "warning" if isinstance(error, InvalidAction) else "error"


def _step_note(step: Any) -> str:
    if not step.valid:
        return f"Step {step.index}: invalid action ({step.invalid_reason}); the episode goes on."
    return ""
