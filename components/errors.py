"""One way for a handler to refuse: a :class:`~studio.errors.StudioError` it raises becomes what its
panel (or the API) shows instead, one line, never a traceback.

    @refusal(lambda error, *args: message_html(str(error)))
    def queue_pairs(session): ...

Unexpected exceptions are left alone: Gradio logs them and the page gets no text of them
(the app runs with ``show_error=False``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from studio.errors import StudioError
from studio.viz.html import message_html


def refusal(shown: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a handler: ``shown(error, *args, **kwargs)`` is returned when it raises a StudioError.
    (The wrapped handler keeps ``shown`` as ``__refusal__``: a test calls every handler's refusal and
    checks that Gradio takes what it returns.)"""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)  # Gradio reads the signature (a gr.Request parameter gets the request)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except StudioError as error:
                return shown(error, *args, **kwargs)

        guarded.__refusal__ = shown  # type: ignore[attr-defined]
        return guarded

    return decorate


def refused_into(
    message: Any, extra: dict[Any, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A refusal shown as the panel's ``message`` component (and ``extra``'s components set to their
    values). It answers with a dict, so whatever else the handler outputs stays as it is, however many
    outputs it has: a refusal can never miscount them into Gradio's bare "Error"."""
    return refusal(lambda error, *args, **kwargs: {message: message_html(str(error)), **(extra or {})})


#: A handler whose only output is a message line.
as_message = refusal(lambda error, *args, **kwargs: message_html(str(error)))
#: A named API endpoint ``(session, ...) -> (session, answer)``: a refusal is ``{"error": "..."}``.
as_api_error = refusal(lambda error, session, *args, **kwargs: (session, {"error": str(error)}))
