"""Named API endpoints, callable with ``gradio_client`` (each client gets its own session).

from gradio_client import Client
client = Client("http://127.0.0.1:7860/")
client.predict("A", "default", "auto", "auto", api_name="/load_model")
client.predict("gridworld", "{}", 0, "react-a", api_name="/reset")
client.predict("", api_name="/step")          # "" lets the policy decide; text is a human action
client.predict(5, api_name="/run")            # 0 runs to the end
client.predict(api_name="/get_episode")       # the whole episode, in the trace format
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from agent_studio.components.errors import as_api_error
from studio.session import StudioSession
from studio.settings import settings_from
from studio.trace import HEAVY_STEP_FIELDS, Step
from studio.validation import MAX_ITEMS, whole_number

#: The named endpoints (``/load_model`` ...): the API page lists these and nothing else.
ENDPOINTS = ("load_model", "reset", "step", "run", "get_episode")


def step_json(step: Step) -> dict[str, Any]:
    """A step without its frame, snapshot and prompt (ask /get_episode for everything)."""
    data = step.to_dict()
    for key in HEAVY_STEP_FIELDS:
        data.pop(key, None)
    return data


def build(state: gr.State) -> None:
    """Hidden inputs and a JSON output; the endpoints share the session state of their client."""
    with gr.Group(visible=False):
        # Labelled: the API page (/?view=api) describes each parameter by its component's label.
        slot, model = gr.Textbox(label="slot: A or B"), gr.Textbox(label="model: default, a hub id, a folder, ...")
        device, dtype = gr.Textbox(label="device: auto, cpu, cuda, mps"), gr.Textbox(label="dtype: auto, float32, ...")
        env, options = gr.Textbox(label="environment, e.g. gridworld"), gr.Textbox(label="options as JSON")
        seed, policy = gr.Number(precision=0, label="seed"), gr.Textbox(label="policy: react-a, expert, ...")
        action = gr.Textbox(label="action: empty lets the policy decide")
        max_steps = gr.Number(precision=0, label="steps (0: to the end)")
        result = gr.JSON(label="result")

    @as_api_error
    def load_model(
        session: StudioSession, slot: str, model: str, device: str, dtype: str
    ) -> tuple[StudioSession, dict[str, Any]]:
        """Load a model into slot A or B; returns its model card."""
        return session, session.load_model(slot, model, device or "auto", dtype or "auto")

    @as_api_error
    def reset(
        session: StudioSession, env: str, options: str, seed: float, policy: str
    ) -> tuple[StudioSession, dict[str, Any]]:
        """Start an episode; returns its id, the observation and the valid actions."""
        given = {
            "env": env,
            "env_options": options,
            "seed": 0 if seed in (None, "") else seed,
            "policy": policy or session.settings.policy,
        }
        episode = session.reset(settings_from(given, base=session.settings))
        return session, {
            "episode_id": episode.id,
            "env": episode.env,
            "seed": episode.seed,
            "instruction": episode.instruction,
            "observation": session.current_observation(),
            "valid_actions": session.valid_actions(),
        }

    @as_api_error
    def step(session: StudioSession, action: str) -> tuple[StudioSession, dict[str, Any]]:
        """One step (an empty action lets the policy decide); returns the step and the episode summary."""
        taken = session.step(action or None)
        return session, {"step": step_json(taken), "episode": session.episode.summary()}

    @as_api_error
    def run(session: StudioSession, max_steps: float) -> tuple[StudioSession, dict[str, Any]]:
        """Run up to ``max_steps`` steps (0: to the end); returns the episode summary."""
        limit = whole_number(max_steps if max_steps not in (None, "") else 0, "max_steps", 0, MAX_ITEMS)
        for _ in session.run(limit or None):
            pass
        return session, session.episode.summary()

    def get_episode(session: StudioSession) -> tuple[StudioSession, dict[str, Any]]:
        """The whole current episode in the trace format (frames as base64 PNG)."""
        episode = session.episode
        return session, (episode.to_dict() if episode is not None else {"error": "No episode yet: reset first."})

    endpoints = {  # name -> (handler, its inputs after the session): ENDPOINTS in order
        "load_model": (load_model, [slot, model, device, dtype]),
        "reset": (reset, [env, options, seed, policy]),
        "step": (step, [action]),
        "run": (run, [max_steps]),
        "get_episode": (get_episode, []),
    }
    assert tuple(endpoints) == ENDPOINTS, "api.ENDPOINTS lists every endpoint, in order"
    with gr.Group(visible=False):
        for name, (fn, inputs) in endpoints.items():  # one hidden button per endpoint: none can go missing
            gr.Button().click(fn, [state, *inputs], [state, result], api_name=name, concurrency_limit=None)
