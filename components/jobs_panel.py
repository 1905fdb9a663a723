"""The Jobs tab: the server's heavy work in one place — value estimates, cross-scores, attention passes,
videos, judging and sweeps — running or waiting for a slot, with progress, ETA, and Cancel.

The queue (:class:`studio.jobs.JobQueue`) is the server's; every page sees the same list. The tab
polls it only while it is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.jobs import JobInfo, JobQueue
from studio.viz.html import esc, message_html, num

#: How often an open Jobs tab reads the queue (seconds).
POLL_SECONDS = 1.0


@dataclass
class JobsPanel:
    table: gr.HTML
    job: gr.Dropdown
    cancel: gr.Button
    message: gr.HTML
    timer: gr.Timer


def build(queue: JobQueue) -> JobsPanel:
    gr.Markdown(
        f"Heavy work started from any page of this server runs here, {queue.concurrency} at a time; the rest "
        "waits its turn. Cancel stops a job between its steps (nothing of it is kept) or takes it out of the queue."
    )
    table = gr.HTML(elem_id="as-jobs")
    with gr.Row():
        job = gr.Dropdown([], value=None, label="Job", scale=3, elem_id="as-job-pick", allow_custom_value=False)
        cancel = gr.Button("Cancel job", variant="stop", scale=1, elem_id="as-job-cancel")
    message = gr.HTML(elem_id="as-jobs-message")
    timer = gr.Timer(POLL_SECONDS, active=False)
    return JobsPanel(table, job, cancel, message, timer)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _row(job: JobInfo) -> str:
    fraction = job.fraction
    bar = (
        f'<div class="as-progress-track"><div class="as-progress-fill" style="width:{num(100 * (fraction or 0), ".1f")}%">'
        "</div></div>"
    )
    # What the job says it is doing (its own words carry the counts), else the bare counts.
    done = job.message or ("" if job.total is None else f"{num(job.done, 'g')} of {num(job.total, 'g')}")
    if job.state == "done":  # its last words ("drawing the frames") are over: the full bar says it
        done = ""
    when = _duration(job.queued_s) + " waiting" if job.state == "queued" else _duration(job.running_s)
    return (
        f'<tr data-state="{esc(job.state)}"><td>{esc(job.kind)}</td><td>{esc(job.title)}</td>'
        f"<td>{esc(job.state)}</td><td>{bar}<span class='as-subtle'>{esc(done)}</span></td>"
        f"<td>{esc(when)}</td><td>{esc(_duration(job.eta_s))}</td><td class='as-subtle'>{esc(job.id)}</td></tr>"
    )


def table_html(jobs: list[JobInfo]) -> str:
    """Every job as a row (every value escaped: titles name episodes and models)."""
    if not jobs:
        return '<div class="as-empty">No jobs yet: value estimates, scores, attention, videos and sweeps show up here.</div>'
    head = "".join(f"<th>{c}</th>" for c in ("kind", "what", "state", "progress", "time", "left (ETA)", "id"))
    return f'<table class="as-results as-jobs"><thead><tr>{head}</tr></thead><tbody>{"".join(map(_row, jobs))}</tbody></table>'


def summary(queue: JobQueue) -> str:
    """A few words for the page's header: how many jobs run and wait."""
    jobs = queue.jobs()
    running = sum(job.state == "running" for job in jobs)
    waiting = sum(job.state == "queued" for job in jobs)
    if not running and not waiting:
        return ""
    return f" · jobs: {running} running" + (f", {waiting} waiting" if waiting else "")


def wire(panel: JobsPanel, queue: JobQueue, tab: gr.Tab, other_tabs: list[gr.Tab]) -> None:
    private = dict(api_visibility="private", concurrency_limit=None)

    def refresh(chosen: str | None) -> dict[Any, Any]:
        jobs = queue.jobs()
        active = [
            (f"{job.kind}: {job.title} ({job.state})", job.id) for job in jobs if job.state in ("queued", "running")
        ]
        ids = [value for _label, value in active]
        return {
            panel.table: table_html(jobs),
            panel.job: gr.Dropdown(choices=active, value=chosen if chosen in ids else (ids[0] if ids else None)),
        }

    def cancel(job_id: str | None) -> dict[Any, Any]:
        if job_id and queue.cancel(job_id):
            note = message_html("Cancelling: the job ends at its next step and keeps nothing.", "info")
        else:
            note = message_html("That job is not running or waiting any more.", "warning")
        return {panel.message: note, **refresh(None)}

    outputs = [panel.table, panel.job]
    panel.timer.tick(refresh, [panel.job], outputs, show_progress="hidden", **private)
    panel.cancel.click(cancel, [panel.job], [panel.message, *outputs], **private)
    tab.select(
        lambda chosen: {**refresh(chosen), panel.timer: gr.Timer(active=True)},
        [panel.job],
        [*outputs, panel.timer],
        **private,
    )
    for other in other_tabs:
        other.select(lambda: gr.Timer(active=False), None, [panel.timer], **private)
