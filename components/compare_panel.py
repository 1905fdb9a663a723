"""The Compare tab: run a sweep (models x environments x seeds) in the background, watch its
progress, and read its results: success with Wilson intervals, returns, steps, invalid actions,
progress rates, cost per step, and paired tests between every two models on the same seeds.

A sweep started here runs in a background thread of the server (:class:`SweepJobs`, one per app):
it goes on when the page is closed, and any page shows how far it got. One runs at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from agent_studio.components.downloads import DownloadFolder
from agent_studio.components.errors import refused_into
from agent_studio.storage import Store
from agent_studio.storage.sweeps import SweepLease, SweepRecord
from studio.errors import StudioError
from studio.models.access import ModelAccess
from studio.jobs import JobQueue, WebLimits
from studio.evaluation.sweep import SCRIPTED_MODELS, SweepJob, SweepSpec, parse_vary, sweep_results
from studio.executors.sweeps import run_sweep_with
from studio.viz.html import message_html
from studio.viz.report import sweep_report, write_page
from studio.viz.results import diagnostics_html, paired_html, progress_html, results_figure, results_table_html

#: How often an open page asks how a sweep is doing (seconds).
POLL_SECONDS = 1.5


class SweepJobs:
    """The sweeps running in this server (at most one at a time): started, stopped, and asked about.
    Each runs holding its sweep's lease (:class:`storage.sweeps.SweepLease`): a sweep another process
    runs is refused here, and a lease this server loses ends its run."""

    def __init__(
        self,
        store: Store,
        registry: Any,
        access: ModelAccess,
        parallel: int = 4,
        limits: WebLimits | None = None,
        queue: JobQueue | None = None,
        make_executor: Callable[[], Any] | None = None,
    ) -> None:
        self.store, self.registry, self.access, self.parallel = store, registry, access, parallel
        #: The operator's executor for sweeps (``serve --executor ray``), made per sweep; None: this process.
        self.make_executor = make_executor
        self.limits = limits or WebLimits()
        self.queue = queue or JobQueue(self.limits.concurrency)
        self._jobs: dict[str, SweepJob] = {}
        self._lock = threading.Lock()

    def _refuse_if_running(self) -> None:
        if any(job.snapshot().running for job in self._jobs.values()):
            raise StudioError("A sweep is already running here: stop it, or wait until it ends.")

    def start_new(self, spec: SweepSpec, name: str | None) -> SweepRecord:
        """Check ``spec`` (models, the operator's budget, the disk), then store it and run it: a start
        refused for any reason stores nothing."""
        self.check_models(spec)
        steps = spec.step_budget()
        self.limits.check_steps(steps, f"This sweep of {spec.size:,} episodes")
        self.limits.check_disk(steps, self.store.free_bytes())
        with self._lock:
            self._refuse_if_running()
            lease = SweepLease(self.store.sweeps)
            record = self.store.sweeps.create(spec, name, lease=lease)
            self._start(record, lease.hold(record.id))
        return record

    def start(self, record: SweepRecord) -> SweepJob:
        """Run the cells ``record`` lacks in the background (after removing the incomplete episodes
        of an interrupted run); one line if a sweep is already running, here or in another process."""
        with self._lock:
            self._refuse_if_running()
            lease = SweepLease(self.store.sweeps).acquire(record.id)
            try:
                return self._start(record, lease)
            except BaseException:
                lease.release()
                raise

    def _start(self, record: SweepRecord, lease: SweepLease) -> SweepJob:
        _removed, done = self.store.sweeps.resume(record.id)
        job = SweepJob(record.id, record.cells, len(done))
        lease.on_lost = job.stop  # another process took the sweep over: stop, so no cell runs twice
        self._jobs[record.id] = job
        holder = f"sweep:{record.id}"
        loaded: list[Any] = []

        def load(name: str) -> Any:
            backend = self.registry.load(name, access=self.access, holder=holder)
            loaded.append(backend)
            return backend

        def work(stop: threading.Event, on_done: Any) -> Any:
            try:
                # A job of the server's queue like any heavy work: it waits for a slot, the Jobs tab
                # shows its progress, and cancelling it there is the Stop button.
                with self.queue.run("sweep", f"sweep {record.name}", cancel=stop) as queued:

                    def counted(cell: Any, result: Any) -> None:
                        on_done(cell, result)
                        now = job.snapshot()
                        queued.progress(now.done, now.total, now.message)

                    executor = self.make_executor() if self.make_executor is not None else None
                    job.progress.where = executor.describe() if executor is not None else ""
                    queued.progress(len(done), record.cells, f"on {job.progress.where}" if executor else "")
                    try:
                        return run_sweep_with(
                            executor,
                            record.spec,
                            record.id,
                            [self.store.episodes.sink()],
                            load,
                            skip=done,
                            parallel=self.parallel,
                            stop=stop,
                            on_done=counted,
                        )
                    finally:
                        if executor is not None:
                            executor.close()  # the workers go back to the cluster between sweeps
            finally:
                lease.release()
                for backend in loaded:
                    self.registry.release(backend, holder)

        job.start(work)
        return job

    def check_models(self, spec: SweepSpec) -> None:
        """Each model of ``spec`` may load from the browser (the operator's rules): one line before
        anything is stored, not a sweep that fails later."""
        for model in spec.models:
            if model not in SCRIPTED_MODELS:
                self.registry.check(model, access=self.access)

    def get(self, sweep_id: str) -> SweepJob | None:
        with self._lock:
            return self._jobs.get(sweep_id)

    def stop(self, sweep_id: str) -> bool:
        """Ask the sweep to stop; False when it is not running here."""
        job = self.get(sweep_id)
        if job is None or not job.snapshot().running:
            return False
        job.stop()
        return True


@dataclass
class ComparePanel:
    models: gr.Textbox
    envs: gr.Textbox
    seeds: gr.Textbox
    max_steps: gr.Number
    vary: gr.Textbox
    name: gr.Textbox
    start: gr.Button
    sweep: gr.Dropdown
    resume: gr.Button
    stop: gr.Button
    message: gr.HTML
    progress: gr.HTML
    table: gr.HTML
    paired: gr.HTML
    plot: gr.Plot
    report: gr.Button
    report_download: gr.DownloadButton
    timer: gr.Timer
    shown: gr.State
    """What the results show now (sweep id, complete count, running): redrawn only when it changes."""


def build() -> ComparePanel:
    gr.Markdown(
        "Run every model on every environment and seed, then compare them on the same seeds. "
        "Models: `expert`, `random`, `default` or any model name the Models tab loads. "
        "A sweep runs in the background and resumes where it stopped."
    )
    with gr.Row():
        models = gr.Textbox(value="expert,random", label="Models (comma-separated)", scale=3, elem_id="as-sweep-models")
        envs = gr.Textbox(value="gridworld", label="Environments (comma-separated)", scale=3, elem_id="as-sweep-envs")
        seeds = gr.Textbox(value="0-9", label="Seeds (e.g. 0-49 or 0-9,20)", scale=2, elem_id="as-sweep-seeds")
        max_steps = gr.Number(value=0, precision=0, label="Step limit (0: the env's)", scale=1, elem_id="as-sweep-max")
        name = gr.Textbox(value="", label="Name (optional)", scale=2, elem_id="as-sweep-name")
    vary = gr.Textbox(
        value="",
        label="Compare settings of the models (optional): every combination, e.g. temperature=0,0.7; candidates=1,4",
        elem_id="as-sweep-vary",
    )
    start = gr.Button("Start sweep", variant="primary", elem_id="as-sweep-start")
    with gr.Row():
        sweep = gr.Dropdown(
            [], value=None, label="Sweep", scale=3, allow_custom_value=False, elem_id="as-sweep-pick", interactive=True
        )
        resume = gr.Button("Resume", scale=1, elem_id="as-sweep-resume")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="as-sweep-stop")
    message = gr.HTML(elem_id="as-sweep-message")
    progress = gr.HTML(elem_id="as-sweep-progress")
    table = gr.HTML(elem_id="as-sweep-results")
    paired = gr.HTML(elem_id="as-sweep-paired")
    plot = gr.Plot(label="Success rate by environment", elem_id="as-sweep-plot")
    with gr.Row():
        report = gr.Button("Report of this sweep (HTML)", size="sm", elem_id="as-sweep-report")
        report_download = gr.DownloadButton("Download", size="sm", visible=False, elem_id="as-sweep-report-download")
    timer = gr.Timer(POLL_SECONDS, active=False)
    shown = gr.State(None)
    return ComparePanel(
        models,
        envs,
        seeds,
        max_steps,
        vary,
        name,
        start,
        sweep,
        resume,
        stop,
        message,
        progress,
        table,
        paired,
        plot,
        report,
        report_download,
        timer,
        shown,
    )


def _choices(store: Store) -> list[tuple[str, str]]:
    return [(f"{r.name} ({r.cells} episodes)", r.id) for r in store.sweeps.list()]


def view(store: Store, jobs: SweepJobs, sweep_id: str | None, shown: Any) -> dict[str, Any]:
    """The progress bar, and the results when they changed since ``shown``."""
    if not sweep_id:
        return {"progress": "", "table": "", "paired": "", "plot": None, "shown": None}
    record = store.sweeps.get(sweep_id)
    complete = store.sweeps.complete_cells(record.id)
    job = jobs.get(record.id)
    snapshot = job.snapshot() if job is not None else None
    running = bool(snapshot and snapshot.running)
    if running:
        state, detail = "running", snapshot.message if snapshot else ""
    elif len(complete) >= record.cells:
        state, detail = "complete", ""
    else:
        state, detail = "stopped: Resume runs the rest", ""
    if snapshot is not None and snapshot.error:
        state, detail = "failed", snapshot.error
    elif snapshot is not None and snapshot.failed:
        detail = f"{len(snapshot.failed)} failed: {snapshot.failed[0]}"
    if snapshot is not None and snapshot.where:
        state += f" on {snapshot.where}"
    out: dict[str, Any] = {"progress": progress_html(len(complete), record.cells, state, detail)}
    now = (record.id, len(complete), running)
    if now != shown:
        results = sweep_results(record.spec, store.sweeps.episodes_of(record.id))
        out.update(
            table=results_table_html(results),
            paired=paired_html(results) + diagnostics_html(results),
            plot=results_figure(results),
            shown=now,
        )
    return out


def wire(
    panel: ComparePanel,
    store: Store,
    jobs: SweepJobs,
    tab: gr.Tab,
    other_tabs: list[gr.Tab],
    downloads: DownloadFolder,
) -> None:
    """Events of the Compare tab. Its page polls a sweep's progress only while the tab is open."""
    private = dict(api_visibility="private")

    def by_component(values: dict[str, Any]) -> dict[Any, Any]:
        names = {"progress": panel.progress, "table": panel.table, "paired": panel.paired, "plot": panel.plot}
        out = {names[key]: value for key, value in values.items() if key in names}
        if "shown" in values:
            out[panel.shown] = values["shown"]
        return out

    refused = refused_into(panel.message)

    @refused
    def refresh(sweep_id: str | None, shown: Any) -> dict[Any, Any]:
        return by_component(view(store, jobs, sweep_id, shown))

    def opened(sweep_id: str | None) -> dict[Any, Any]:
        choices = _choices(store)
        ids = [value for _label, value in choices]
        chosen = sweep_id if sweep_id in ids else (ids[0] if ids else None)
        return {panel.sweep: gr.Dropdown(choices=choices, value=chosen), panel.timer: gr.Timer(active=True)}

    @refused
    def start(models: str, envs: str, seeds: str, max_steps: Any, vary: str, name: str) -> dict[Any, Any]:
        settings = {} if max_steps in (None, "", 0) else {"max_steps": max_steps}
        spec = SweepSpec.build(
            str(models or "").split(","),
            str(envs or "").split(","),
            str(seeds or ""),
            settings,
            vary=parse_vary(str(vary or "")),
        )
        spec.check_envs()
        spec.check_verifiers()
        record = jobs.start_new(spec, (name or "").strip() or None)
        return {
            panel.message: message_html(f"Started {record.name}: {record.cells} episodes.", "info"),
            panel.sweep: gr.Dropdown(choices=_choices(store), value=record.id),
            panel.shown: None,
        }

    @refused
    def resume(sweep_id: str | None) -> dict[Any, Any]:
        if not sweep_id:
            raise StudioError("Pick a sweep to resume.")
        record = store.sweeps.get(sweep_id)
        if len(store.sweeps.complete_cells(record.id)) >= record.cells:
            return {panel.message: message_html(f"{record.name} is complete: nothing to resume.", "info")}
        jobs.start(record)
        return {panel.message: message_html(f"Resumed {record.name}.", "info"), panel.shown: None}

    def stop(sweep_id: str | None) -> dict[Any, Any]:
        if sweep_id and jobs.stop(sweep_id):
            return {panel.message: message_html("Stopping: running episodes end after their current step.", "info")}
        return {panel.message: message_html("That sweep is not running.", "warning")}

    @refused_into(panel.message, {panel.report_download: gr.DownloadButton(visible=False)})
    def report(sweep_id: str | None) -> list[Any]:
        if not sweep_id:
            raise StudioError("Pick a sweep to report on.")
        record = store.sweeps.get(sweep_id)
        results = sweep_results(record.spec, store.sweeps.episodes_of(record.id))
        path = downloads.new_path(f"sweep-{record.name}.html")
        written = write_page(sweep_report(record.name, record.spec, results), path)
        label = f"Download sweep-{record.name}.html ({written['bytes'] / 1e6:.1f} MB)"
        return [gr.DownloadButton(label, value=str(path), visible=True), ""]

    panel.report.click(report, [panel.sweep], [panel.report_download, panel.message], **private)
    view_outputs = [panel.progress, panel.table, panel.paired, panel.plot, panel.shown, panel.message]
    form = [panel.models, panel.envs, panel.seeds, panel.max_steps, panel.vary, panel.name]
    panel.start.click(start, form, [panel.message, panel.sweep, panel.shown], **private)
    panel.resume.click(resume, [panel.sweep], [panel.message, panel.shown], **private)
    panel.stop.click(stop, [panel.sweep], [panel.message], **private)
    panel.sweep.change(lambda s: refresh(s, None), [panel.sweep], view_outputs, **private)
    panel.timer.tick(
        refresh, [panel.sweep, panel.shown], view_outputs, concurrency_limit=None, show_progress="hidden", **private
    )
    tab.select(opened, [panel.sweep], [panel.sweep, panel.timer], concurrency_limit=None, **private)
    for other in other_tabs:
        other.select(lambda: gr.Timer(active=False), None, [panel.timer], concurrency_limit=None, **private)
