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
    """Decorate a handler: ``shown(error, *args, **kwargs)`` is returned when it raises a StudioError."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)  # Gradio reads the signature (a gr.Request parameter gets the request)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except StudioError as error:
                return shown(error, *args, **kwargs)

        return guarded

    return decorate


#: A handler whose only output is a message line.
as_message = refusal(lambda error, *args, **kwargs: message_html(str(error)))
#: A named API endpoint ``(session, ...) -> (session, answer)``: a refusal is ``{"error": "..."}``.
as_api_error = refusal(lambda error, session, *args, **kwargs: (session, {"error": str(error)}))
