"""The episode browser: stored episodes with filters; open one read-only, or fork it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.storage import Store
from studio.trace import UNFINISHED_REASONS

COLUMNS = ["id", "env", "seed", "policy", "model", "outcome", "steps", "return", "end", "started", "fork of"]


@dataclass
class BrowserPanel:
    env: gr.Dropdown
    policy: gr.Dropdown
    model: gr.Textbox
    outcome: gr.Dropdown
    since: gr.Textbox
    refresh: gr.Button
    table: gr.Dataframe
    episode_id: gr.Textbox
    open: gr.Button
    fork_at: gr.Number
    fork: gr.Button
    message: gr.HTML

    @property
    def filters(self) -> list[Any]:
        return [self.env, self.policy, self.model, self.outcome, self.since]


def rows(store: Store | None, env: str, policy: str, model: str, outcome: str, since: str) -> list[list[Any]]:
    if store is None:
        return []
    success = {"success": True, "failure": False}.get(outcome)
    found = store.episodes.summaries(
        env=env or None,
        policy=policy or None,
        model=(model or "").strip() or None,
        success=success,
        since=(since or "").strip() or None,
        limit=200,
    )
    if outcome == "running":
        found = [r for r in found if r.ended_at is None]
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
        outcome = gr.Dropdown(["any", "success", "failure", "running"], value="any", label="Outcome")
        since = gr.Textbox(label="Started since", placeholder="2026-11-21")
        refresh = gr.Button("Search", variant="primary", elem_id="as-browse")
    table = gr.Dataframe(
        headers=COLUMNS,
        value=[],
        interactive=False,
        wrap=False,
        max_height=420,
        elem_id="as-episodes",
        column_widths=["24%", "9%", "5%", "7%", "17%", "8%", "6%", "6%", "10%", "14%", "8%"],
    )
    with gr.Row():
        episode_id = gr.Textbox(label="Episode id (click a row)", scale=3, elem_id="as-episode-id")
        open_button = gr.Button("Open read-only", scale=1, elem_id="as-open")
        fork_at = gr.Number(value=0, precision=0, minimum=0, label="Fork at step", scale=1)
        fork = gr.Button("Fork into the episode panel", scale=1, elem_id="as-browser-fork")
    message = gr.HTML()
    return BrowserPanel(
        env, policy, model, outcome, since, refresh, table, episode_id, open_button, fork_at, fork, message
    )
