"""Model B's view of the open episode: every step's output scored under model B (one pass a step),
tokens coloured by where B would not have said it, per-step totals, and the action B prefers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.errors import refused_into
from agent_studio.storage import Store
from studio.evaluation.crossscore import cross_score
from studio.errors import StudioError
from studio.jobs import JobCancelled, JobQueue
from studio.session import StudioSession
from studio.viz.crossscore_html import cross_scores_html
from studio.viz.html import message_html, plural
from studio.viz.plots import cross_score_figure


@dataclass
class CrossScorePanel:
    score: gr.Button
    message: gr.HTML
    view: gr.HTML
    plot: gr.Plot


def build() -> CrossScorePanel:
    with gr.Accordion("Model B's view: score this episode's outputs under model B", open=False, elem_id="as-cross"):
        score = gr.Button("Score this episode under model B", variant="primary", elem_id="as-cross-score")
        message = gr.HTML(elem_id="as-cross-message")
        plot = gr.Plot(label="log P of each output under A and B", elem_id="as-cross-plot")
        view = gr.HTML(elem_id="as-cross-view")
    return CrossScorePanel(score, message, view, plot)


def wire(panel: CrossScorePanel, state: gr.State, store: Store | None, jobs: JobQueue) -> None:
    @refused_into(panel.message)
    def score(session: StudioSession, progress=gr.Progress()) -> list[Any]:
        episode = session.stepped_episode()
        backend = session.models.get("B")
        if backend is None:
            raise StudioError("Load model B in the Models tab: it scores what this episode's model wrote.")
        with jobs.run("cross-score", f"model B's view of episode {episode.id[:8]}") as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} steps")
                job.progress(done, total, f"{done} of {total} steps")

            scores = cross_score(episode, backend, should_stop=lambda: job.cancelled, progress=tick)
            if job.cancelled:
                raise JobCancelled("Cancelled from the Jobs tab: no scores were kept.")
        note = f"Scored {plural(len(scores), 'step')} under {backend.card.id}."
        if store is not None:
            try:
                store.cross_scores.save(scores)
                note += " Stored with the episode."
            except StudioError as error:
                note += f" Not stored: {error}"
        return [message_html(note, "info"), cross_scores_html(episode, scores), cross_score_figure(scores)]

    panel.score.click(
        score, [state], [panel.message, panel.view, panel.plot], api_visibility="private", concurrency_limit=None
    )
