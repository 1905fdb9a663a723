"""Campaigns in the Annotate tab: the guidelines beside every pair, a campaign's progress and each
annotator's quality, and the Adjudicate view (a disagreement's judgements side by side, the decision
stored as its own record).

Campaigns are made with ``agent-studio campaign create`` (an operator's act); in the browser people
pick one, judge their own assignments, and adjudicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from markdown_it import MarkdownIt

from agent_studio.storage import Store
from agent_studio.storage.desk import AnnotationDesk
from agent_studio.storage.vocab import SWAP
from studio.errors import StudioError
from studio.viz.html import context_html, esc, message_html, num, side_html

#: CommonMark without raw HTML: a guideline's ``<script>`` shows as text; markdown-it refuses
#: ``javascript:`` and ``data:`` links itself.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
SHOWN = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both bad"}
DECISIONS = [("left", "Left (1)"), ("right", "Right (2)"), ("tie", "Tie (3)"), ("both_bad", "Both bad (4)")]


def campaign_names(store: Store) -> list[tuple[str, str]]:
    """The campaigns, for the Annotate tab's choice ("" is the whole queue); a closed one says so (it is
    still adjudicated and exported)."""
    return [
        ("", ""),
        *((c.name + (" (closed)" if c.status == "closed" else ""), c.name) for c in store.campaigns.list()),
    ]


def guidelines_html(record: Any) -> str:
    """A campaign's current guidelines (markdown rendered here, without raw HTML), and their version; ""
    without a campaign (``record`` None)."""
    if record is None:
        return ""
    body = _MARKDOWN.render(record.guidelines) if record.guidelines.strip() else "<p>No guidelines yet.</p>"
    return (
        f'<div class="as-guidelines"><div class="as-card-title">Guidelines · {esc(record.name)} · '
        f"version {num(record.guidelines_version)}</div>{body}</div>"
    )


def shows_consequences(desk: AnnotationDesk) -> bool:
    """Whether this desk may show what each action leads to (a campaign can hide it from its annotators)."""
    return not desk.campaign or desk.store.campaigns.get(desk.campaign).show_consequences


def progress_html(store: Store, campaign: str) -> str:
    """A campaign's progress per annotator and each one's quality (agreement, adjudicated, gold, time)."""
    progress, quality = store.campaigns.progress(campaign), store.campaigns.quality(campaign)
    rows = []
    for who in sorted(set(progress["annotators"]) | set(quality["annotators"])):
        done = progress["annotators"].get(who, {"assigned": 0, "judged": 0})
        q = quality["annotators"].get(who, {})
        rows.append(
            f"<tr><th>{esc(who)}</th><td>{num(done['judged'])} of {num(done['assigned'])}</td>"
            f"<td>{_share(q.get('agreement_with_others'))}</td><td>{_share(q.get('agreement_with_adjudicated'))}</td>"
            f"<td>{_share(q.get('gold_accuracy'))}</td><td>{_seconds(q.get('median_seconds'))}</td></tr>"
        )
    alpha = quality["agreement"].get("krippendorff_alpha")
    return (
        f'<div class="as-card" id="as-campaign-progress"><div class="as-card-title">{esc(campaign)}: '
        f"{num(progress['complete'])} of {num(progress['items'])} items complete "
        f"({num(progress['overlap'])} judgements each; {num(progress['gold_items'])} gold) · "
        f"Krippendorff's alpha {'—' if alpha is None else num(alpha, '.3f')}</div>"
        "<table><tr><th>annotator</th><th>judged</th><th>agrees with others</th><th>with adjudicated</th>"
        f"<th>gold accuracy</th><th>median time</th></tr>{''.join(rows) or '<tr><td>nobody yet</td></tr>'}</table></div>"
    )


def _share(value: float | None) -> str:
    return "—" if value is None else num(value, ".0%")


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{num(value, '.1f')} s"


@dataclass
class AdjudicateView:
    summary: gr.HTML
    context: gr.HTML
    left: gr.HTML
    right: gr.HTML
    judgements: gr.HTML
    decide: list[tuple[str, gr.Button]]
    rationale: gr.Textbox
    message: gr.HTML
    refresh: gr.Button
    pair: gr.State

    @property
    def outputs(self) -> list[Any]:
        return [self.pair, self.summary, self.context, self.left, self.right, self.judgements, self.message]


def build_adjudicate() -> AdjudicateView:
    """The Adjudicate tab's widgets (inside the Annotate tab)."""
    with gr.Row():
        refresh = gr.Button("Next disagreement", size="sm", elem_id="as-adjudicate-refresh")
    summary = gr.HTML(elem_id="as-adjudicate-summary")
    with gr.Row(equal_height=False):
        context = gr.HTML(elem_id="as-adjudicate-context")
        with gr.Column(scale=2):
            with gr.Row(equal_height=False):
                left = gr.HTML(elem_id="as-adjudicate-left")
                right = gr.HTML(elem_id="as-adjudicate-right")
            judgements = gr.HTML(elem_id="as-adjudicate-judgements")
            with gr.Row():
                decide = [(c, gr.Button(text, elem_id=f"as-decide-{c}", min_width=80)) for c, text in DECISIONS]
            rationale = gr.Textbox(label="Why (stored with the decision)", lines=2, elem_id="as-adjudicate-rationale")
            message = gr.HTML(elem_id="as-adjudicate-message")
    return AdjudicateView(
        summary, context, left, right, judgements, decide, rationale, message, refresh, gr.State(None)
    )


