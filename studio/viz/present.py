"""The presentation view: one step of an episode on a stage, big enough for a room: the frame, the
step's thought and action, and how the episode stands. Every text escaped, numbers too."""

from __future__ import annotations

from studio.trace import Episode
from studio.viz.html import esc, num


def frame_uris(episode: Episode) -> list[str]:
    """A PNG data URI per step (what it acted on), then the end; empty when nothing can be drawn."""
    from studio.errors import StudioError
    from studio.viz.plots import png_data_uri
    from studio.viz.video import episode_frames

    try:
        return [png_data_uri(frame) for frame in episode_frames(episode)]
    except StudioError:
        return []


def stage_html(episode: Episode, index: int, frames: list[str], playing: bool, note: str = "") -> str:
    """Step ``index`` of ``episode`` (``index == length``: the end) on the stage."""
    length = episode.length
    index = max(0, min(index, length))
    image = frames[index] if index < len(frames) else ""
    picture = f'<img alt="frame" src="{esc(image)}">' if image else '<div class="as-present-noframe">no frame</div>'
    head = f"{esc(episode.env)} · seed {num(episode.seed)} · {esc(episode.acted_by)}"
    if index < length:
        step = episode.steps[index]
        position = f"step {num(index + 1)} of {num(length)}"
        thought = esc(step.thought or "") or '<span class="as-subtle">(no thought)</span>'
        action = esc(step.action if step.action is not None else step.raw)
        detail = f'<div class="as-present-thought">{thought}</div><div class="as-present-action">→ {action}</div>'
        if not step.valid:
            detail += f'<div class="as-present-note">invalid: {esc(step.invalid_reason or "")}</div>'
        elif step.reward:
            detail += f'<div class="as-present-note">reward {num(step.reward, "g")}</div>'
    elif length == 0:
        position, detail = "ready: no step taken yet", ""
    else:
        position = f"the end, after {num(length)} steps"
        if not episode.done:
            outcome = "still running"
        elif episode.success is None:
            outcome = "ended (no notion of success)" if episode.complete else "stopped before the end"
        else:
            outcome = "success" if episode.success else "failure"
        detail = (
            f'<div class="as-present-outcome as-present-{esc(outcome.split()[0])}">{esc(outcome)}</div>'
            f'<div class="as-present-note">return {num(episode.total_return, "g")} · {esc(episode.end_reason or "")}</div>'
        )
    state = "playing" if playing else "paused"
    return (
        f'<div class="as-present-stage" data-index="{num(index)}" data-state="{state}">'
        f'<div class="as-present-frame">{picture}</div>'
        f'<div class="as-present-text"><div class="as-present-head">{head}</div>'
        f'<div class="as-present-task">{esc(episode.instruction)}</div>'
        f'<div class="as-present-position">{position} · {state}</div>{detail}'
        + (f'<div class="as-present-note">{esc(note)}</div>' if note else "")
        + "</div></div>"
    )
