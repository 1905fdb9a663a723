"""The studio web app: composes the panels into one ``gr.Blocks``.

Per-user state is one :class:`~studio.session.StudioSession` per browser tab, made by
``gr.State``'s factory when the page loads (and closed when the tab goes away). The only
things shared between sessions are the services the composition root hands in: the model
registry (one copy of each model per process) and the store.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components import (
    annotate_events,
    annotate_panel,
    api,
    browser_panel,
    compare_panel,
    episode_events,
    crossscore_panel,
    episode_panel,
    find_panel,
    jobs_panel,
    train_panel,
    model_panel,
    plots_panel,
    present_panel,
    inside_panel,
    values_panel,
)
from agent_studio.components.services import Services
from agent_studio.storage import Store
from agent_studio.storage.desk import AnnotationDesk
from agent_studio.storage.preferences import CandidatePairSink
from studio.errors import StudioError
from studio.session import EpisodeSettings, StudioSession
from studio.viz.html import message_html, plural

TITLE = "Agent Studio"
TAGLINE = "Watch agents act, look inside their decisions, and turn what you see into training data."


class Renderer:
    """Fills the episode panel and the plots from a session, in one list of outputs.

    It also keeps what each tab is looking at (whether its Plots tab is open): view state,
    which the session (the core) knows nothing of. Keyed weakly by session, so it goes with the tab.
    """

    def __init__(
        self,
        episode: episode_panel.EpisodePanel,
        plots: plots_panel.PlotsPanel,
        store: Store | None,
        database: gr.Markdown,
        jobs: Any = None,
    ) -> None:
        self.episode, self.plots, self.store = episode, plots, store
        self.database, self.jobs = database, jobs
        self.outputs = [*episode.outputs, *plots.outputs, database]
        self._plots_open: weakref.WeakKeyDictionary[StudioSession, bool] = weakref.WeakKeyDictionary()

    def show_plots(self, session: StudioSession, visible: bool) -> None:
        """The tab of ``session`` opened (True) or left (False) its Plots tab."""
        self._plots_open[session] = visible

    def __call__(
        self,
        session: StudioSession,
        message: str = "",
        kind: str = "error",
        selected: int | None = None,
        mode: str = "logprob",
    ) -> dict[Any, Any]:
        """Every view of the episode panel and the plots, and the database line, by component."""
        # Figures cost tens of milliseconds to build and to draw: only while the Plots tab is open.
        plots = self.plots.render(session, self.store) if self._plots_open.get(session, False) else {}
        # The header's count follows every action that stores (one count over the episodes table).
        return {
            **self.episode.render(session, message, kind, selected, mode),
            **plots,
            self.database: _database_line(self.store, self.jobs),
        }


def new_session(services: Services) -> StudioSession:
    """A fresh session: model A is the default model, gridworld seed 0 is reset and ready."""
    sinks = (
        [services.store.episodes.sink(), CandidatePairSink(services.store.preferences)]
        if services.store is not None
        else []
    )
    policy = "react-a" if services.default_model is not None else "expert"
    session = StudioSession(
        services.registry,
        sinks=sinks,
        model_a=services.default_model,
        settings=EpisodeSettings(policy=policy),
        access=services.access,
    )
    session.reset()
    return services.track(session)


def session_state(factory: Callable[[], StudioSession]) -> gr.State:
    """A ``gr.State`` holding one session per page, made by ``factory`` the first time an event of the
    page reads it. Given the factory as its value, ``gr.State`` would also call it when the app is
    built and add a load event of its own that makes another session for every page, racing the
    page's load handler (the page then steps in one session while another is the one its tab closes).
    Set after construction, the factory is only called on that first read."""
    state = gr.State(None, delete_callback=lambda session: session.close() if session is not None else None)
    state.value = factory
    return state


@dataclass(frozen=True)
class TabSpec:
    """One tab of the studio: its label and id, and how its panel is built (the panel's ``wire``
    is called in :func:`build_app`, which knows what it connects to)."""

    id: str
    label: str
    build: Callable[[gr.State, Services], Any]
    needs_store: bool = False
    """Only with a database (``serve`` without one leaves the tab out)."""
    elem_id: str | None = None


#: Every tab, in the order the page shows them: the one list a new panel is added to.
TABS: list[TabSpec] = [
    TabSpec("episode", "Episode", lambda state, services: episode_panel.build(state)),
    TabSpec("plots", "Plots", lambda state, services: plots_panel.build(), elem_id="as-tab-plots"),
    TabSpec("models", "Models", lambda state, services: model_panel.build(state, services.access)),
    TabSpec(
        "episodes",
        "Episodes",
        lambda state, services: (browser_panel.build(services.store), find_panel.build()),
    ),
    TabSpec(
        "annotate",
        "Annotate",
        lambda state, services: annotate_panel.build(),
        needs_store=True,
        elem_id="as-tab-annotate",
    ),
    TabSpec(
        "compare", "Compare", lambda state, services: compare_panel.build(), needs_store=True, elem_id="as-tab-compare"
    ),
    TabSpec("train", "Train", lambda state, services: train_panel.build(), needs_store=True, elem_id="as-tab-train"),
    TabSpec("jobs", "Jobs", lambda state, services: jobs_panel.build(services.jobs), elem_id="as-tab-jobs"),
]


def _build_tabs(state: gr.State, services: Services) -> tuple[dict[str, Any], dict[str, gr.Tab]]:
    """Each tab of :data:`TABS` this server has (inside ``gr.Tabs``): the panels and the tabs, by id."""
    panels: dict[str, Any] = {}
    tab_of: dict[str, gr.Tab] = {}
    for spec in TABS:
        if spec.needs_store and services.store is None:
            continue
        with gr.Tab(spec.label, id=spec.id, elem_id=spec.elem_id) as tab:
            panels[spec.id] = spec.build(state, services)
        tab_of[spec.id] = tab
    return panels, tab_of


def build_app(services: Services) -> gr.Blocks:
    """The studio app over ``services``."""
    with gr.Blocks(title=TITLE) as app:
        state = session_state(lambda: new_session(services))
        with gr.Column() as studio_view:  # hidden on a presentation page (/?present=...)
            with gr.Row():
                gr.Markdown(f"# {TITLE}\n{TAGLINE}")
                database = gr.Markdown(elem_id="as-database")
            with gr.Tabs(selected="episode") as tabs:
                panels, tab_of = _build_tabs(state, services)
        present = present_panel.build()
        api.build(state)
        episode, plots, slots, (browser, finder), jobs = (
            panels[n] for n in ("episode", "plots", "models", "episodes", "jobs")
        )
        annotate, compare = panels.get("annotate"), panels.get("compare")
        episode_tab, plots_tab, episodes_tab, jobs_tab = (tab_of[n] for n in ("episode", "plots", "episodes", "jobs"))

        def other_tabs(*but: str) -> list[gr.Tab]:
            return [tab for name, tab in tab_of.items() if name not in but]

        render = Renderer(episode, plots, services.store, database, services.jobs)
        episode_events.wire(episode, state, render, services.jobs, services.downloads)
        plots_panel.wire(plots, state, services.store)
        for change in model_panel.wire(slots, state):  # the Episode panel offers what the new model can do
            change.then(
                episode_panel.action_modes,
                [state, episode.form["policy"], episode.form["action_mode"]],
                [episode.form["action_mode"]],
                api_visibility="private",
            )
        _wire_browser(browser, state, render, tabs, services.store, episode)
        find_panel.wire(finder, browser, state, services)
        crossscore_panel.wire(episode.cross, state, services.store, services.jobs)
        inside_panel.wire(episode.inside, state, episode.selected, episode.form["steer"], services.store, services.jobs)
        jobs_panel.wire(jobs, services.jobs, jobs_tab, other_tabs("jobs"))
        if "train" in panels:
            train_panel.wire(panels["train"], services, tab_of["train"], episode.form["verifier"])
        # The header's counts follow background work too (a sweep's episodes, a judge's verdicts).
        header = gr.Timer(HEADER_SECONDS, active=False)  # started once the page has loaded (see below)
        header.tick(
            lambda: _database_line(services.store, services.jobs),
            None,
            [database],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )

        def show_plots(session: StudioSession, visible: bool, selected: Any = None) -> dict[Any, Any]:
            render.show_plots(session, visible)
            return {state: session, **(plots.render(session, services.store, selected) if visible else {})}

        for tab in other_tabs("plots"):
            tab.select(
                lambda session: show_plots(session, False),
                [state],
                [state, *plots.outputs],
                api_visibility="private",
                concurrency_limit=None,
            )
        plots_tab.select(  # the Episode tab's selected step is marked (the raw value: step_at checks it)
            lambda session, selected: show_plots(session, True, selected),
            [state, episode.selected],
            [state, *plots.outputs],
            preprocess=False,
            api_visibility="private",
            concurrency_limit=None,
        )
        episodes_tab.select(
            lambda *f: (
                browser_panel.rows(services.store, *f),
                browser_panel.count_line(services.store, *f),
                gr.Dropdown(choices=browser_panel.env_choices(services.store)),
            ),
            browser.filters,
            [browser.table, browser.count, browser.env],
            api_visibility="private",
            concurrency_limit=None,
        )

        modes = episode.form["action_mode"]

        policy = episode.form["policy"]

        def on_load(session: StudioSession, request: gr.Request) -> dict[Any, Any]:
            if request is not None and request.session_hash:
                services.opened(request.session_hash, session)
            settings = session.settings
            message, selected = open_from_link(session, services.store, request)
            return {
                **render(session, message, "info" if selected is not None else "error", selected),
                **{slot.card: model_panel.render(session, slot) for slot in slots},
                modes: episode_panel.action_modes(session, settings.policy, settings.action_mode),
                policy: settings.policy,  # the session's (expert when the studio started without a model)
            }

        # One load event, the rest chained after it: Gradio makes a page's state on the first event that
        # reads it, and two events arriving at once each make one (the page then steps in one session
        # while the other is the one closed with the tab).
        loaded = app.load(
            on_load, [state], [*render.outputs, *(s.card for s in slots), modes, policy], api_visibility="private"
        )
        present_panel.wire(present, studio_view, state, services.store, loaded)
        loaded.then(lambda: gr.Timer(active=True), None, [header], api_visibility="private", show_progress="hidden")

        # A page that goes away ends its session at once (Gradio drops its state only an hour later):
        # its unfinished episode is abandoned, never left "running".
        def unloaded(request: gr.Request) -> None:
            if request is not None and request.session_hash:
                services.closed(request.session_hash)

        app.unload(unloaded)
        if annotate is not None:
            desk = gr.State(lambda: AnnotationDesk(services.store))
            remembered = gr.BrowserState("", storage_key="agent-studio-annotator")
            annotate_events.wire(annotate, state, desk, remembered, services.store, services.jobs, services.downloads)
            annotate_events.wire_pair_makers(episode, state, services.store)
            values_panel.wire(episode.values, state, episode.selected, services.store, services.jobs, services.limits)
            compare_panel.wire(
                compare,
                services.store,
                compare_panel.SweepJobs(
                    services.store,
                    services.registry,
                    services.access,
                    limits=services.limits,
                    queue=services.jobs,
                    make_executor=services.sweep_executor,
                ),
                tab_of["compare"],
                other_tabs("compare"),
                services.downloads,
            )
            load_outputs = [desk, annotate.name, *annotate.outputs]
            loaded.then(annotate_panel.restore_name, [desk, remembered], load_outputs, api_visibility="private")
            tab_of["annotate"].select(
                annotate_panel.refresh,
                [desk],
                [desk, *annotate.outputs],
                api_visibility="private",
                concurrency_limit=None,
            )
            tab_of["annotate"].select(
                lambda: annotate_panel.overview_html(services.store),
                None,
                [annotate.overview],
                api_visibility="private",
                concurrency_limit=None,
            )
    _only_named_endpoints(app)
    return app


def _only_named_endpoints(app: gr.Blocks) -> None:
    """The API page lists the named endpoints only. Events Gradio adds on its own (the load event
    that makes each tab's session) would otherwise show up as anonymous ``/lambda_N``."""
    functions = app.fns.values() if isinstance(app.fns, dict) else app.fns
    for function in functions:
        if function.api_name not in api.ENDPOINTS:
            function.api_visibility = "private"


#: How often every page refreshes its header (episode count, jobs): background work changes them.
HEADER_SECONDS = 5.0


def _database_line(store: Store | None, jobs: Any = None) -> str:
    busy = jobs_panel.summary(jobs) if jobs is not None else ""
    if store is None:
        return "Episodes are not stored (no database)." + busy
    return f"Database `{store.url}` · {plural(store.episodes.count_episodes(), 'episode')} stored{busy}"


def open_from_link(session: StudioSession, store: Store | None, request: gr.Request | None) -> tuple[str, int | None]:
    """A page opened from a link to a step (``/?open=EPISODE&step=N``: a judge's citation, a search hit,
    an aggregate's example) shows that episode read-only at that step; the message and the step."""
    wanted = (request.query_params.get("open") or "").strip()[:64] if request is not None else ""
    if not wanted:
        return "", None
    try:
        if store is None:
            raise StudioError("No database: start the studio with --db to open a stored episode.")
        session.open(opened_episode(store, wanted))
        text = (request.query_params.get("step") or "0").strip()[:12]
        step = int(text) if text.isdigit() else 0
        step = min(step, max(0, session.episode.length - 1))
        return f"Opened read-only at step {step} (from a link).", step
    except StudioError as error:
        return str(error), None


def opened_episode(store: Store, episode_id: str) -> Any:
    """A stored episode as the Episode tab shows it: an imported step with no tokens of its own shows
    those of a model it was scored under (its trace colours and hovers)."""
    from studio.evaluation.crossscore import with_scored_tokens

    episode = store.episodes.get(episode_id)
    if episode.source is None:
        return episode
    return with_scored_tokens(episode, store.cross_scores.of_episode(episode.id))


def _wire_browser(
    panel: browser_panel.BrowserPanel,
    state: gr.State,
    render: Renderer,
    tabs: gr.Tabs,
    store: Store | None,
    episode: episode_panel.EpisodePanel,
) -> None:
    private = dict(api_visibility="private", concurrency_limit=None)

    def pick(event: gr.SelectData) -> str:
        row = event.row_value if event is not None else None
        return str(row[0]) if row else ""

    panel.table.select(pick, None, [panel.episode_id], **private)

    def open_episode(session: StudioSession, episode_id: str, fork_at: float | None, fork: bool) -> dict[Any, Any]:
        try:
            if store is None:
                raise StudioError("No database: start the studio with --db to browse episodes.")
            session.open(opened_episode(store, (episode_id or "").strip()))
            message = "Opened read-only: pick a step and Fork to continue it."
            if fork:
                forked = session.fork(int(fork_at or 0))
                message = f"Forked at step {forked.forked_at}: press Step to continue."
            return {
                state: session,
                **render(session, message, "info"),
                panel.message: "",
                tabs: gr.Tabs(selected="episode"),
                **episode_panel.renewed_values(episode, session),
            }
        except StudioError as exc:
            return {state: session, **render(session), panel.message: message_html(str(exc))}

    outputs = [state, *render.outputs, panel.message, tabs, *episode_panel.renewed_outputs(episode)]
    panel.open.click(lambda s, i: open_episode(s, i, None, False), [state, panel.episode_id], outputs, **private)
    panel.fork.click(
        lambda s, i, at: open_episode(s, i, at, True), [state, panel.episode_id, panel.fork_at], outputs, **private
    )
