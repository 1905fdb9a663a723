"""Annotating in the browser: the blind pair queue, step labels, and the overview with downloads.

Keyboard first: 1 left, 2 right, 3 tie, 4 both bad, 0 skip, U undo; on step labels
G good, N neutral, B bad, J/K next/previous step (see ``components/theme.py``). The
annotator's name is kept in the browser (``gr.BrowserState``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.downloads import DownloadFolder
from agent_studio.components.errors import refused_into, as_message
from agent_studio.storage import Store
from agent_studio.storage.desk import DEFAULT_TAGS, AnnotationDesk
from agent_studio.storage.export import export, format_names
from studio.scaling.judge import judge_queue
from agent_studio.storage.records import PAIR_KINDS, PAIR_SOURCES
from studio.envs.registry import env_names
from studio.errors import StudioError
from studio.jobs import JobQueue
from studio.scaling.judge import judge_name
from studio.session import StudioSession
from studio.validation import whole_number
from studio.viz.html import context_html, esc, labels_html, message_html, num, plural, side_html

CHOICE_BUTTONS = [
    ("left", "Left is better (1)", "as-judge-left"),
    ("right", "Right is better (2)", "as-judge-right"),
    ("tie", "Tie (3)", "as-judge-tie"),
    ("both_bad", "Both bad (4)", "as-judge-both"),
]
LABEL_BUTTONS = [
    ("good", "Good (G)", "as-label-good"),
    ("neutral", "Neutral (N)", "as-label-neutral"),
    ("bad", "Bad (B)", "as-label-bad"),
]


@dataclass
class AnnotatePanel:
    name: gr.Textbox
    kind: gr.Dropdown
    env: gr.Dropdown
    source: gr.Dropdown
    refresh: gr.Button
    progress: gr.HTML
    context: gr.HTML
    frame: gr.Image
    left: gr.HTML
    right: gr.HTML
    judge: list[tuple[str, gr.Button]]
    skip: gr.Button
    undo: gr.Button
    rationale: gr.Textbox
    tags: gr.CheckboxGroup
    tag_set: gr.Textbox
    confidence: gr.Radio
    message: gr.HTML
    # step labels
    label_episode: gr.Textbox
    label_current: gr.Button
    label_step: gr.Number
    label_buttons: list[tuple[str, gr.Button]]
    label_prev: gr.Button
    label_next: gr.Button
    label_note: gr.Textbox
    label_view: gr.HTML
    label_frame: gr.Image
    # overview
    overview_tab: gr.Tab
    overview: gr.HTML
    overview_refresh: gr.Button
    export_format: gr.Radio
    export_button: gr.Button
    download: gr.DownloadButton
    judge_button: gr.Button
    judge_message: gr.HTML

    @property
    def filters(self) -> list[Any]:
        return [self.name, self.kind, self.env, self.source]

    @property
    def outputs(self) -> list[Any]:
        return [
            self.progress,
            self.context,
            self.frame,
            self.left,
            self.right,
            self.message,
            self.rationale,
            self.tags,
            self.confidence,
        ]


def build() -> AnnotatePanel:
    # Laid out to fit 1280×800 without scrolling: who and which pairs in one row; then the shared
    # context (task and observation first) beside the two sides and the six decision keys.
    with gr.Row(equal_height=False):
        name = gr.Textbox(
            label="Your name (kept in this browser)", placeholder="e.g. ada", scale=2, elem_id="as-annotator"
        )
        kind = gr.Dropdown(["", *PAIR_KINDS], value="", label="Kind", scale=1, min_width=110)
        env = gr.Dropdown(
            ["", *env_names()], value="", label="Environment", allow_custom_value=True, scale=1, min_width=130
        )
        source = gr.Dropdown(
            ["", *PAIR_SOURCES], value="", label="Source", scale=1, min_width=120, elem_id="as-queue-source"
        )
        refresh = gr.Button("Refresh", scale=1, elem_id="as-queue-refresh", min_width=90)
    with gr.Tabs():
        with gr.Tab("Pairs"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=300):
                    progress = gr.HTML(elem_id="as-progress")
                    frame = gr.Image(
                        label="Observation frame",
                        show_label=False,
                        interactive=False,
                        height=150,
                        format="png",
                        elem_id="as-pair-frame",
                        buttons=["fullscreen"],
                    )
                    context = gr.HTML(elem_id="as-context")
                with gr.Column(scale=8, min_width=520):
                    with gr.Row(equal_height=False):
                        left = gr.HTML(elem_id="as-left")
                        right = gr.HTML(elem_id="as-right")
                    with gr.Row():
                        judge = [
                            (
                                choice,
                                gr.Button(
                                    label,
                                    variant="primary" if choice in ("left", "right") else "secondary",
                                    elem_id=elem,
                                    min_width=80,
                                ),
                            )
                            for choice, label, elem in CHOICE_BUTTONS
                        ]
                        skip = gr.Button("Skip (0)", elem_id="as-skip", min_width=80)
                        undo = gr.Button("Undo (U)", elem_id="as-undo", min_width=80)
            with gr.Row():
                rationale = gr.Textbox(label="Rationale (optional)", lines=2, scale=3, elem_id="as-rationale")
                with gr.Column(scale=2):
                    tags = gr.CheckboxGroup(list(DEFAULT_TAGS), label="Tags (optional)", elem_id="as-tags")
                    confidence = gr.Radio(["—", "low", "medium", "high"], value="—", label="Confidence")
            with gr.Accordion("Tag set", open=False):
                tag_set = gr.Textbox(value=", ".join(DEFAULT_TAGS), label="Tags offered, comma-separated")
            message = gr.HTML(elem_id="as-annotate-message")
        with gr.Tab("Step labels"):
            with gr.Row():
                label_episode = gr.Textbox(label="Episode id", scale=3, elem_id="as-label-episode")
                label_current = gr.Button("Use the episode from the Episode tab", scale=2, elem_id="as-label-current")
                label_step = gr.Number(value=0, precision=0, minimum=0, label="Step", scale=1, elem_id="as-label-step")
            with gr.Row():
                label_buttons = [(label, gr.Button(text, elem_id=elem)) for label, text, elem in LABEL_BUTTONS]
                label_prev = gr.Button("Previous (K)", elem_id="as-label-prev")
                label_next = gr.Button("Next (J)", elem_id="as-label-next")
            label_note = gr.Textbox(label="Note (optional)", lines=1)
            with gr.Row(equal_height=False):
                label_frame = gr.Image(
                    label="The step's frame",
                    show_label=False,
                    interactive=False,
                    format="png",
                    height=240,
                    scale=2,
                    elem_id="as-label-frame",
                    buttons=["download"],
                )
                label_view = gr.HTML(elem_id="as-label-view", scale=5)
        with gr.Tab("Overview") as overview_tab:
            overview_refresh = gr.Button("Refresh", size="sm")
            overview = gr.HTML(elem_id="as-overview")
            with gr.Row():
                export_format = gr.Radio(format_names(), value="dpo", label="Export format")
                export_button = gr.Button("Export", elem_id="as-export")
                download = gr.DownloadButton("Download", visible=False, elem_id="as-download")
            with gr.Row():
                judge_button = gr.Button(
                    "Judge the queue with model B (blind, both orders; annotator judge:MODEL)", elem_id="as-judge-queue"
                )
            judge_message = gr.HTML(elem_id="as-judge-message")
    return AnnotatePanel(
        name=name,
        kind=kind,
        env=env,
        source=source,
        refresh=refresh,
        progress=progress,
        context=context,
        frame=frame,
        left=left,
        right=right,
        judge=judge,
        skip=skip,
        undo=undo,
        rationale=rationale,
        tags=tags,
        tag_set=tag_set,
        confidence=confidence,
        message=message,
        label_episode=label_episode,
        label_current=label_current,
        label_step=label_step,
        label_buttons=label_buttons,
        label_prev=label_prev,
        label_next=label_next,
        label_note=label_note,
        label_view=label_view,
        label_frame=label_frame,
        overview_tab=overview_tab,
        overview=overview,
        overview_refresh=overview_refresh,
        export_format=export_format,
        export_button=export_button,
        judge_button=judge_button,
        judge_message=judge_message,
        download=download,
    )


def render_pair(desk: AnnotationDesk, message: str = "", kind: str = "info") -> list[Any]:
    """Progress, the pair on screen (or why there is none), and cleared judgement fields."""
    cleared = ["", gr.CheckboxGroup(choices=list(desk.tags), value=[]), "—"]
    judged, total = desk.progress()
    progress = (
        f'<div class="as-progress">{esc(desk.annotator or "nobody")}: {num(judged)} judged of {num(total)} pairs</div>'
    )
    if not desk.annotator:
        return [
            progress,
            '<div class="as-empty">Type your name above to start judging.</div>',
            None,
            "",
            "",
            message_html(message, kind),
            *cleared,
        ]
    item = desk.next()
    if item is None:
        note = "No pairs to judge here. Sample K > 1 candidates in the Episode tab (their pairs are queued as you step), or compare two episodes."
        return [
            progress,
            f'<div class="as-empty">{esc(note)}</div>',
            None,
            "",
            "",
            message_html(message, kind),
            *cleared,
        ]
    context = context_html(item.instruction, item.history, item.observation, item.step_index)
    frame = item.frame
    if frame is None and item.context is not None:  # no frame kept (a CLI run): redrawn from the snapshot
        frame = desk.store.episodes.step_frame(*item.context)
    return [
        progress,
        context,
        frame,
        side_html("Left", item.left),
        side_html("Right", item.right),
        message_html(message, kind),
        *cleared,
    ]


def _agreement_line(report: dict, item: str) -> str:
    """Percent agreement over the items with two or more annotators, and Krippendorff's alpha (HTML)."""
    if report["percent_agreement"] is None:
        return "—"
    alpha = report["krippendorff_alpha"]
    return (
        f"{num(report['percent_agreement'], '.1%')} over {plural(report['items_with_two_or_more'], item)} · "
        f"Krippendorff's alpha {'—' if alpha is None else num(alpha, '.3f')} "
        f"<span class='as-muted'>({plural(len(report['annotators']), 'annotator')})</span>"
    )


