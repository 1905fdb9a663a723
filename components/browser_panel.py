"""The episode browser: stored episodes with filters and full-text search, a page at a time (counts
and pages in SQL: it stays fast at 100,000 episodes); open one read-only, or fork it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.storage import Store
from studio.errors import StudioError
from studio.trace import UNFINISHED_REASONS
from studio.viz.html import esc

COLUMNS = ["id", "env", "seed", "policy", "model", "outcome", "steps", "return", "end", "started", "fork of"]
HIT_COLUMNS = ["episode", "step", "in", "text"]
#: Episodes per page.
PAGE = 50
SOURCES = ["any", "studio", "inspect", "chat", "agentlab", "lerobot"]


@dataclass
class BrowserPanel:
    env: gr.Dropdown
    policy: gr.Dropdown
    model: gr.Textbox
    outcome: gr.Dropdown
    since: gr.Textbox
    source: gr.Dropdown
    tag: gr.Textbox
    words: gr.Textbox
    page: gr.Number
    sweep: gr.Textbox
    setting: gr.Textbox
    judged: gr.Dropdown
    refresh: gr.Button
    count: gr.Markdown
    table: gr.Dataframe
    hits: gr.Dataframe
    episode_id: gr.Textbox
    open: gr.Button
    fork_at: gr.Number
    fork: gr.Button
    message: gr.HTML

    @property
    def filters(self) -> list[Any]:
        return [
            self.env,
            self.policy,
            self.model,
            self.outcome,
            self.since,
            self.source,
            self.tag,
            self.words,
            self.page,
            self.sweep,
            self.setting,
            self.judged,
        ]


def episode_filter(
    env: str = "",
    policy: str = "",
    model: str = "",
    outcome: str = "any",
    since: str = "",
    source: str = "any",
    tag: str = "",
    words: str = "",
    page: Any = None,
    sweep: str = "",
    setting: str = "",
    judged: str = "any",
) -> Any:
    """The filter the tab's fields describe (every one optional)."""
    from agent_studio.storage.search import EpisodeFilter

    return EpisodeFilter(
        env=env or None,
        policy=policy or None,
        model=(model or "").strip() or None,
        outcome=None if outcome in ("any", "", None) else outcome,
        source=None if source in ("any", "", None) else source,
        tag=(tag or "").strip() or None,
        since=(since or "").strip() or None,
        text=(words or "").strip() or None,
        sweep=(sweep or "").strip() or None,
        setting=(setting or "").strip() or None,
        judged={"yes": True, "no": False}.get(judged or "any"),
    )


def rows(store: Store | None, *filters: Any) -> list[list[Any]]:
    """One page of the filtered episodes, newest first (``filters``: the tab's, in :attr:`BrowserPanel.filters`'
    order; those left out are unset)."""
    if store is None:
        return []
    try:
        found = store.search.page(episode_filter(*filters), limit=PAGE, offset=(_page(filters) - 1) * PAGE)
    except StudioError:  # a filter that makes no sense: count_line() says why
        return []
    return [
        [
            r.id,
            r.env,
            r.seed,
            r.policy,
            r.model or "",
            outcome_word(r),
            r.steps,
            round(r.total_return, 3),
            r.end_reason or "",
            r.started_at[:19].replace("T", " "),
            (r.parent_id or "")[:8],
        ]
        for r in found
    ]


def _page(filters: tuple[Any, ...]) -> int:
    """The page number among ``filters`` (1 when absent or not a number)."""
    try:
        return max(1, int((filters[8] if len(filters) > 8 else 1) or 1))
    except (TypeError, ValueError):
        return 1


