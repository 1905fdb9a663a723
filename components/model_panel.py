"""Models A and B side by side: load (default, a hub id or a local folder) with progress, card, unload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from agent_studio.components.errors import refusal
from studio.models.access import ModelAccess
from studio.models.base import DTYPE_NAMES
from studio.models.registry import describe_schemes
from studio.session import StudioSession
from studio.viz.html import message_html, model_card_html, schemes_html


@dataclass
class ModelSlot:
    slot: str
    name: gr.Textbox
    device: gr.Dropdown
    dtype: gr.Dropdown
    load: gr.Button
    unload: gr.Button
    card: gr.HTML
    message: gr.HTML


def access_note(access: ModelAccess) -> str:
    """What this studio lets the browser load, as the operator set it on the command line."""
    folders = ", ".join(f"`{d}`" for d in access.model_dirs)
    local = (
        f"local folders or `scripted:` files under {folders}"
        if folders
        else "no local folders (the operator can allow some with `serve --models-dir DIR`)"
    )
    code = (
        "**Remote code is allowed** (the operator started the studio with `--trust-remote-code`): a model repository's own Python runs when it loads."
        if access.trust_remote_code
        else "Remote code is off: model repositories' own Python never runs."
    )
    servers = (
        "models served by " + ", ".join(f"`{url}`" for url in access.servers)
        if access.servers
        else "no inference servers (the operator can allow one with `serve --allow-server URL`)"
    )
    return f"This studio loads `default`, Hugging Face ids, {local}, and {servers}. {code}"


def build(state: gr.State, access: ModelAccess) -> list[ModelSlot]:
    gr.Markdown(
        "Load a model into slot **A** or **B**: `default` (SmolLM2-135M-Instruct, offline), a Hugging Face id "
        "(e.g. `Qwen/Qwen2.5-0.5B-Instruct`, `HuggingFaceTB/SmolVLM-256M-Instruct`), a local folder, or "
        "`scripted:FILE.json` (replays given outputs), or a vLLM/SGLang server's URL (`http://HOST:PORT/v1`). Pick *ReAct with model A/B* in the Episode tab to use it."
    )
    gr.Markdown(access_note(access), elem_id="as-model-access")
    with gr.Accordion("Kinds of model names (registered backends)", open=False):
        gr.HTML(schemes_html(describe_schemes()), elem_id="as-model-schemes")
    slots = []
    with gr.Row(equal_height=False):
        for slot, value in (("A", "default"), ("B", "")):
            with gr.Column(variant="panel"):
                gr.Markdown(f"### Model {slot}")
                name = gr.Textbox(
                    value=value,
                    label="Model",
                    placeholder="default, a hub id or a local path",
                    elem_id=f"as-model-{slot.lower()}",
                )
                with gr.Row():
                    device = gr.Dropdown(
                        ["auto", "cpu", "cuda", "mps"], value="auto", label="Device", allow_custom_value=True
                    )
                    dtype = gr.Dropdown(list(DTYPE_NAMES), value="auto", label="Dtype")
                with gr.Row():
                    load = gr.Button(f"Load model {slot}", variant="primary", elem_id=f"as-load-{slot.lower()}")
                    unload = gr.Button("Unload", elem_id=f"as-unload-{slot.lower()}")
                message = gr.HTML(elem_id=f"as-model-message-{slot.lower()}")
                card = gr.HTML(elem_id=f"as-card-{slot.lower()}")
                slots.append(ModelSlot(slot, name, device, dtype, load, unload, card, message))
    return slots


def render(session: StudioSession, slot: ModelSlot) -> str:
    return model_card_html(session.model_info(slot.slot), slot.slot)


def wire(slots: list[ModelSlot], state: gr.State) -> list[Any]:
    """Connect load and unload; returns their events, so other panels can follow a model change (``.then``)."""
    changed: list[Any] = []
    for slot in slots:

        @refusal(
            lambda error, session, *values, slot=slot, **named: [
                session,
                message_html(str(error)),
                render(session, slot),
            ]
        )
        def load(
            session: StudioSession,
            name: str,
            device: str,
            dtype: str,
            progress: gr.Progress = gr.Progress(),
            slot: ModelSlot = slot,
        ) -> list[Any]:
            progress(0, desc="loading the model")
            info = session.load_model(slot.slot, name, device, dtype, progress=lambda f, m: progress(f, desc=m))
            return [
                session,
                message_html(
                    f"Loaded {info.get('id')} on {info.get('device')} in {info.get('load_seconds', 0):.1f} s.", "info"
                ),
                render(session, slot),
            ]

        def unload(session: StudioSession, slot: ModelSlot = slot) -> list[Any]:
            session.unload_model(slot.slot)
            return [session, message_html(f"Slot {slot.slot} is empty.", "info"), render(session, slot)]

        loaded = slot.load.click(
            load,
            [state, slot.name, slot.device, slot.dtype],
            [state, slot.message, slot.card],
            api_visibility="private",
            concurrency_limit=None,
        )
        emptied = slot.unload.click(
            unload, [state], [state, slot.message, slot.card], api_visibility="private", concurrency_limit=None
        )
        changed.extend((loaded, emptied))
    return changed