def overview_html(store: Store) -> str:
    stats = store.preferences.stats()
    counts = store.episodes.count()
    rows = "".join(
        f"<tr><th>{esc(name)}</th><td>{num(count)}</td></tr>"
        for name, count in sorted(stats["annotations_by_annotator"].items())
    )
    agreement = stats["agreement"]
    percent = _agreement_line(agreement, "pair")
    label_percent = _agreement_line(stats["label_agreement"], "step")
    kappas = "".join(
        f"<tr><th>{esc(r['annotators'][0])} vs {esc(r['annotators'][1])}</th><td>{num(r['percent_agreement'], '.1%')} on {num(r['items'])} pairs · Cohen's kappa {'—' if r['cohen_kappa'] is None else num(r['cohen_kappa'], '.3f')}</td></tr>"
        for r in agreement["pairwise"]
    )
    machines = "".join(
        f"<tr><th>{esc(name)} vs people</th><td>{num(r['percent_agreement'], '.1%')} on "
        f"{plural(r['items'], 'step' if 'labels' in name else 'pair')} ({plural(r['comparisons'], 'comparison')}) · Cohen's kappa "
        f"{'—' if r['cohen_kappa'] is None else num(r['cohen_kappa'], '.3f')}</td></tr>"
        for name, r in stats["machines_vs_people"].items()
        if r["comparisons"]
    )
    shown = " · ".join(f"{esc(k.replace('_', '-'))} {num(v)}" for k, v in stats["choices_as_shown"].items())
    stored = " · ".join(f"{esc(k.replace('_', '-'))} {num(v)}" for k, v in stats["choices"].items())
    return (
        '<div class="as-card"><table>'
        f"<tr><th>episodes</th><td>{num(counts['episodes'])} ({num(counts['steps'])} steps)</td></tr>"
        f"<tr><th>pairs</th><td>{num(stats['pairs'])}</td></tr><tr><th>judgements</th><td>{num(stats['annotations'])} (as shown: {shown})</td></tr>"
        f"<tr><th>by stored side</th><td>{stored} <span class='as-muted'>(blind views swap about half the pairs)</span></td></tr>"
        f"<tr><th>step labels</th><td>{num(stats['step_labels'])}</td></tr><tr><th>agreement</th><td>{percent}</td></tr>"
        f"<tr><th>step-label agreement</th><td>{label_percent}</td></tr>"
        f"{machines}{kappas}</table><div class='as-card-title'>Judgements per annotator</div><table>{rows or '<tr><td>none yet</td></tr>'}</table></div>"
    )


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
            desk: AnnotationDesk, name: str, kind: str, env: str, source: str, request: gr.Request, *values: Any
        ) -> list[Any]:
            with desk.lock:
                try:
                    desk.configure(annotator_name(name, request), kind, env, source)
                    note = action(desk, *values)
                    return [desk, *render_pair(desk, note or "")]
                except StudioError as exc:
                    return [desk, *render_pair(desk, str(exc), "error")]

        return handler

    panel.refresh.click(with_filters(lambda desk: None), [desk_state, *panel.filters], outputs, **private)
    for control in (panel.kind, panel.env, panel.source):
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
    def make_export(fmt: str) -> list[Any]:
        folder = downloads.new_path(fmt)
        folder.mkdir(parents=True, exist_ok=True)
        summary = export(store, fmt, folder / f"{fmt}.jsonl")
        left_out = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.left_out.items()) or "nothing"
        records = plural(summary.records, "record")
        note = message_html(f"{fmt}: {records}; left out: {left_out}.", "info")
        return [
            gr.DownloadButton(f"Download {fmt}.jsonl ({records})", value=str(folder / f"{fmt}.jsonl"), visible=True),
            note + overview_html(store),
        ]

    panel.export_button.click(make_export, [panel.export_format], [panel.download, panel.overview], **private)

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