def render_disagreement(store: Store, campaign: str | None, note: str = "", kind: str = "info") -> list[Any]:
    """The first disagreement of ``campaign`` nobody has settled: the pair as annotators saw it, and
    every judgement of it (as shown, with rationales) side by side. Returns :attr:`AdjudicateView.outputs`."""
    if not campaign:
        blank = '<div class="as-empty">Pick a campaign above: its disagreements are settled here.</div>'
        return [None, blank, "", "", "", "", message_html(note, kind)]
    summary = progress_html(store, campaign)
    open_items = store.campaigns.disagreements(campaign, settled=False)
    if not open_items:
        done = '<div class="as-empty">No disagreement is waiting in this campaign.</div>'
        return [None, summary, done, "", "", "", message_html(note, kind)]
    first = open_items[0]
    item = store.preferences.item(first.pair_id)
    context = context_html(item.instruction, item.history, item.observation, item.step_index)
    votes = "".join(
        f'<div class="as-judgement"><b>{esc(j.annotator)}</b>: '
        f"{esc(SHOWN[SWAP[j.choice] if item.swapped else j.choice])}"
        f"{' · “' + esc(j.rationale) + '”' if j.rationale else ''}</div>"
        for j in first.judgements
    )
    waiting = f'<div class="as-muted">{num(len(open_items))} disagreement(s) waiting</div>'
    return [
        first.pair_id,
        summary,
        context,
        side_html("Left", item.left),
        side_html("Right", item.right),
        f'<div class="as-judgements">{votes}</div>{waiting}',
        message_html(note, kind),
    ]


def adjudicate(store: Store, campaign: str | None, pair_id: str | None, who: str, choice: str, why: str) -> list[Any]:
    """Store the decision on the pair on screen (sides as shown), then show the next disagreement."""
    if not campaign or not pair_id:
        raise StudioError("No disagreement on screen: pick a campaign, then press Next disagreement.")
    if not str(who or "").strip():
        raise StudioError("Type your name first (top of this tab): the decision is stored under it.")
    decision = store.campaigns.adjudicate(campaign, pair_id, who, choice, rationale=why or "", as_shown=True)
    return render_disagreement(store, campaign, f"Decided by {decision.adjudicator}: {SHOWN[choice].lower()}.")
