"""Presentation mode, for demos: ``/?present=EPISODE`` shows a stored episode step by step on a clean
stage (big type, the frame and the current thought), stepping on by itself at a chosen pace; Space
pauses and plays, the arrow keys step. ``/?present=live`` shows the page's own episode as its policy
takes each step (the model in slot A, or the expert).

The rest of the studio is hidden on such a page; the presentation's state is the page's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from agent_studio.storage import Store
from studio.errors import StudioError
from studio.session import StudioSession
from studio.trace import Episode
from studio.validation import whole_number
from studio.viz.html import message_html
from studio.viz.present import frame_uris, stage_html

#: Seconds between steps when playing, by default, and the range offered.
PACE, PACE_MIN, PACE_MAX = 2.0, 0.5, 10.0
LIVE = "live"


@dataclass
class Presentation:
    """One page's presentation: the episode shown, its frames, where it stands, whether it plays."""

    episode: Episode | None = None
    frames: list[str] = field(default_factory=list)
    index: int = 0
    playing: bool = True
    live: bool = False


@dataclass
class PresentPanel:
    column: gr.Column
    stage: gr.HTML
    previous: gr.Button
    play: gr.Button
    next: gr.Button
    pace: gr.Slider
    timer: gr.Timer
    state: gr.State


def build() -> PresentPanel:
    with gr.Column(visible=False, elem_id="as-present") as column:
        stage = gr.HTML(elem_id="as-present-view")
        with gr.Row():
            previous = gr.Button("◀ Previous (←)", size="sm", elem_id="as-present-prev")
            play = gr.Button("Pause (Space)", size="sm", variant="primary", elem_id="as-present-play")
            next_step = gr.Button("Next (→)", size="sm", elem_id="as-present-next")
            pace = gr.Slider(
                PACE_MIN, PACE_MAX, value=PACE, step=0.5, label="Seconds per step", elem_id="as-present-pace"
            )
        gr.HTML('<a href="./" class="as-subtle">Leave the presentation (open the studio)</a>')
    timer = gr.Timer(PACE, active=False)
    return PresentPanel(column, stage, previous, play, next_step, pace, timer, gr.State(lambda: Presentation()))


def _show(show: Presentation, note: str = "") -> str:
    if show.episode is None:
        return message_html(note or "Nothing to present.")
    return stage_html(show.episode, show.index, show.frames, show.playing, note)


def _play_label(show: Presentation) -> str:
    return "Pause (Space)" if show.playing else "Play (Space)"


def wire(panel: PresentPanel, studio_view: gr.Column, state: gr.State, store: Store | None, loaded: Any) -> None:
    """``loaded``: the page's load event, after which the stage looks at the page's address (one after
    the other: two load handlers reading the session at once could each make one)."""
    private = dict(api_visibility="private", concurrency_limit=None)
    outputs = [panel.stage, panel.state, panel.play, panel.timer]

    def answer(show: Presentation, note: str = "") -> dict[Any, Any]:
        return {
            panel.stage: _show(show, note),
            panel.state: show,
            panel.play: gr.Button(_play_label(show)),
            panel.timer: gr.Timer(active=show.playing),
        }

    def opened(session: StudioSession, show: Presentation, pace: float, request: gr.Request) -> dict[Any, Any]:
        wanted = (request.query_params.get("present") or "").strip() if request is not None else ""
        if not wanted:
            return {panel.stage: gr.skip()}  # the studio as usual: nothing changes
        view = {studio_view: gr.Column(visible=False), panel.column: gr.Column(visible=True)}
        try:
            if wanted == LIVE:
                show.episode, show.live = session.episode, True
                show.frames = _live_frames(session)
                show.index = max(0, show.episode.length - 1) if show.episode is not None else 0
            else:
                if store is None:
                    raise StudioError("No database: start the studio with --db to present a stored episode.")
                show.episode = store.episodes.get(wanted[:64])
                if not show.episode.steps:
                    raise StudioError(f"Episode {show.episode.id} has no steps to present.")
                show.frames = frame_uris(show.episode)
                step = (request.query_params.get("step") or "").strip()
                if step:  # a link to one step (Compare's "what went wrong"): shown there, not played
                    show.index = min(whole_number(step[:12], "The step", 0), show.episode.length - 1)
                    show.playing = False
            return {**view, **answer(show), panel.timer: gr.Timer(pace, active=show.playing)}
        except StudioError as error:
            show.playing = False
            return {**view, **answer(show, str(error))}

    def advance(session: StudioSession, show: Presentation, by: int) -> dict[Any, Any]:
        """Move ``by`` steps; a live episode takes a new step when shown at its newest. A stored one
        pauses at its end."""
        if show.episode is None:
            return answer(show)
        note = ""
        if show.live and by > 0 and show.index >= show.episode.length - 1:
            if show.episode.done:
                show.index, show.playing = show.episode.length, False
            else:
                try:
                    session.step()
                except StudioError as error:
                    show.playing, note = False, str(error)
                same = session.episode is show.episode  # (the frames already made are this episode's)
                show.episode = session.episode
                show.frames = _live_frames(session, show.frames if same else None)
                show.index = max(0, show.episode.length - 1) if show.episode is not None else 0
        else:
            show.index = max(0, min(show.episode.length, show.index + by))
            if show.index >= show.episode.length and not show.live:
                show.playing = False
        return answer(show, note)

    def toggle(show: Presentation) -> dict[Any, Any]:
        show.playing = not show.playing
        if show.playing and show.episode is not None and not show.live and show.index >= show.episode.length:
            show.index = 0  # play again from the start
        return answer(show)

    panel.timer.tick(lambda s, p: advance(s, p, 1), [state, panel.state], outputs, show_progress="hidden", **private)
    panel.next.click(lambda s, p: advance(s, p, 1), [state, panel.state], outputs, **private)
    panel.previous.click(lambda s, p: advance(s, p, -1), [state, panel.state], outputs, **private)
    panel.play.click(toggle, [panel.state], outputs, **private)
    panel.pace.change(lambda pace: gr.Timer(pace), [panel.pace], [panel.timer], **private)
    loaded.then(
        opened,
        [state, panel.state, panel.pace],
        [studio_view, panel.column, *outputs],
        show_progress="hidden",  # (its outputs hold the whole studio: no loading veil over it on every page load)
        **private,
    )


def _live_frames(session: StudioSession, known: list[str] | None = None) -> list[str]:
    """The live episode's frames: each step's kept frame, then the environment now. The steps' frames
    already in ``known`` (all but its last, the "now" of the previous call) are not encoded again."""
    from studio.viz.plots import png_data_uri

    episode = session.episode
    steps = episode.steps if episode else []
    frames = list((known or [])[:-1][: len(steps)])
    frames += [png_data_uri(s.frame) if s.frame is not None else "" for s in steps[len(frames) :]]
    try:
        now = session.current_frame()
    except StudioError:  # an environment that cannot draw: the stage says "no frame"
        now = None
    return frames + [png_data_uri(now) if now is not None else ""]