def refresh(desk: AnnotationDesk) -> list[Any]:
    """The queue as it is now (the tab opened: pairs may have been added meanwhile).

    It keeps the desk's own annotator and filters: the fields' values sent with the tab's
    opening may predate a name typed and submitted while this ran.
    """
    with desk.lock:
        try:
            desk.forget_if_judged()
            return [desk, *render_pair(desk)]
        except StudioError as exc:
            return [desk, *render_pair(desk, str(exc), "error")]


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


def restore_name(desk: AnnotationDesk, remembered: str | None, request: gr.Request) -> list[Any]:
    """On page load: the logged-in user (with ``--auth``), else the name this browser used last time, and its queue."""
    user = getattr(request, "username", None)
    name = annotator_name(remembered if isinstance(remembered, str) else "", request)
    with desk.lock:
        try:
            desk.configure(name)
        except StudioError:
            desk.configure("")
        field = gr.Textbox(value=name, interactive=False, label="Annotator (you are logged in)") if user else name
        return [desk, field, *render_pair(desk)]


def annotator_name(typed: Any, request: gr.Request | None) -> str:
    """Who is judging: the logged-in user when the studio runs with ``--auth`` (nobody can
    judge in another person's name), else the name typed in this browser."""
    user = getattr(request, "username", None)
    return str(user) if user else str(typed or "")
