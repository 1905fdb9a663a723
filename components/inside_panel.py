"""Inside the network, in the Episode panel: make a steering vector from this environment's stored
episodes and steer model A with it (the Steering setting), the logit lens and the observation
dependence of the selected step, and probes of what the agent represents, layer by layer.

Vectors are named, never located: a browser names one in the operator's library folder. Every
number drawn is computed by :mod:`studio.internals` (the command line's ``steer``, ``lens``,
``perception`` and ``probe`` print the same)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.errors import refused_into
from agent_studio.storage import Store
from studio.errors import StudioError
from studio.internals.vectors import SteerSpec, VectorLibrary, parse_layers, recorded_steering
from studio.jobs import JobCancelled, JobQueue
from studio.session import StudioSession
from studio.validation import real_number
from studio.viz.html import esc, message_html, step_card
from studio.viz.inside import dependence_figure, lens_figure, probe_figure

#: Stored episodes of the environment a vector or a probe reads at most (from the browser).
WEB_EPISODES = 100
TARGETS = ["agent_row", "agent_col", "goal_row", "goal_col", "distance", "key_held", "expert_action"]
TARGETS += ["room", "location", "held_object", "agent_x", "agent_y", "agent_dir"]


@dataclass
class InsidePanel:
    name: gr.Textbox
    method: gr.Radio
    make: gr.Button
    vectors: gr.Dropdown
    alpha: gr.Number
    layer: gr.Textbox
    use: gr.Button
    message: gr.HTML
    lens: gr.Button
    both: gr.Button
    both_view: gr.HTML
    ablation: gr.Radio
    perception: gr.Button
    lens_plot: gr.Plot
    dependence_plot: gr.Plot
    target: gr.Dropdown
    probe: gr.Button
    probe_plot: gr.Plot


def build() -> InsidePanel:
    names = VectorLibrary().names()
    with gr.Accordion("Inside the network: steering, logit lens, probes", open=False, elem_id="as-inside"):
        with gr.Row():
            name = gr.Textbox(label="New vector's name", value="explore", scale=2, elem_id="as-inside-name")
            method = gr.Radio(
                ["east", "contrastive"], value="east", label="Made by", scale=2, elem_id="as-inside-method",
                info="east: entropy-weighted (score-mode steps); contrastive: successes minus failures",
            )  # fmt: skip
            make = gr.Button("Make it from this environment's stored episodes", scale=2, elem_id="as-inside-make")
        with gr.Row():
            vectors = gr.Dropdown(
                names, value=names[0] if names else None, label="Vector", scale=2, elem_id="as-inside-vectors"
            )
            alpha = gr.Number(
                value=4.0, label="α (strength; negative: the other way)", scale=1, elem_id="as-inside-alpha"
            )
            layer = gr.Textbox(
                value="", label="Layers (12, 10-14; empty: the vector's own)", scale=1, elem_id="as-inside-layer"
            )
            use = gr.Button("Steer model A with it", variant="primary", scale=2, elem_id="as-inside-use")
        message = gr.HTML(elem_id="as-inside-message")
        with gr.Row():
            both = gr.Button("The selected step with and without steering", elem_id="as-inside-both")
            lens = gr.Button("Logit lens of the selected step", elem_id="as-inside-lens")
            ablation = gr.Radio(
                ["mask", "blank", "noise"],
                value="mask",
                label="Take the observation away by",
                elem_id="as-inside-ablation",
            )
            perception = gr.Button("How much does each token depend on it?", elem_id="as-inside-perception")
        both_view = gr.HTML(elem_id="as-inside-both-view")
        lens_plot = gr.Plot(label="Logit lens", elem_id="as-inside-lens-plot")
        dependence_plot = gr.Plot(label="Observation dependence", elem_id="as-inside-dependence-plot")
        with gr.Row():
            target = gr.Dropdown(TARGETS, value="agent_row", label="Probe target", scale=2, elem_id="as-inside-target")
            probe = gr.Button("Probe this environment's stored episodes", scale=2, elem_id="as-inside-probe")
        probe_plot = gr.Plot(label="Probes per layer", elem_id="as-inside-probe-plot")
    return InsidePanel(
        name, method, make, vectors, alpha, layer, use, message, lens, both, both_view, ablation, perception,
        lens_plot, dependence_plot, target, probe, probe_plot,
    )  # fmt: skip


def model_a(session: StudioSession) -> Any:
    backend = session.models.get("A")
    if backend is None:
        raise StudioError("Load model A in the Models tab: its insides are what this reads.")
    if not backend.capabilities.internals:
        backend.internals()  # one line: why its insides cannot be read
    return backend


def stored_episodes(store: Store | None, session: StudioSession) -> list[Any]:
    """The newest stored episodes of the session's environment (those run here have snapshots)."""
    if store is None:
        raise StudioError("This studio keeps no episodes (no database): nothing stored to read.")
    from agent_studio.storage.search import EpisodeFilter

    rows = store.search.page(EpisodeFilter(env=session.settings.env), limit=WEB_EPISODES)
    if not rows:
        raise StudioError(f"No stored episodes of {session.settings.env} yet: run some first.")
    return [store.episodes.get(row.id) for row in rows]


