"""Every refusal of every handler reaches the user as its panel's message: what a handler's refusal
returns must be something Gradio takes for that handler's outputs (a positional list one value short
became Gradio's bare "Error" in Annotate → Step labels)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import gradio as gr

from agent_studio.components.layout import Services, build_app
from agent_studio.storage import open_store
from agent_studio.storage.desk import AnnotationDesk
from studio.errors import StudioError
from studio.models.registry import ModelRegistry
from studio.session import EpisodeSettings, StudioSession

MESSAGE = "refused for the test <b>bold</b>"


def _refusal_of(function: Any) -> Any:
    """The ``shown`` of a handler wrapped by :func:`components.errors.refusal` (through other wrappers)."""
    while function is not None:
        shown = getattr(function, "__refusal__", None)
        if shown is not None:
            return shown
        function = getattr(function, "__wrapped__", None)
    return None


def _arguments(handler: Any, session: StudioSession, desk: AnnotationDesk) -> list[Any]:
    """Arguments a handler could get: a real session and desk where it takes them, None elsewhere."""
    values = []
    for parameter in inspect.signature(handler).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = str(parameter.annotation)
        if "Progress" in annotation or isinstance(parameter.default, gr.Progress):
            continue
        if "StudioSession" in annotation:
            values.append(session)
        elif "AnnotationDesk" in annotation:
            values.append(desk)
        elif parameter.default is not inspect.Parameter.empty:
            values.append(parameter.default)
        else:
            values.append(None)
    return values


def _accepted(answer: Any, outputs: list[Any]) -> bool:
    """Whether Gradio takes ``answer`` for ``outputs`` (its rules: a dict keyed by some of the output
    components, or one value per output, or a single value for a single output)."""
    if isinstance(answer, dict) and answer and all(isinstance(key, gr.blocks.Block) for key in answer):
        return set(map(id, answer)) <= set(map(id, outputs))
    if len(outputs) == 1:
        return True
    return isinstance(answer, (list, tuple)) and len(answer) == len(outputs)


def _shows_the_message(answer: Any) -> bool:
    """The message is among the values: escaped where it is HTML (a string); as data in an API answer."""
    values = answer.values() if isinstance(answer, dict) else answer if isinstance(answer, (list, tuple)) else [answer]
    for value in values:
        if isinstance(value, str) and "refused for the test" in value:
            return "<b>bold" not in value
        if isinstance(value, dict) and value.get("error") == MESSAGE:
            return True
    return False


def test_every_refusal_of_every_handler_is_the_panels_message(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        app = build_app(Services(registry=ModelRegistry(), store=store))
        session = StudioSession(ModelRegistry(), settings=EpisodeSettings(policy="expert"))
        session.reset(EpisodeSettings(env="gridworld", seed=0, policy="expert"))
        desk = AnnotationDesk(store)
        functions = app.fns.values() if isinstance(app.fns, dict) else app.fns
        checked = []
        for block_fn in functions:
            shown = _refusal_of(block_fn.fn)
            if shown is None:
                continue
            answer = shown(StudioError(MESSAGE), *_arguments(block_fn.fn, session, desk))
            name = getattr(block_fn.fn, "__name__", "?")
            assert _accepted(answer, block_fn.outputs), (
                f"{name}: {answer!r} does not fit {len(block_fn.outputs)} outputs"
            )
            assert _shows_the_message(answer), f"{name}: the refusal's message is not shown (escaped)"
            checked.append(name)
        # Every panel's guarded handlers were reached: none of these may go unchecked.
        for expected in ("use_current", "draw", "estimate", "score", "judge_the_queue", "make_export", "report",
                         "load", "start", "load_model", "step"):  # fmt: skip
            assert expected in checked, (expected, sorted(set(checked)))
        assert len(checked) >= 25
