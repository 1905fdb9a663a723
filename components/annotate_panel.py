"""Annotating in the browser: the blind pair queue, step labels, and the overview with downloads.

Keyboard first: 1 left, 2 right, 3 tie, 4 both bad, 0 skip, U undo; on step labels
G good, N neutral, B bad, J/K next/previous step (see ``components/theme.py``). The
annotator's name is kept in the browser (``gr.BrowserState``). This module builds the tab and renders
it; its events are :mod:`agent_studio.components.annotate_events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components import campaign_panel
from agent_studio.components.campaign_panel import AdjudicateView, guidelines_html, shows_consequences
from agent_studio.storage import Store
from agent_studio.storage.desk import DEFAULT_TAGS, AnnotationDesk
from agent_studio.storage.export import format_names
from agent_studio.storage.records import PAIR_KINDS, PAIR_SOURCES
from studio.envs.registry import env_names
from studio.errors import StudioError
from studio.viz.html import context_html, esc, message_html, num, plural, side_html
from studio.viz.screen import mark_pair

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
    campaign: gr.Dropdown
    refresh: gr.Button
    progress: gr.HTML
    guidelines: gr.HTML
    context: gr.HTML
    frame: gr.Image
    left: gr.HTML
    right: gr.HTML
    judge: list[tuple[str, gr.Button]]
    skip: gr.Button
    undo: gr.Button
    show_consequences: gr.Button
    consequences: gr.HTML
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
    adjudicate: AdjudicateView

    @property
    def filters(self) -> list[Any]:
        return [self.name, self.kind, self.env, self.source, self.campaign]

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
            self.consequences,
            self.guidelines,
            self.show_consequences,
            self.campaign,
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
        campaign = gr.Dropdown(
            [""], value="", label="Campaign", scale=1, min_width=130, elem_id="as-campaign", allow_custom_value=True
        )
        refresh = gr.Button("Refresh", scale=1, elem_id="as-queue-refresh", min_width=90)
    with gr.Tabs():
        with gr.Tab("Pairs"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=300):
                    progress = gr.HTML(elem_id="as-progress")
                    guidelines = gr.HTML(elem_id="as-guidelines")
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
                    show_consequences = gr.Button(
                        "Show what each action leads to", size="sm", elem_id="as-consequences", min_width=80
                    )
                    consequences = gr.HTML(elem_id="as-consequences-view")
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
        with gr.Tab("Adjudicate"):
            adjudicate = campaign_panel.build_adjudicate()
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
        campaign=campaign,
        refresh=refresh,
        progress=progress,
        guidelines=guidelines,
        context=context,
        frame=frame,
        left=left,
        right=right,
        judge=judge,
        skip=skip,
        undo=undo,
        show_consequences=show_consequences,
        consequences=consequences,
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
        adjudicate=adjudicate,
    )


def render_pair(desk: AnnotationDesk, message: str = "", kind: str = "info") -> list[Any]:
    """Progress, the pair on screen (or why there is none), and cleared judgement fields."""
    # The judgement fields cleared, the consequences too; the campaign's guidelines, whether it lets its
    # annotators see consequences (the button is not even drawn when it does not), and the campaigns to pick.
    campaign = desk.store.campaigns.get(desk.campaign) if desk.campaign else None  # read once per render
    cleared = [
        "",
        gr.CheckboxGroup(choices=list(desk.tags), value=[]),
        "—",
        "",
        guidelines_html(campaign),
        gr.Button(visible=campaign is None or campaign.show_consequences),
        gr.Dropdown(choices=campaign_panel.campaign_names(desk.store), value=desk.campaign or ""),
    ]
    item = desk.next() if desk.annotator else None  # first: in an open campaign, asking is what claims items
    judged, total = desk.progress()
    of = f"{num(total)} assigned in {esc(desk.campaign)}" if desk.campaign else f"{num(total)} pairs"
    progress = f'<div class="as-progress">{esc(desk.annotator or "nobody")}: {num(judged)} judged of {of}</div>'
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
    if item is None:
        if desk.campaign and total == 0:
            note = f"You have no items in campaign {desk.campaign}: its annotators are named when it is made."
        elif desk.campaign:
            note = f"Nothing left for you in campaign {desk.campaign}: your items are judged (or it is closed)."
        else:
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
    frame = mark_pair(frame, item.elements, item.left.action, item.right.action)  # a web page: where each acts
    return [
        progress,
        context,
        frame,
        side_html("Left", item.left),
        side_html("Right", item.right),
        message_html(message, kind),
        *cleared,
    ]


def consequences_view(desk: AnnotationDesk) -> str:
    """What each side's action leads to from the pair's step (the environment forked once per side): the
    next observation and frame under each, escaped; one line where the pair has no step to fork."""
    from studio.episodes.consequences import consequences
    from studio.viz.plots import png_data_uri

    item = desk.item
    if not shows_consequences(desk):
        raise StudioError("This campaign does not show annotators what each action leads to.")
    if item is None or item.context is None:
        return message_html("This pair is not two outputs of one step: there is no state to fork.", "error")
    actions = [item.left.action, item.right.action]
    if not all(actions):
        return message_html("A side has no action to follow (its output named none).", "error")
    episode = desk.store.episodes.get(item.context[0])
    found = consequences(episode, item.context[1], [str(a) for a in actions])
    # Stored Monte Carlo values of the step (the latest estimate), matched to each side by its action.
    values = {v.action: v for v in desk.store.preferences.latest_step_values(*item.context)}
    sides = []
    for side, result in zip(("Left", "Right"), found):
        frame = (
            f'<img class="as-consequence-frame" alt="{esc(side)}: the next frame" src="{png_data_uri(result.frame)}">'
            if result.frame is not None
            else ""
        )
        outcome = "invalid: " + (result.invalid_reason or "") if not result.valid else f"reward {result.reward:g}"
        if result.done:
            outcome += " · the episode ends" + (" (success)" if result.success else "")
        value = values.get(result.action)
        stored = (
            f'<div class="as-consequence-value">stored Q {num(value.q, ".3f")} ± {num(value.stderr, ".3f")} '
            f"({plural(value.rollouts, 'rollout')}, {esc(value.rollout_policy)})</div>"
            if value is not None
            else ""
        )
        sides.append(
            f'<div class="as-consequence"><b>{esc(side)}</b>: {esc(result.action)} → {esc(outcome)}{stored}{frame}'
            f"<pre>{esc(result.observation)}</pre></div>"
        )
    return f'<div class="as-consequences">{"".join(sides)}</div>'


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