def wire(
    panel: InsidePanel, state: gr.State, selected: gr.Slider, steer: gr.Textbox, store: Store | None, jobs: JobQueue
) -> None:
    """Make, choose and use vectors; the lens, the dependence and the probes of model A."""
    private = dict(api_visibility="private", concurrency_limit=None)

    @refused_into(panel.message)
    def make(session: StudioSession, name: str, method: str, progress=gr.Progress()) -> dict[Any, Any]:
        from studio.internals.making import make_contrastive, make_east
        from studio.internals.vectors import check_name

        library = VectorLibrary()
        check_name(name)
        if library.path(name).exists():
            raise StudioError(f"A vector named {name!r} exists: choose another name.")
        backend, episodes = model_a(session), stored_episodes(store, session)
        with jobs.run("steering vector", f"{method} vector {name}") as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} steps read")
                job.progress(done, total, f"{done} of {total} steps read")
                if job.cancelled:
                    raise JobCancelled("Cancelled from the Jobs tab: no vector was saved.")

            if method == "east":
                vector = make_east(name, backend, episodes, progress=tick)
            else:
                wins = [e for e in episodes if e.success]
                losses = [e for e in episodes if e.success is False]
                vector = make_contrastive(name, backend, wins, losses, progress=tick, labels=("success", "failure"))
        library.save(vector)
        names = library.names()
        note = f"Saved {name}: {vector.method}, {vector.made_from.get('steps', '?')} steps read; default layer {vector.layer}."
        return {panel.message: message_html(note, "info"), panel.vectors: gr.Dropdown(choices=names, value=name)}

    panel.make.click(make, [state, panel.name, panel.method], [panel.message, panel.vectors], **private)

    @refused_into(panel.message)
    def use(name: Any, alpha: Any, layer: Any) -> dict[Any, Any]:
        if not name:
            raise StudioError("Choose a vector (or make one).")
        strength = real_number(alpha, "α", -1000.0, 1000.0)
        layers = parse_layers(str(layer)) if str(layer or "").strip() else None
        spec = SteerSpec(str(name), layers, strength)
        spec.resolve(VectorLibrary())  # a missing vector or layer: one line now, not at the next step
        return {
            steer: spec.text(),
            panel.message: message_html(f"Steering set to {spec.text()}: the next step of model A is steered.", "info"),
        }

    panel.use.click(use, [panel.vectors, panel.alpha, panel.layer], [steer, panel.message], **private)

    def the_step(session: StudioSession, at: Any) -> tuple[Any, Any]:
        step = session.step_at(at)
        if step is None or session.episode is None:
            raise StudioError("Select a step of model A's episode (the slider under the trace).")
        return session.episode, step

    @refused_into(panel.message)
    def both(session: StudioSession, at: Any, steer_text: str) -> dict[Any, Any]:
        from studio.evaluation.steered_step import with_and_without
        from studio.internals.vectors import parse_steer
        from studio.policies import react_config

        episode, step = the_step(session, at)
        spec = parse_steer(steer_text)
        steering = spec.resolve(VectorLibrary()) if spec else recorded_steering(step.extra.get("steering"))
        if steering is None:
            raise StudioError("Set a Steering (or choose a vector and press Steer model A with it) to compare against.")
        plain, pushed = with_and_without(
            episode, step.index, model_a(session), steering, react_config(session.settings)
        )
        label = f"steered {steering.name}@{','.join(map(str, steering.layers))} α={steering.alpha:g}"
        sides = "".join(
            f'<div class="as-side" style="flex:1"><div class="as-side-title">{esc(title)}</div>{step_card(taken)}</div>'
            for title, taken in (("without steering", plain), (label, pushed))
        )
        view = f'<div class="as-both" style="display:flex;gap:12px">{sides}</div>'
        return {panel.both_view: view, panel.message: ""}

    panel.both.click(both, [state, selected, steer], [panel.message, panel.both_view], **private)

    @refused_into(panel.message)
    def lens(session: StudioSession, at: Any) -> dict[Any, Any]:
        from studio.internals.lens import step_lens

        episode, step = the_step(session, at)
        view = step_lens(model_a(session), episode, step, recorded_steering(step.extra.get("steering")))
        return {panel.lens_plot: lens_figure(view), panel.message: ""}

    panel.lens.click(lens, [state, selected], [panel.message, panel.lens_plot], **private)

    @refused_into(panel.message)
    def perception(session: StudioSession, at: Any, ablation: str) -> dict[Any, Any]:
        from studio.internals.perception import observation_dependence

        episode, step = the_step(session, at)
        result = observation_dependence(
            model_a(session), episode, step, ablation, steering=recorded_steering(step.extra.get("steering"))
        )
        return {panel.dependence_plot: dependence_figure(result), panel.message: ""}

    panel.perception.click(
        perception, [state, selected, panel.ablation], [panel.message, panel.dependence_plot], **private
    )

    @refused_into(panel.message)
    def probe(session: StudioSession, target: str, progress=gr.Progress()) -> dict[Any, Any]:
        from studio.internals.activations import ActivationCache
        from studio.internals.probes import probe as fit, probe_targets

        truth = probe_targets(stored_episodes(store, session), str(target))
        with jobs.run("probe", f"probes of {target}") as job:

            def tick(done: int, total: int) -> None:
                progress(done / total, desc=f"{done} of {total} steps read")
                job.progress(done, total, f"{done} of {total} steps read")

            result = fit(model_a(session), truth, str(target), cache=ActivationCache(), progress=tick)
        note = f"{target}: best layer {result.best_layer} ({result.metric} {max(result.scores):.3f}; shuffled labels {result.control[result.layers.index(result.best_layer)]:.3f}; chance {result.chance:.3f})."
        return {panel.probe_plot: probe_figure(result), panel.message: message_html(note, "info")}

    panel.probe.click(probe, [state, panel.target], [panel.message, panel.probe_plot], **private)
