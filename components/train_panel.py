"""The Train tab: a step-level Q-value model (a reward model) or the policy itself (DPO, KTO, SFT) trained on
the store's rows, as ``agent-studio train`` does; progress with ETA and Stop; the registered models, how each
is used and what it was trained on. A run is a job of the server's queue (the Jobs tab shows and cancels it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.services import Services
from studio.errors import StudioError
from studio.viz.html import esc, message_html

#: How often a running training's status is redrawn (seconds).
POLL_SECONDS = 0.5
SOURCE_CHOICES = ["human", "mc", "judge", "all"]


@dataclass
class TrainPanel:
    name: gr.Textbox
    kind: gr.Radio
    sources: gr.CheckboxGroup
    base: gr.Textbox
    lora: gr.Checkbox
    epochs: gr.Number
    learning_rate: gr.Number
    seed: gr.Number
    held_out: gr.Number
    max_steps: gr.Number
    start: gr.Button
    stop: gr.Button
    status: gr.HTML
    models: gr.HTML

    @property
    def settings(self) -> list[Any]:
        return [self.name, self.kind, self.sources, self.base, self.lora, self.epochs, self.learning_rate,
                self.seed, self.held_out, self.max_steps]  # fmt: skip


def build() -> TrainPanel:
    gr.Markdown(
        "Train on the store's judgements — exactly the rows **export** writes. A *reward* model is the step-level "
        "Q-value model: choose it as the verifier `model:NAME` with best-of-K in the Episode tab. *DPO*, *KTO* and "
        "*SFT* train the policy: load it as `BASE+lora:NAME` in the Models tab. Episodes are split by seed: the "
        "held-out share measures how often the model ranks a held-out pair's chosen side first."
    )
    with gr.Row():
        name = gr.Textbox(label="Name", placeholder="q-gridworld", elem_id="as-train-name", scale=2)
        kind = gr.Radio(
            ["reward", "dpo", "kto", "sft"], value="reward", label="Train", elem_id="as-train-kind", scale=2
        )
        sources = gr.CheckboxGroup(SOURCE_CHOICES, value=["all"], label="From", elem_id="as-train-sources", scale=2)
    with gr.Row():
        base = gr.Textbox(value="default", label="Base model", elem_id="as-train-base")
        lora = gr.Checkbox(value=True, label="LoRA (PEFT)", elem_id="as-train-lora")
        epochs = gr.Number(value=1, minimum=0.01, maximum=100, label="Epochs", elem_id="as-train-epochs")
        learning_rate = gr.Number(value=0, minimum=0, label="Learning rate (0: default)", elem_id="as-train-lr")
        seed = gr.Number(value=0, minimum=0, precision=0, label="Seed", elem_id="as-train-seed")
        held_out = gr.Number(value=0.2, minimum=0, maximum=0.9, label="Held-out share", elem_id="as-train-held")
        max_steps = gr.Number(
            value=0, minimum=0, precision=0, label="Steps at most (0: epochs)", elem_id="as-train-steps"
        )
    with gr.Row():
        start = gr.Button("Train", variant="primary", elem_id="as-train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="as-train-stop")
    status = gr.HTML(elem_id="as-train-status")
    models = gr.HTML(elem_id="as-trained")
    return TrainPanel(name, kind, sources, base, lora, epochs, learning_rate, seed, held_out, max_steps, start, stop,
                      status, models)  # fmt: skip


def models_html() -> str:
    """The registered trained models: name, kind, how to use it, what it was trained on (escaped)."""
    from studio.training.registry import TrainedModels

    rows = []
    for model in TrainedModels().all():
        row = model.describe()
        uses = "<br>".join(f"<code>{esc(use)}</code>" for use in row["use"])
        rows.append(
            f"<tr><td>{esc(row['name'])}</td><td>{esc(row['kind'])}</td><td>{uses}</td>"
            f"<td class='as-subtle'>{esc(model.trained_on())}</td></tr>"
        )
    if not rows:
        return '<div class="as-empty">No trained models yet.</div>'
    head = "".join(f"<th>{c}</th>" for c in ("name", "kind", "use", "trained on"))
    return f'<table class="as-results as-trained"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def spec_of(name: Any, kind: Any, sources: Any, base: Any, lora: Any, epochs: Any, rate: Any, seed: Any,
            held_out: Any, max_steps: Any) -> Any:  # fmt: skip
    """The form as a checked :class:`~studio.training.spec.TrainingSpec` (one line if it is not one)."""
    from studio.training.spec import TrainingSpec

    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise StudioError("Choose the judgements to train on.")
    return TrainingSpec(
        name=str(name or "").strip(), kind=str(kind), base=str(base or "").strip(), sources=tuple(sources),
        lora=bool(lora), epochs=epochs if epochs is not None else 1, learning_rate=rate or None,
        seed=seed if seed is not None else 0, held_out=held_out if held_out is not None else 0.2,
        max_steps=max_steps or 0,
    )  # fmt: skip


def _status(progress: Any, name: str) -> str:
    if progress is None:
        return message_html(f"Training {name}: reading the rows and loading the base model…", "info")
    return message_html(f"Training {name}: {progress.line()}", "info")


def wire(panel: TrainPanel, services: Services, tab: gr.Tab, verifier: gr.Dropdown) -> None:
    """Train in a thread within the server's job queue, redrawing the status until it ends; Stop ends it
    between optimizer steps (nothing registered)."""
    from agent_studio.storage.training import run_training

    private = dict(api_visibility="private")
    stops: dict[str, threading.Event] = {}  # by page: each page's Stop stops its own run

    def start(name: Any, kind: Any, sources: Any, base: Any, lora: Any, epochs: Any, rate: Any, seed: Any,
              held_out: Any, max_steps: Any, request: gr.Request) -> Iterator[dict[Any, Any]]:  # fmt: skip
        try:
            spec = spec_of(name, kind, sources, base, lora, epochs, rate, seed, held_out, max_steps)
            services.access.check(spec.base)  # a base typed in the browser follows the operator's rules
        except StudioError as error:
            yield {panel.status: message_html(str(error))}
            return
        stop = stops.setdefault(getattr(request, "session_hash", "") or "", threading.Event())
        stop.clear()
        seen: dict[str, Any] = {"progress": None, "outcome": None, "error": None}

        def work() -> None:
            try:
                with services.jobs.run(
                    "train", f"{spec.kind} {spec.name} from {', '.join(spec.sources)}", cancel=stop
                ) as job:

                    def tick(progress: Any) -> None:
                        seen["progress"] = progress
                        job.progress(progress.step, progress.total, progress.line())

                    seen["outcome"] = run_training(services.store, spec, progress=tick, should_stop=stop.is_set)
            except StudioError as error:
                seen["error"] = str(error)
            except Exception as error:  # noqa: BLE001 - a trainer's failure is shown in one line, not a stack
                seen["error"] = f"Training failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"

        thread = threading.Thread(target=work, name=f"train-{spec.name}", daemon=True)
        thread.start()
        while thread.is_alive():
            yield {panel.status: _status(seen["progress"], spec.name)}
            time.sleep(POLL_SECONDS)
        if seen["error"] is not None:
            yield {panel.status: message_html(seen["error"]), panel.models: models_html()}
            return
        from studio.settings import VERIFIERS

        record = seen["outcome"].record
        accuracy = record["held_out_accuracy"]
        shown = "no held-out rows" if accuracy is None else f"held-out pair accuracy {accuracy:.0%}"
        done = (
            f"Trained {spec.name}: {record['steps']} steps on {record['data']['train_rows']} rows, loss "
            f"{record['train_loss']:.4f}, {shown}; use {'; '.join(seen['outcome'].model.describe()['use'])}."
        )
        yield {
            panel.status: message_html(done, "success"),
            panel.models: models_html(),
            verifier: gr.Dropdown(choices=list(VERIFIERS)),
        }

    def stop_run(request: gr.Request) -> str:
        event = stops.get(getattr(request, "session_hash", "") or "")
        if event is None:
            return message_html("Nothing is training from this page.", "warning")
        event.set()
        return message_html("Stopping after the current step: nothing of this run will be registered.", "info")

    panel.start.click(start, panel.settings, [panel.status, panel.models, verifier], concurrency_limit=None, **private)
    panel.stop.click(stop_run, None, [panel.status], concurrency_limit=None, **private)
    tab.select(models_html, None, [panel.models], concurrency_limit=None, **private)
