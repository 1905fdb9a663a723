"""The Annotate tab's events: a choice, a label, undo and skip from the keyboard or the buttons,
the filters, the judge and the downloads (:func:`wire`); and the Episode tab's buttons that queue
pairs for it (:func:`wire_pair_makers`). The tab's widgets and views are
:mod:`agent_studio.components.annotate_panel`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from agent_studio.components import campaign_panel
from agent_studio.components.annotate_panel import (
    AnnotatePanel,
    annotator_name,
    consequences_view,
    overview_html,
    render_pair,
)
from agent_studio.components.downloads import DownloadFolder
from agent_studio.components.errors import as_message, refused_into
from agent_studio.storage import Store
from agent_studio.storage.desk import AnnotationDesk
from agent_studio.storage.export import CAMPAIGN_FORMATS, export
from studio.errors import StudioError
from studio.jobs import JobQueue
from studio.scaling.judge import judge_name, judge_queue
from studio.session import StudioSession
from studio.validation import whole_number
from studio.viz.html import labels_html, message_html, plural
from studio.viz.screen import mark_step


def wire(
    panel: AnnotatePanel,
    state: gr.State,
    desk_state: gr.State,
    name_memory: gr.BrowserState,
    store: Store,
    jobs: JobQueue,
    downloads: DownloadFolder,
) -> None:
    private = dict(api_visibility="private", concurrency_limit=None)
    outputs = [desk_state, *panel.outputs]

    def with_filters(action):  # noqa: ANN001, ANN202 - wraps a desk action into a handler
        def handler(
            desk: AnnotationDesk,
            name: str,
            kind: str,
            env: str,
            source: str,
            campaign: str,
            request: gr.Request,
            *values: Any,
        ) -> list[Any]:
            with desk.lock:
                try:
                    desk.configure(annotator_name(name, request), kind, env, source, campaign)
                    note = action(desk, *values)
                    return [desk, *render_pair(desk, note or "")]
                except StudioError as exc:
                    return [desk, *render_pair(desk, str(exc), "error")]

        return handler

    panel.refresh.click(with_filters(lambda desk: None), [desk_state, *panel.filters], outputs, **private)
    for control in (panel.kind, panel.env, panel.source, panel.campaign):
        control.input(with_filters(lambda desk: None), [desk_state, *panel.filters], outputs, **private)
    panel.name.submit(with_filters(lambda desk: None), [desk_state, *panel.filters], outputs, **private)
    panel.name.blur(lambda name: name, [panel.name], [name_memory], **private)
    panel.name.submit(lambda name: name, [panel.name], [name_memory], **private)

    def judge_action(choice: str):  # noqa: ANN202
        def act(desk: AnnotationDesk, rationale: str, tags: list[str], confidence: str) -> str:
            record = desk.judge(choice, rationale, tags, None if confidence == "—" else confidence)
            said = f" · “{record.rationale}”" if record.rationale else ""
            return f"Saved: {choice.replace('_', ' ')}{said} (judged {desk.progress()[0]})."

        return act

    def follow(desk: AnnotationDesk) -> str:
        with desk.lock:
            try:
                return consequences_view(desk)
            except StudioError as exc:
                return message_html(str(exc), "error")

    panel.show_consequences.click(follow, [desk_state], [panel.consequences], **private)

    judged_inputs = [desk_state, *panel.filters, panel.rationale, panel.tags, panel.confidence]
    for choice, button in panel.judge:
        button.click(with_filters(judge_action(choice)), judged_inputs, outputs, **private)
    panel.skip.click(
        with_filters(lambda desk: desk.skip() or "Skipped: it stays in your queue."),
        [desk_state, *panel.filters],
        outputs,
        **private,
    )
    panel.undo.click(
        with_filters(lambda desk: "Undone: judge it again." if desk.undo() else "Nothing to undo."),
        [desk_state, *panel.filters],
        outputs,
        **private,
    )

    def set_tags(desk: AnnotationDesk, text: str) -> list[Any]:
        desk.tags = tuple(t.strip() for t in (text or "").split(",") if t.strip())
        return [desk, gr.CheckboxGroup(choices=list(desk.tags), value=[])]

    panel.tag_set.submit(set_tags, [desk_state, panel.tag_set], [desk_state, panel.tags], **private)
    panel.tag_set.blur(set_tags, [desk_state, panel.tag_set], [desk_state, panel.tags], **private)

    # -- adjudication ------------------------------------------------------------------------
    view = panel.adjudicate

    def show_disagreement(campaign: str) -> list[Any]:
        try:
            return campaign_panel.render_disagreement(store, campaign)
        except StudioError as exc:
            return [None, "", "", "", "", "", message_html(str(exc), "error")]

    for event in (view.refresh.click, panel.campaign.input):
        event(show_disagreement, [panel.campaign], view.outputs, **private)
    for choice, button in view.decide:

        def decide(
            campaign: str, pair_id: str | None, name: str, why: str, request: gr.Request, choice: str = choice
        ) -> list[Any]:
            try:
                who = annotator_name(name, request)
                return [*campaign_panel.adjudicate(store, campaign, pair_id, who, choice, why), ""]
            except StudioError as exc:
                return [gr.skip()] * 6 + [message_html(str(exc), "error"), gr.skip()]

        button.click(
            decide,
            [panel.campaign, view.pair, panel.name, view.rationale],
            [*view.outputs, view.rationale],
            **private,
        )

    # -- step labels ---------------------------------------------------------------------------
    label_outputs = [panel.label_view, panel.label_step, panel.message, panel.label_frame]

    def show_labels(episode_id: str, at: float, message: str = "", kind: str = "info") -> list[Any]:
        episode_id = (episode_id or "").strip()
        if not episode_id:
            return [labels_html(None, {}, None), 0, message_html(message, kind), None]
        episode = store.episodes.get(episode_id)
        index = max(0, min(whole_number(at, "The step"), episode.length - 1))
        labels = {}
        for label in store.preferences.step_labels(episode_id):
            labels.setdefault(label.step_index, label.label)  # first annotator's label shows; the overview has them all
        # The step being labelled shows its own frame (redrawn from its snapshot when none was kept).
        frame = store.episodes.step_frame(episode_id, index) if episode.length else None
        if frame is not None:  # a web page: the step's action drawn where it acted
            frame = mark_step(frame, episode.steps[index])
        return [labels_html(episode, labels, index), index, message_html(message, kind), frame]

    guarded_labels = refused_into(panel.message)

    def use_current(session: StudioSession) -> list[Any]:
        episode = session.episode
        if episode is None or not episode.steps:
            raise StudioError("The Episode tab has no steps yet.")
        return [episode.id, *show_labels(episode.id, 0)]

    panel.label_current.click(guarded_labels(use_current), [state], [panel.label_episode, *label_outputs], **private)
    panel.label_episode.submit(
        guarded_labels(lambda i, at: show_labels(i, 0)),
        [panel.label_episode, panel.label_step],
        label_outputs,
        **private,
    )
    panel.label_step.submit(
        guarded_labels(show_labels), [panel.label_episode, panel.label_step], label_outputs, **private
    )
    panel.label_prev.click(
        guarded_labels(lambda i, at: show_labels(i, whole_number(at, "The step") - 1)),
        [panel.label_episode, panel.label_step],
        label_outputs,
        **private,
    )
    panel.label_next.click(
        guarded_labels(lambda i, at: show_labels(i, whole_number(at, "The step") + 1)),
        [panel.label_episode, panel.label_step],
        label_outputs,
        **private,
    )

    for label, button in panel.label_buttons:

        def apply(
            episode_id: str, at: float, name: str, note: str, request: gr.Request, label: str = label
        ) -> list[Any]:
            name = annotator_name(name, request)
            if not name.strip():
                raise StudioError("Type your name first (top of this tab).")
            record = store.preferences.label_step(
                str(episode_id or "").strip(), whole_number(at, "The step"), name, label, note
            )
            return show_labels(episode_id, record.step_index + 1, f"Step {record.step_index}: {label}.")

        button.click(
            guarded_labels(apply),
            [panel.label_episode, panel.label_step, panel.name, panel.label_note],
            label_outputs,
            **private,
        )

    # -- overview and downloads ----------------------------------------------------------------
    # The Overview is read when it comes into view (never older than the last judgement or label),
    # not after every judgement: its agreement statistics read every vote.
    for event in (panel.overview_tab.select, panel.overview_refresh.click):
        event(lambda: overview_html(store), None, [panel.overview], **private)

    @refused_into(panel.overview, {panel.download: gr.DownloadButton(visible=False)})
    def make_export(fmt: str, campaign: str) -> list[Any]:
        # With a campaign picked, its pairs only (the formats of judged pairs); adjudicated pairs follow the decision.
        campaign = campaign if campaign and fmt in CAMPAIGN_FORMATS else None
        folder = downloads.new_path(fmt)
        folder.mkdir(parents=True, exist_ok=True)
        summary = export(store, fmt, folder / f"{fmt}.jsonl", campaign=campaign)
        left_out = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.left_out.items()) or "nothing"
        records = plural(summary.records, "record")
        whose = f" of campaign {campaign}" if campaign else ""
        settled = f"; {plural(summary.adjudicated, 'pair')} as adjudicated" if summary.adjudicated else ""
        note = message_html(f"{fmt}{whose}: {records}{settled}; left out: {left_out}.", "info")
        return [
            gr.DownloadButton(f"Download {fmt}.jsonl ({records})", value=str(folder / f"{fmt}.jsonl"), visible=True),
            note + overview_html(store),
        ]

    panel.export_button.click(
        make_export, [panel.export_format, panel.campaign], [panel.download, panel.overview], **private
    )

    @refused_into(panel.judge_message)
    def judge_the_queue(session: StudioSession, progress=gr.Progress()) -> list[Any]:
        backend = session.models["B"]
        if backend is None:
            raise StudioError("Load a judge into model B first (the Models tab).")
        with jobs.run("judge", f"{judge_name(backend)} judges the queue") as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} pairs judged")
                job.progress(done, total, f"{done} of {total} pairs judged")

            done = judge_queue(store.preferences, backend, progress=tick, should_stop=lambda: job.cancelled)
        note = message_html(
            f"{judge_name(backend)} judged {plural(done, 'pair')} (the ones it had not judged).", "info"
        )
        return [note, overview_html(store)]

    panel.judge_button.click(judge_the_queue, [state], [panel.judge_message, panel.overview], **private)


def wire_pair_makers(panel: Any, state: gr.State, store: Store) -> None:
    """The episode panel's buttons that queue pairs for annotation."""
    private = dict(api_visibility="private", concurrency_limit=None)

    @as_message
    def queue_step_pairs(session: StudioSession) -> str:
        made = store.preferences.pairs_from_candidates(episode_ids=[session.stepped_episode().id])
        return message_html(
            f"{made.created} new pairs queued ({made.already_there} were already there, {made.identical} identical outputs skipped).",
            "info",
        )

    @as_message
    def compare_outputs(session: StudioSession, at: float, first: str, second: str) -> str:
        episode = session.stepped_episode()
        index = whole_number(at, "The selected step")
        if not 0 <= index < episode.length:
            raise StudioError(f"The episode has steps 0 to {episode.length - 1}.")
        step = episode.steps[index]
        left, right = (step.output(name) for name in (first, second))  # one line for a name the step lacks
        pair = store.preferences.add_pair(
            *(output.candidate_id or f"{episode.id}:{step.index}" for output in (left, right))
        )
        return message_html(f"Pair {pair.id[:8]} queued: step {step.index}, {first} vs {second}.", "info")

    @as_message
    def compare_episode(session: StudioSession, other: str) -> str:
        pair = store.preferences.add_pair(session.stepped_episode().id, (other or "").strip())
        return message_html(f"Pair {pair.id[:8]} queued: this episode vs {(other or '').strip()[:8]}.", "info")

    panel.queue_pairs.click(queue_step_pairs, [state], [panel.pair_message], **private)
    panel.compare.click(
        compare_outputs,
        [state, panel.selected, panel.first_output, panel.second_output],
        [panel.pair_message],
        **private,
    )
    panel.compare_episode.click(compare_episode, [state, panel.other_episode], [panel.pair_message], **private)
