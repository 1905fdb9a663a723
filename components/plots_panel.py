"""Trajectory plots: the path on the map, rewards, per-step signals and latency, with an overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.storage import Store
from studio.envs.registry import make_env
from studio.errors import StudioError
from studio.session import StudioSession
from studio.viz.html import message_html
from studio.viz.plots import path_figure, signals_figure


@dataclass
class PlotsPanel:
    overlay: gr.Dropdown
    clear: gr.Button
    path: gr.Plot
    signals: gr.Plot
    note: gr.HTML

    @property
    def outputs(self) -> list[Any]:
        return [self.overlay, self.path, self.signals, self.note]

    def render(self, session: StudioSession, store: Store | None, selected: Any = None) -> dict[Any, Any]:
        """The plots of the episode shown (and its overlay), by component; the ``selected`` step (the
        Episode tab's selection) marked, its own map under the path."""
        episode = session.episode
        step = session.step_at(selected) if selected is not None else None
        at = step.index if step is not None else None
        overlay = (
            session.overlay
            if session.overlay is not None and episode is not None and session.overlay.id != episode.id
            else None
        )
        path, note = None, ""
        if episode is not None and episode.steps:
            try:
                path = path_figure(make_env(episode.env, episode.env_options), episode, overlay, at)
            except StudioError as exc:  # e.g. an imported episode of an environment this studio does not have
                note = message_html(f"No path: {exc}", "warning")
            if path is None and not note:
                note = message_html(f"{episode.env} has no map to draw a path on; the signals are below.", "info")
        return {
            self.overlay: gr.Dropdown(choices=overlay_choices(store, episode), value=overlay.id if overlay else None),
            self.path: path,
            self.signals: signals_figure(episode, overlay, at),
            self.note: note,
        }


def overlay_choices(store: Store | None, episode: Any) -> list[tuple[str, str]]:
    """Other stored episodes on the same environment and seed (e.g. model B on model A's seed)."""
    if store is None or episode is None:
        return []
    rows = store.episodes.summaries(env=episode.env, seed=episode.seed, limit=50)
    return [
        (
            f"{r.policy} · {r.model or '-'} · {r.steps} steps · {'success' if r.success else 'no success' if r.success is False else 'running'} · {r.id[:8]}",
            r.id,
        )
        for r in rows
        if r.id != episode.id
    ]


def build() -> PlotsPanel:
    with gr.Row():
        overlay = gr.Dropdown(
            [],
            label="Overlay another episode on the same environment and seed",
            allow_custom_value=False,
            scale=4,
            elem_id="as-overlay",
        )
        clear = gr.Button("Clear overlay", scale=1, size="sm")
    note = gr.HTML(elem_id="as-plots-note")
    with gr.Row(equal_height=False):
        path = gr.Plot(label="Path on the map", elem_id="as-path")
        signals = gr.Plot(label="Per-step signals", elem_id="as-signals")
    return PlotsPanel(overlay, clear, path, signals, note)


def wire(panel: PlotsPanel, state: gr.State, store: Store | None) -> None:
    def choose(session: StudioSession, episode_id: str | None) -> dict[Any, Any]:
        try:
            session.overlay = store.episodes.get(episode_id) if episode_id and store is not None else None
        except StudioError:
            session.overlay = None
        return {state: session, **panel.render(session, store)}

    panel.overlay.input(
        choose, [state, panel.overlay], [state, *panel.outputs], api_visibility="private", concurrency_limit=None
    )
    panel.clear.click(
        lambda session: choose(session, None),
        [state],
        [state, *panel.outputs],
        api_visibility="private",
        concurrency_limit=None,
    )