def count_line(store: Store | None, *filters: Any) -> str:
    """How many episodes match, and which page of them is shown (or why the filter makes no sense)."""
    if store is None:
        return ""
    try:
        total = store.search.count(episode_filter(*filters))
    except StudioError as error:
        return f"⚠ {esc(error)}"  # the count line is Markdown: the typed text stays text
    pages = max(1, -(-total // PAGE))
    return f"**{total:,}** episode{'' if total == 1 else 's'} match · page {min(_page(filters), pages)} of {pages}"


def hit_rows(store: Store | None, *filters: Any) -> list[list[Any]]:
    """The steps and notes with the words typed (none when no word is)."""
    words = filters[7] if len(filters) > 7 else ""
    if store is None or not (words or "").strip():
        return []
    try:
        hits = store.search.search(words, episode_filter(*filters), limit=100)
    except StudioError:  # the count line says why
        return []
    return [[h.episode_id, "" if h.step_index is None else h.step_index, h.where, h.snippet] for h in hits]


def outcome_word(summary: Any) -> str:
    """How an episode stands, in a word: running, success, failure, n/a (ran to its end in an
    environment without a notion of success), or how it was cut off (stopped, abandoned)."""
    if summary.ended_at is None:
        return "running"
    if summary.success is not None:
        return "success" if summary.success else "failure"
    reason = summary.end_reason or ""
    return next((prefix for prefix in UNFINISHED_REASONS if reason.startswith(prefix)), "n/a")


def env_choices(store: Store | None) -> list[str]:
    """The environment filter's choices: every environment the store holds episodes of, then the
    registered ones (so that a plugin's or a gym id's episodes can be found too)."""
    from studio.envs.registry import env_names

    stored = store.episodes.env_names() if store is not None else []
    return ["", *dict.fromkeys([*stored, *env_names()])]


def build(store: Store | None) -> BrowserPanel:
    with gr.Row():
        env = gr.Dropdown(env_choices(store), value="", label="Environment", allow_custom_value=True)
        policy = gr.Dropdown(
            ["", "react", "expert", "random", "human"], value="", label="Policy", allow_custom_value=True
        )
        model = gr.Textbox(label="Model id", placeholder="e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
        outcome = gr.Dropdown(["any", "success", "failure", "unknown", "running"], value="any", label="Outcome")
        since = gr.Textbox(label="Started since", placeholder="2026-11-21")
    with gr.Row():
        words = gr.Textbox(label="Words (thoughts, actions, observations, notes)", scale=3, elem_id="as-words")
        source = gr.Dropdown(SOURCES, value="any", label="Recorded by", scale=1, elem_id="as-source")
        tag = gr.Textbox(label="Tag", scale=1, elem_id="as-tag-filter")
        sweep = gr.Textbox(label="Sweep id", scale=1, elem_id="as-sweep-filter")
        setting = gr.Textbox(label="Setting", placeholder="temperature=0.7", scale=1, elem_id="as-setting-filter")
        judged = gr.Dropdown(["any", "yes", "no"], value="any", label="Judged", scale=1, elem_id="as-judged-filter")
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1, elem_id="as-page")
        refresh = gr.Button("Search", variant="primary", elem_id="as-browse", scale=1)
    count = gr.Markdown(elem_id="as-count")
    table = gr.Dataframe(
        headers=COLUMNS,
        value=[],
        interactive=False,
        wrap=False,
        max_height=420,
        elem_id="as-episodes",
        column_widths=["24%", "9%", "5%", "7%", "17%", "8%", "6%", "6%", "10%", "14%", "8%"],
    )
    hits = gr.Dataframe(
        headers=HIT_COLUMNS,
        value=[],
        interactive=False,
        wrap=True,
        max_height=300,
        label="Steps and notes with the words (click one to pick its episode and step)",
        elem_id="as-hits",
        column_widths=["26%", "6%", "6%", "62%"],
    )
    with gr.Row():
        episode_id = gr.Textbox(label="Episode id (click a row)", scale=3, elem_id="as-episode-id")
        open_button = gr.Button("Open read-only", scale=1, elem_id="as-open")
        fork_at = gr.Number(
            value=0, precision=0, minimum=0, label="Step (to fork at, tag, note)", scale=1, elem_id="as-step"
        )
        fork = gr.Button("Fork into the episode panel", scale=1, elem_id="as-browser-fork")
    message = gr.HTML()
    return BrowserPanel(
        env,
        policy,
        model,
        outcome,
        since,
        source,
        tag,
        words,
        page,
        sweep,
        setting,
        judged,
        refresh,
        count,
        table,
        hits,
        episode_id,
        open_button,
        fork_at,
        fork,
        message,
    )
